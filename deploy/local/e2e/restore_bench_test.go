package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/stacktest"
)

// BenchmarkRestore restores a checkpoint of N kwok pods, each with one PVC/PV, into a
// new namespace while the original pods still run, with the podguard-local runner as its
// own process: real kube-apiserver (and its controllers and scheduler), real Swift, and
// the volume steps on instant in-process Cinder doubles. It reports the wall time from
// the request to the restore's success (every restored pod Running), events routed, and
// Swift and Kubernetes API requests per pod (the latter counted by the apiserver for
// every client: podguard, the controllers binding the claims, the scheduler and kwok).
func BenchmarkRestore(b *testing.B) {
	st := stacktest.Load(b)
	cs := st.Kube(b)
	bin := buildLocal(b)
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			ns := fmt.Sprintf("bench-protect-%d", n)
			stacktest.BulkPods(b, cs, ns, n)
			container := fmt.Sprintf("bench-restore-%d-%d", n, time.Now().UnixNano()%1e9)
			// Protect once; each restore then runs in a fresh process on the same bank.
			l := startLocal(b, st, bin, container)
			ev, cp := protectRequest(ns)
			l.send(b, ev)
			if _, s := l.wait(b, time.Now(), func() (string, error) { return l.reader.Status(context.Background(), cp) }, events.StatusAvailable, events.StatusError); s != events.StatusAvailable {
				b.Fatalf("checkpoint ended %s", s)
			}
			l.stop(b)
			for i := 0; i < b.N; i++ {
				target := fmt.Sprintf("bench-restored-%d-%d", n, i)
				removeNamespace(b, cs, target)
				l := startLocal(b, st, bin, container, "POD_WAIT=30s")
				rev := cloudevents.NewEvent()
				rev.SetID(uuid.NewString())
				rev.SetSource("bench")
				rev.SetType(events.RestoreRequested)
				rev.SetTime(time.Now().UTC())
				_ = rev.SetData(cloudevents.ApplicationJSON, events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}})
				rid := choreographer.RestoreID(rev)
				apiBefore := apiserverRequests(b, cs)
				l.swift.Store(0)
				start := time.Now()
				l.send(b, rev)
				wall, s := l.wait(b, start, func() (string, error) { return l.reader.Restores().Status(context.Background(), rid) }, events.RestoreSuccess, events.RestoreFail)
				api := apiserverRequests(b, cs) - apiBefore
				swift := l.swift.Load()
				peak, routed := l.stop(b)
				if s != events.RestoreSuccess {
					f, _ := l.reader.Restores().Failures(context.Background(), rid)
					b.Fatalf("restore ended %s: %d failures, first %+v", s, len(f), f[:min(1, len(f))])
				}
				if running := countRestoredRunning(b, cs, target, rid); running != n {
					b.Fatalf("%d restored pods Running, want %d", running, n)
				}
				unschedulable := failedScheduling(b, cs, target)
				b.ReportMetric(wall.Seconds(), "s/restore")
				b.ReportMetric(float64(unschedulable), "failed-scheduling")
				b.ReportMetric(float64(swift)/float64(n), "swift-req/pod")
				b.ReportMetric(float64(api)/float64(n), "kube-api-req/pod")
				b.ReportMetric(float64(routed), "events")
				b.ReportMetric(float64(peak)/(1<<20), "runner-peak-MiB")
				b.Logf("N=%d: all %d pods Running in %s after the request; %d events routed, %d Swift requests (%.1f per pod), %d Kubernetes API requests by every client (%.1f per pod), %d failed scheduling attempts, runner peak RSS %.0f MiB",
					n, n, wall.Round(10*time.Millisecond), routed, swift, float64(swift)/float64(n), api, float64(api)/float64(n), unschedulable, float64(peak)/(1<<20))
				removeNamespace(b, cs, target)
			}
		})
	}
}

// apiserverRequests is the apiserver's count of requests served, from every client.
func apiserverRequests(b *testing.B, cs kubernetes.Interface) int64 {
	b.Helper()
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			total += v
		}
	}
	return int64(total)
}

// failedScheduling counts the scheduler's FailedScheduling events in a namespace: pods it
// tried to place before their claims were bound.
func failedScheduling(b *testing.B, cs kubernetes.Interface, ns string) int {
	b.Helper()
	evs, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, ev := range evs.Items {
		n += int(max(ev.Count, 1))
	}
	return n
}

func countRestoredRunning(b *testing.B, cs kubernetes.Interface, ns, restore string) int {
	b.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restore})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			n++
		}
	}
	return n
}

// removeNamespace deletes a namespace, and the persistent volumes restored into it, and
// waits until the namespace is gone.
func removeNamespace(b *testing.B, cs kubernetes.Interface, ns string) {
	b.Helper()
	ctx := context.Background()
	pvs, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: kube.LabelRestore})
	if err != nil {
		b.Fatal(err)
	}
	for _, pv := range pvs.Items {
		if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns {
			_ = cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		}
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		return // not there
	}
	w, err := cs.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + ns})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	timeout := time.After(5 * time.Minute)
	for {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			return
		}
		select {
		case <-w.ResultChan():
		case <-timeout:
			b.Fatalf("namespace %s not deleted within 5 minutes", ns)
		}
	}
}
