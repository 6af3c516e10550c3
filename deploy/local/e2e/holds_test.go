package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestCheckpointSaysWhatItHolds: a Running pod whose claim is unbound is not in the
// checkpoint, which ends error with the problem as the reason, in checkpoint.finished and
// in the view; a namespace with no protectable pod ends error with "no protectable pods".
func TestCheckpointSaysWhatItHolds(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	ns := e.st.Namespace(t, e.kube, "holds")
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, stacktest.Claim(ns, "data", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Pods(ns).Create(ctx, stacktest.Pod(ns, "web", map[string]string{"app": "web"}, "data"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitPod(t, e.kube, ns, "web", time.Minute, stacktest.Running)
	empty := e.st.Namespace(t, e.kube, "holds-empty")

	protect := func(scope events.Scope) string {
		req := events.ProtectRequest{Plan: events.Plan{ID: "plan-holds", Scope: scope}}
		ev := newEvent(events.ProtectRequested, req)
		e.send(ev)
		return choreographer.CheckpointID(req, ev)
	}
	unbound := protect(events.Scope{Namespaces: []string{ns}})
	none := protect(events.Scope{Namespaces: []string{empty}})

	res := e.finished(unbound, 2*time.Minute)
	if res.Status != events.StatusError || len(res.Failed) == 0 || !strings.Contains(res.Failed[0].Reason, "data") {
		t.Fatalf("unbound claim: %+v, want error naming the claim", res)
	}
	t.Logf("unbound claim: %s", res.Failed[0].Reason)
	if v := e.show(unbound); v.Status != events.StatusError || len(v.Problems) == 0 {
		t.Fatalf("view of the unbound claim's checkpoint: %s, problems %+v", v.Status, v.Problems)
	}

	res = e.finished(none, 2*time.Minute)
	if res.Status != events.StatusError || len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Reason, "no protectable pods") {
		t.Fatalf("empty namespace: %+v, want error with no protectable pods", res)
	}
	if v := e.show(none); v.Status != events.StatusError {
		t.Fatalf("view of the empty namespace's checkpoint: %s", v.Status)
	}
}

// protectScope sends a protect request of a namespace and waits for its end.
func (e *env) protectScope(ns string) (string, events.CheckpointFinishedResult) {
	e.t.Helper()
	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	return id, e.finished(id, 2*time.Minute)
}

// pendingPod creates a pod that no node takes: it stays Pending, so it is not protectable.
func (e *env) pendingPod(ns, name string) {
	e.t.Helper()
	p := stacktest.Pod(ns, name, map[string]string{"app": name})
	p.Spec.NodeName = ""
	p.Spec.NodeSelector = map[string]string{"podguard.dev/no-such-node": "true"}
	if _, err := e.kube.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	stacktest.WaitPod(e.t, e.kube, ns, name, time.Minute, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodPending })
}

// excluded reports whether a pod is listed as excluded, in the phase given.
func excluded(xs []graph.Excluded, pod, phase string) bool {
	for _, x := range xs {
		if x.Pod == pod && x.Phase == phase {
			return true
		}
	}
	return false
}

// TestCheckpointListsExcludedPods: the pods of a scope that are not Running are listed as
// excluded, in checkpoint.finished and in the view. With a Running pod whose claim is
// unbound beside them, the checkpoint ends error with the problem as a failure named
// after the pod, and the view shows the pod in error with it; with none beside them, it
// ends error with "no protectable pods", naming the excluded pod.
func TestCheckpointListsExcludedPods(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	mixed := e.st.Namespace(t, e.kube, "excl")
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(mixed).Create(ctx, stacktest.Claim(mixed, "web-cache", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Pods(mixed).Create(ctx, stacktest.Pod(mixed, "web", map[string]string{"app": "web"}, "web-cache"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitPod(t, e.kube, mixed, "web", time.Minute, stacktest.Running)
	e.pendingPod(mixed, "batch")
	pending := e.st.Namespace(t, e.kube, "excl-only")
	e.pendingPod(pending, "batch")

	id, res := e.protectScope(mixed)
	pod := graph.PodName(mixed, "web")
	key := pod + "/web-cache"
	reasons := map[string]string{}
	for _, f := range res.Failed {
		reasons[f.Key] = f.Reason
		if f.Key == key && f.Name != pod {
			t.Errorf("failure %s is named %q", key, f.Name)
		}
	}
	if res.Status != events.StatusError || !strings.Contains(reasons[key], "claim web-cache") || !strings.Contains(reasons[key], "not bound") {
		t.Fatalf("finished %+v", res)
	}
	if !excluded(res.Excluded, graph.PodName(mixed, "batch"), "Pending") {
		t.Errorf("excluded %+v, want %s:batch (Pending)", res.Excluded, mixed)
	}
	v := e.show(id)
	if v.Status != events.StatusError || len(v.Problems) != 1 || !excluded(v.Excluded, graph.PodName(mixed, "batch"), "Pending") {
		t.Fatalf("view: %s, problems %+v, excluded %+v", v.Status, v.Problems, v.Excluded)
	}
	for _, r := range v.Resources {
		if r.Key() == graph.PodResource(mixed, "web").Key() && (r.Status != events.StatusError || !strings.Contains(r.Reason, "claim web-cache")) {
			t.Errorf("pod in the view: %s %q", r.Status, r.Reason)
		}
	}

	id, res = e.protectScope(pending)
	reason := "no protectable pods in namespace " + pending + ": 1 excluded as not protectable: " + pending + ":batch (Pending)"
	if res.Status != events.StatusError || res.Resources != 0 || len(res.Failed) != 1 || res.Failed[0].Key != "scope" ||
		res.Failed[0].Reason != reason || !excluded(res.Excluded, graph.PodName(pending, "batch"), "Pending") {
		t.Fatalf("only an excluded pod: finished %+v", res)
	}
	if v := e.show(id); v.Status != events.StatusError || len(v.Failed) != 1 || v.Failed[0].Reason != reason || len(v.Excluded) != 1 {
		t.Fatalf("only an excluded pod: view %s, failed %+v, excluded %+v", v.Status, v.Failed, v.Excluded)
	}
}
