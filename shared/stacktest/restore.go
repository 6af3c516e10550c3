package stacktest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ncw/swift/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/kube"
)

// TempBank opens a bank with the given auth in a Swift container of its own, which is
// emptied and deleted when the test ends.
func (s *Stack) TempBank(t testing.TB, auth string) (*bank.Bank, bank.Config) {
	t.Helper()
	cfg := s.Bank(auth, fmt.Sprintf("podguard-test-%d-%08x", time.Now().UnixNano()%1e9, rand.Uint32()))
	b, err := bank.Open(context.Background(), cfg, s.OpenStack())
	if err != nil {
		t.Fatalf("open bank %s: %v", cfg.Container, err)
	}
	t.Cleanup(func() {
		if err := removeContainer(context.Background(), cfg, s); err != nil {
			t.Logf("remove bank container %s: %v", cfg.Container, err)
		}
	})
	return b, cfg
}

func removeContainer(ctx context.Context, cfg bank.Config, s *Stack) error {
	conn, err := cfg.Connection(s.OpenStack())
	if err != nil {
		return err
	}
	names, err := conn.ObjectNamesAll(ctx, cfg.Container, nil)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := conn.ObjectDelete(ctx, cfg.Container, n); err != nil && !errors.Is(err, swift.ObjectNotFound) {
			return err
		}
	}
	return conn.ContainerDelete(ctx, cfg.Container)
}

// CinderPod creates, in namespace ns, a pod named name whose claims <name>-data-<i> are
// pre-bound to CSI Cinder persistent volumes of the given Cinder volume ids (removed when
// the test ends), and returns the claims' names. It does not wait: see WaitCinderPod.
//
// The claims name no volume: each volume names its claim, and the PV controller, which
// has seen the volume first, binds the pair at once. (A pair pre-bound from both sides
// is bound at once or at the controller's next periodic sync, 15 s later, depending on
// a race inside the controller.)
func CinderPod(t testing.TB, cs kubernetes.Interface, ns, name string, volumeIDs ...string) []string {
	t.Helper()
	ctx := context.Background()
	var claims []string
	for i, id := range volumeIDs {
		claim := fmt.Sprintf("%s-data-%d", name, i)
		pv := CinderPV(fmt.Sprintf("%s-%s-%d", ns, name, i), id, true, ns, claim)
		if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create persistent volume %s: %v", pv.Name, err)
		}
		t.Cleanup(func() {
			_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		})
		WaitVolumeSeen(t, cs, pv.Name, time.Minute)
		if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, Claim(ns, claim, ""), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create claim %s/%s: %v", ns, claim, err)
		}
		claims = append(claims, claim)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, Pod(ns, name, map[string]string{"app": name}, claims...), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return claims
}

// WaitCinderPod waits until a pod made by CinderPod is Running and its claims are Bound.
func WaitCinderPod(t testing.TB, cs kubernetes.Interface, ns, name string, claims []string) {
	t.Helper()
	WaitPod(t, cs, ns, name, time.Minute, Running)
	for _, c := range claims {
		WaitClaimBound(t, cs, ns, c, time.Minute)
	}
}

// SavedPodInfo is what a checkpoint saves of a live pod (as snapshot-metadata does): its
// definition, those of its claims and of their persistent volumes.
func SavedPodInfo(t testing.TB, cs kubernetes.Interface, ns, name string) checkpoint.PodInfo {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	info := checkpoint.PodInfo{Pod: kube.SavedPod(p)}
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get claim %s/%s: %v", ns, v.PersistentVolumeClaim.ClaimName, err)
		}
		info.Claims = append(info.Claims, kube.SavedClaim(c))
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get persistent volume %s: %v", c.Spec.VolumeName, err)
		}
		info.Volumes = append(info.Volumes, kube.SavedVolume(pv))
	}
	return info
}

// Restored counts the objects a restore created (labelled with its id).
type Restored struct {
	Namespaces, Volumes, Claims, Pods int
}

// CountRestored counts, in the whole cluster, the objects labelled with restore id.
func CountRestored(t testing.TB, cs kubernetes.Interface, restoreID string) Restored {
	t.Helper()
	ctx := context.Background()
	opts := metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restoreID}
	var n Restored
	nss, err := cs.CoreV1().Namespaces().List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	pvs, err := cs.CoreV1().PersistentVolumes().List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := cs.CoreV1().PersistentVolumeClaims("").List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	n.Namespaces, n.Volumes, n.Claims, n.Pods = len(nss.Items), len(pvs.Items), len(claims.Items), len(pods.Items)
	return n
}

// CleanupRestore deletes, when the test ends, what restore id created outside the test's
// namespaces: the namespaces it created and its persistent volumes (cluster-scoped).
func CleanupRestore(t testing.TB, cs kubernetes.Interface, restoreID string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		opts := metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restoreID}
		if nss, err := cs.CoreV1().Namespaces().List(ctx, opts); err == nil {
			for _, ns := range nss.Items {
				_ = cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
			}
		}
		if err := cs.CoreV1().PersistentVolumes().DeleteCollection(ctx, metav1.DeleteOptions{}, opts); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete persistent volumes of restore %s: %v", restoreID, err)
		}
	})
}

// SetPodFailed marks a pod Failed, as a kubelet would when its container ends in error.
func SetPodFailed(t testing.TB, cs kubernetes.Interface, ns, name, reason, message string, exitCode int32) {
	t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = corev1.PodFailed
		p.Status.Reason, p.Status.Message = reason, message
		now := metav1.Now()
		for i := range p.Status.ContainerStatuses {
			c := &p.Status.ContainerStatuses[i]
			c.Ready, c.Started = false, nil
			c.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitCode, Reason: "Error", StartedAt: now, FinishedAt: now, ContainerID: c.ContainerID}}
		}
		_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("mark pod %s/%s Failed: %v", ns, name, err)
	}
}

// WaitVolumeSeen watches a persistent volume until the PV controller has seen it (it is
// no longer Pending). A claim pre-bound to a volume the controller has not seen yet is
// bound only at the controller's next periodic sync, up to 15 s later.
func WaitVolumeSeen(t testing.TB, cs kubernetes.Interface, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	w, err := cs.CoreV1().PersistentVolumes().Watch(ctx, metav1.SingleObject(metav1.ObjectMeta{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if pv, ok := ev.Object.(*corev1.PersistentVolume); ok && pv.Status.Phase != corev1.VolumePending && pv.Status.Phase != "" {
			return
		}
	}
	t.Fatalf("persistent volume %s still Pending after %s", name, timeout)
}

// CreateAppObjects creates the ConfigMap, Secret and ServiceAccount of AppObjects in ns
// (which goes with its objects when the test ends).
func CreateAppObjects(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	cm, sec, sa := AppObjects(ns)
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// CreatePods creates pods and waits until each is Running.
func CreatePods(t testing.TB, cs kubernetes.Interface, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	for _, p := range pods {
		WaitPod(t, cs, p.Namespace, p.Name, time.Minute, Running)
	}
}
