package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
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
