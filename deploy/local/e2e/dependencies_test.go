package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/stacktest"
)

// podRef is an object a pod references, as its spec says.
type podRef struct {
	kind, name string
	optional   bool
}

// referencedBy reads from a pod's spec every ConfigMap, Secret and ServiceAccount it
// references (what the API server injects into every pod left out).
func referencedBy(p *corev1.Pod) []podRef {
	var out []podRef
	opt := func(b *bool) bool { return b != nil && *b }
	for _, v := range p.Spec.Volumes {
		switch {
		case strings.HasPrefix(v.Name, "kube-api-access-"):
		case v.ConfigMap != nil:
			out = append(out, podRef{"ConfigMap", v.ConfigMap.Name, opt(v.ConfigMap.Optional)})
		case v.Secret != nil:
			out = append(out, podRef{"Secret", v.Secret.SecretName, opt(v.Secret.Optional)})
		}
	}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		for _, env := range c.Env {
			if f := env.ValueFrom; f != nil && f.ConfigMapKeyRef != nil {
				out = append(out, podRef{"ConfigMap", f.ConfigMapKeyRef.Name, opt(f.ConfigMapKeyRef.Optional)})
			} else if f != nil && f.SecretKeyRef != nil {
				out = append(out, podRef{"Secret", f.SecretKeyRef.Name, opt(f.SecretKeyRef.Optional)})
			}
		}
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef != nil {
				out = append(out, podRef{"ConfigMap", from.ConfigMapRef.Name, opt(from.ConfigMapRef.Optional)})
			}
			if from.SecretRef != nil {
				out = append(out, podRef{"Secret", from.SecretRef.Name, opt(from.SecretRef.Optional)})
			}
		}
	}
	for _, s := range p.Spec.ImagePullSecrets {
		out = append(out, podRef{"Secret", s.Name, false})
	}
	out = append(out, podRef{"ServiceAccount", p.Spec.ServiceAccountName, false})
	return out
}

// content reads an object's content from the API server; found is false when there is
// none of that name.
func (e *env) content(ns string, r podRef) (content string, found bool) {
	e.t.Helper()
	ctx := context.Background()
	var v any
	var err error
	switch r.kind {
	case "ConfigMap":
		var c *corev1.ConfigMap
		if c, err = e.kube.CoreV1().ConfigMaps(ns).Get(ctx, r.name, metav1.GetOptions{}); err == nil {
			v = map[string]any{"data": c.Data, "binary": c.BinaryData}
		}
	case "Secret":
		var s *corev1.Secret
		if s, err = e.kube.CoreV1().Secrets(ns).Get(ctx, r.name, metav1.GetOptions{}); err == nil {
			v = map[string]any{"type": s.Type, "data": s.Data}
		}
	case "ServiceAccount":
		var sa *corev1.ServiceAccount
		if sa, err = e.kube.CoreV1().ServiceAccounts(ns).Get(ctx, r.name, metav1.GetOptions{}); err == nil {
			v = map[string]any{"pull": sa.ImagePullSecrets, "automount": sa.AutomountServiceAccountToken}
		}
	}
	if apierrors.IsNotFound(err) {
		return "", false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return string(b), true
}

// TestRestoreBringsWhatPodsReference: two pods share a ConfigMap (a volume of one, the
// envFrom of the other) and a Secret (an env secretKeyRef, and imagePullSecrets), both run
// as their own ServiceAccount app-sa, one has a Cinder volume and an optional reference to
// a ConfigMap that does not exist. Every event is delivered twice. The checkpoint holds
// each object once; restored into a new namespace, every object the restored pods
// reference (read from their specs on the API server) is there with the original's
// content, and the restore succeeds.
func TestRestoreBringsWhatPodsReference(t *testing.T) {
	e := newEnv(t, envOptions{wrap: twice})
	ns := e.st.Namespace(t, e.kube, "refs")
	ctx := context.Background()
	stacktest.CreateAppObjects(t, e.kube, ns)
	web, worker := stacktest.AppPods(ns)
	data := []byte("podguard data of " + ns + "/web")
	vol := e.cinderVolume(ns+"-web", data)
	pv := stacktest.CinderPV(ns+"-web-data", vol.ID, true, ns, "web-data")
	if _, err := e.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, stacktest.Claim(ns, "web-data", pv.Name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web.Spec.Volumes = append(web.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "web-data"}}})
	web.Spec.Containers[0].VolumeMounts = append(web.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/data"})
	stacktest.CreatePods(t, e.kube, web, worker)
	stacktest.WaitClaimBound(t, e.kube, ns, "web-data", time.Minute)

	cp, _ := e.protect(ns)
	// The Secrets' values are nowhere in the bank, in clear or in base64.
	secrets, err := e.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, sec := range secrets.Items {
		for _, v := range sec.Data {
			values = append(values, string(v))
		}
	}
	if len(values) == 0 {
		t.Fatalf("no Secret values in %s", ns)
	}
	t.Logf("%d objects of the bank read, none holds any of %d Secret values", e.assertNotInBank(values...), len(values))
	byType := map[string][]string{}
	for _, r := range e.show(cp).Resources {
		byType[r.Type] = append(byType[r.Type], r.Name)
		if r.Status != events.StatusAvailable {
			t.Errorf("%s %s: %s %s", r.Type, r.Name, r.Status, r.Reason)
		}
	}
	for typ, n := range map[string]int{graph.PodType: 2, graph.VolumeType: 1, graph.ConfigMapType: 1, graph.SecretType: 1, graph.ServiceAccountType: 1} {
		if len(byType[typ]) != n {
			t.Errorf("checkpoint holds %v of %s, want %d", byType[typ], typ, n)
		}
	}

	target := ns + "-dr" // created by the restore
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 5*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore finished %+v", res)
	}
	pods := e.restoredPods(target, rid)
	if len(pods) != 2 {
		t.Fatalf("restored pods %v", slices.Collect(maps.Keys(pods)))
	}
	checked := 0
	for name, p := range pods {
		// The pod as the API server has it, not as the test made it.
		got, err := e.kube.CoreV1().Pods(target).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range referencedBy(got) {
			want, inOriginal := e.content(ns, ref)
			have, inTarget := e.content(target, ref)
			switch {
			case !inOriginal && ref.optional:
				if inTarget {
					t.Errorf("pod %s: optional %s %s, missing from the original namespace, appeared in %s", name, ref.kind, ref.name, target)
				}
			case !inOriginal:
				t.Errorf("pod %s references %s %s, which the original namespace lacks", name, ref.kind, ref.name)
			case !inTarget:
				t.Errorf("pod %s references %s %s, which %s lacks", name, ref.kind, ref.name, target)
			case have != want:
				t.Errorf("pod %s: %s %s in %s holds %s, the original %s", name, ref.kind, ref.name, target, have, want)
			default:
				checked++
			}
		}
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("%s is %s", name, p.Status.Phase)
		}
	}
	if checked != 6 { // web: ConfigMap, Secret, ServiceAccount; worker: the same three
		t.Errorf("%d references checked, want 6", checked)
	}
	v := e.showRestore(rid)
	for _, r := range v.Resources {
		if !graph.IsDependency(r.Type) {
			continue
		}
		var o checkpoint.RestoredObject
		if err := json.Unmarshal(r.Restored, &o); err != nil || r.Status != events.StatusAvailable || o.Namespace != target ||
			o.Outcome != checkpoint.ObjectCreated || o.Original != strings.Replace(r.Name, ":", "/", 1) {
			t.Errorf("%s %s: %s %s %s", r.Type, r.Name, r.Status, r.Reason, r.Restored)
		}
	}
	if c := v.Progress.Resources[graph.SecretType]; c.Total != 1 || c.Done != 1 {
		t.Errorf("restore progress of Secrets: %+v", c)
	}
}

// TestProtectOfAPodMissingItsSecretEndsInError: a pod reading env from a Secret that does
// not exist is not all in the checkpoint: it ends error, the reason naming the Secret.
func TestProtectOfAPodMissingItsSecretEndsInError(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "nosecret")
	broken := stacktest.Pod(ns, "broken", map[string]string{"app": "broken"})
	broken.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "db-creds"}, Key: "password"}}}}
	stacktest.CreatePods(t, e.kube, broken, stacktest.Pod(ns, "fine", map[string]string{"app": "fine"}))

	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	res := e.finished(id, 4*time.Minute)
	if res.Status != events.StatusError || res.Resources != 2 || len(res.Failed) != 1 {
		t.Fatalf("finished %+v", res)
	}
	f := res.Failed[0]
	if f.Key != ns+":broken/Secret/db-creds" || f.Reason != "Secret db-creds of pod "+ns+":broken is not in the checkpoint: not found; referenced by env DB_PASSWORD of container app" {
		t.Fatalf("failure %+v", f)
	}
	for _, r := range e.show(id).Resources {
		want := events.StatusAvailable
		if r.Name == ns+":broken" {
			want = events.StatusError
		}
		if r.Status != want || (want == events.StatusError && !strings.Contains(r.Reason, "Secret db-creds")) {
			t.Errorf("%s: %s %q, want %s", r.Name, r.Status, r.Reason, want)
		}
	}
}
