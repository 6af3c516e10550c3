package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/podguard/podguard/deploy/local/prometheus"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestPrometheusSeesOperations scrapes every function of a runner with a real
// Prometheus (with podguard's alert rules loaded) while a pod is protected (asked of
// the front door, which also refuses a request without a token), restored, and an
// empty namespace's protect fails; PromQL then says so.
func TestPrometheusSeesOperations(t *testing.T) {
	if _, err := os.Stat(prometheus.DefaultBinary); err != nil {
		if os.Getenv("PODGUARD_REQUIRE_STACK") == "1" {
			t.Fatalf("no Prometheus (the local stack installs it): %v", err)
		}
		t.Skipf("no Prometheus: %v", err)
	}
	e := newEnv(t, envOptions{})
	ready, cancelReady := context.WithTimeout(context.Background(), time.Minute)
	defer cancelReady()
	srv, err := prometheus.Start(ready, prometheus.Config{Targets: e.runner.Metrics,
		RuleFiles: []string{filepath.Join(stacktest.RepoRoot(t), "deploy", "monitoring", "podguard.rules.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	ns := e.st.Namespace(t, e.kube, "metrics")
	e.podWithVolume(ns, "web", e.cinderVolume(ns+"-web", []byte("measured data")), true)
	plan := "plan-" + ns
	req := events.ProtectRequest{Plan: events.Plan{ID: plan, Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	cp := choreographer.CheckpointID(req, ev)
	start := time.Now()
	if code, _, res := e.ask(ev, ""); code != http.StatusAccepted { // through the front door
		t.Fatalf("protect: %s", res)
	}
	if code, _, res := e.ask(newEvent(events.ProtectRequested, req), "-"); code != http.StatusUnauthorized {
		t.Fatalf("a protect without a token: %s", res)
	}
	if res := e.finished(cp, 4*time.Minute); res.Status != events.StatusAvailable {
		t.Fatalf("protect: %+v", res)
	}
	target := e.st.Namespace(t, e.kube, "metrics-restored")
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 4*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore: %+v", res)
	}
	empty := e.st.Namespace(t, e.kube, "metrics-empty")
	failing := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + empty, Scope: events.Scope{Namespaces: []string{empty}}}}
	fev := newEvent(events.ProtectRequested, failing)
	if res := e.finished(func() string { e.send(fev); return choreographer.CheckpointID(failing, fev) }(), 2*time.Minute); res.Status != events.StatusError {
		t.Fatalf("protect of an empty namespace: %+v", res)
	}

	// The queries wait for the next scrapes, not for the operations, which have ended.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	one := func(want float64) func([]prometheus.Sample) bool {
		return func(s []prometheus.Sample) bool { return len(s) == 1 && s[0].Value == want }
	}
	for _, q := range []struct {
		promql string
		holds  func([]prometheus.Sample) bool
	}{
		{`sum(podguard_operations_started_total{kind="protect"})`, one(2)},
		{`sum(podguard_operations_finished_total{kind="protect",status="available"})`, one(1)},
		{`sum(podguard_operations_finished_total{kind="protect",status="error"})`, one(1)},
		{`sum(podguard_operations_finished_total{kind="restore",status="success"})`, one(1)},
		{`sum(podguard_resources_total{kind="protect",resource_type="OS::Kubernetes::Pod",status="available"})`, one(1)},
		{`sum(podguard_resources_total{kind="restore",resource_type="OS::Cinder::Volume",status="available"})`, one(1)},
		{`sum(podguard_volumes_moved_bytes_total{operation="backup"})`, one(1 << 30)},
		{`sum(podguard_cinder_duration_seconds_count{operation="restore",status="available"})`, one(1)},
		{`sum(podguard_events_handled_total{function="choreographer",event_type="dev.podguard.protect.requested",outcome="2xx"})`, one(2)},
		{`sum(podguard_events_handled_total{function="front-door",event_type="dev.podguard.protect.requested",outcome="2xx"})`, one(1)},
		{`sum(podguard_events_handled_total{function="front-door",outcome="4xx"})`, one(1)}, // refused before it was read
		{`podguard_plan_last_available_timestamp_seconds{plan="` + plan + `"}`, func(s []prometheus.Sample) bool {
			return len(s) == 1 && s[0].Value >= float64(start.Add(-time.Minute).Unix()) && s[0].Value <= float64(time.Now().Unix())
		}},
		{`podguard_plan_last_failed_timestamp_seconds{plan="plan-` + empty + `"}`, func(s []prometheus.Sample) bool { return len(s) == 1 && s[0].Value > 0 }},
		{`sum(podguard_operations_in_flight)`, one(0)},
	} {
		got, err := srv.WaitFor(ctx, q.promql, q.holds)
		if err != nil {
			t.Errorf("%s: %v (last: %s)", q.promql, err, prometheus.Format(got))
			continue
		}
		t.Logf("%s = %s", q.promql, prometheus.Format(got))
	}
}
