package e2e

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// protectPlan sends a protect request of a plan covering a namespace and returns the
// checkpoint it makes.
func (e *env) protectPlan(ns, plan, mode string, retention *events.Retention) string {
	e.t.Helper()
	req := events.ProtectRequest{Plan: events.Plan{ID: plan, Scope: events.Scope{Namespaces: []string{ns}}, Retention: retention,
		Parameters: events.Parameters{Volume: events.VolumeParameters{BackupMode: mode, Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	e.send(ev)
	return choreographer.CheckpointID(req, ev)
}

// saveSchedule saves a schedule storing plan p, yearly (it does not run within a test),
// and waits until it is saved; the env observes schedule.saved.
func (e *env) saveSchedule(id string, p events.Plan) {
	e.t.Helper()
	n := e.count(events.ScheduleSaved)
	e.send(newEvent(events.ScheduleSet, events.Schedule{ID: id, Plan: p, Trigger: events.Trigger{Pattern: "FREQ=YEARLY"}}))
	var res events.ScheduleSavedResult
	if err := e.next(time.Minute, events.ScheduleSaved, n).DataAs(&res); err != nil || res.Schedule.ID != id {
		e.t.Fatalf("schedule %s saved: %+v %v", id, res.Schedule, err)
	}
}

// backupsByCheckpoint maps each checkpoint to the Cinder backup of a volume it holds
// (any status but deleted: a backup being deleted is still there).
func (e *env) backupsByCheckpoint(volumeID string) map[string]bool {
	e.t.Helper()
	all, err := e.backups.List(context.Background(), volumeID)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]bool{}
	for _, b := range all {
		out[b.Metadata[backupvolume.MetaCheckpoint]] = b.IsIncremental
	}
	return out
}

// TestRetention protects two plans, each stored by a schedule, four times each, in step,
// with real Cinder volumes (and refuses a policy without a plan id):
//   - plan "keep2" (full backups, max_backups 2): the third checkpoint makes the first go,
//     the fourth the second, through the delete flow (deleted, backups gone); the two
//     newest stay available;
//   - plan "chain" (max_backups 1, incremental: the first backup is made full, then two
//     incremental ones, then a full one): the chain is kept whole while its newest
//     checkpoint is the newest; once a full checkpoint comes, the three older ones are
//     deleted newest first, each after the one before it is deleted, and none ends
//     error-deleting.
func TestRetention(t *testing.T) {
	e := newEnv(t, envOptions{observe: []string{events.ScheduleSaved}})
	start := time.Now()
	nsA := e.st.Namespace(t, e.kube, "keep2")
	nsB := e.st.Namespace(t, e.kube, "chain")
	volA := e.cinderVolume(nsA+"-data", []byte("plan keep2"))
	volB := e.cinderVolume(nsB+"-data", []byte("plan chain"))
	e.podWithVolume(nsA, "app", volA, true)
	e.podWithVolume(nsB, "app", volB, true)
	planA, planB := "plan-"+nsA, "plan-"+nsB
	keep2, keep1 := &events.Retention{MaxBackups: 2}, &events.Retention{MaxBackups: 1}
	// The policy in force is the plan as stored: each plan is stored by a schedule.
	e.saveSchedule(planA, events.Plan{ID: planA, Scope: events.Scope{Namespaces: []string{nsA}}, Retention: keep2})
	e.saveSchedule(planB, events.Plan{ID: planB, Scope: events.Scope{Namespaces: []string{nsB}}, Retention: keep1})

	// A policy applies to the checkpoints of a plan: without a plan id, 400.
	bad := newEvent(events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{Namespaces: []string{nsA}}, Retention: keep2}})
	e.send(bad)
	if reason := e.rejected(bad); !strings.Contains(reason, "/plan/id") {
		t.Fatalf("protect with a policy and no plan id: %q", reason)
	}

	t.Logf("set up in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	// Each plan is protected again as soon as its checkpoint is available; the plans run
	// side by side.
	type run struct {
		ns, plan  string
		modes     []string
		retention *events.Retention
		cps       []string
	}
	runA := &run{ns: nsA, plan: planA, modes: []string{"full", "full", "full", "full"}, retention: keep2}
	runB := &run{ns: nsB, plan: planB, modes: []string{"incremental", "incremental", "incremental", "full"}, retention: keep1}
	running := map[string]*run{} // checkpoint being protected -> its plan
	protect := func(r *run) {
		id := e.protectPlan(r.ns, r.plan, r.modes[len(r.cps)], r.retention)
		r.cps = append(r.cps, id)
		running[id] = r
	}
	protect(runA)
	protect(runB)
	for len(running) > 0 {
		ev := e.await(2*time.Minute, "a checkpoint of either plan", func(ev event.Event) bool {
			id, _ := ev.Extensions()[events.ExtCheckpoint].(string)
			return ev.Type() == events.CheckpointFinished && running[id] != nil
		})
		var res events.CheckpointFinishedResult
		if err := ev.DataAs(&res); err != nil || res.Status != events.StatusAvailable {
			t.Fatalf("checkpoint finished: %+v %v", res, err)
		}
		r := running[res.Checkpoint]
		delete(running, res.Checkpoint)
		t.Logf("%s: checkpoint %d available %s after the first protect", r.plan, len(r.cps), time.Since(start).Round(100*time.Millisecond))
		if r == runB && len(r.cps) == 3 {
			// The chain is whole: a full backup, then two incremental ones.
			modes := e.backupsByCheckpoint(volB.ID)
			if incr, ok := modes[r.cps[0]]; !ok || incr || !modes[r.cps[1]] || !modes[r.cps[2]] {
				t.Fatalf("backups of the chain (checkpoint -> incremental): %v", modes)
			}
		}
		if len(r.cps) < len(r.modes) {
			protect(r)
		}
	}
	a, b := runA.cps, runB.cps
	t.Logf("8 checkpoints protected in %s", time.Since(start).Round(100*time.Millisecond))

	// keep2: the two oldest go, the two newest stay.
	for _, id := range a[:2] {
		if d := e.deleted(id, 2*time.Minute); d.Status != events.StatusDeleted || len(d.Failed) != 0 {
			t.Fatalf("deletion of %s: %+v", id, d)
		}
	}
	// chain: newest first, all deleted.
	for _, id := range []string{b[2], b[1], b[0]} {
		if d := e.deleted(id, 2*time.Minute); d.Status != events.StatusDeleted || len(d.Failed) != 0 {
			t.Fatalf("deletion of %s: %+v", id, d)
		}
	}
	t.Logf("retention deleted 5 checkpoints, %s after the first protect", time.Since(start).Round(100*time.Millisecond))

	ctx := context.Background()
	bk := e.readBank()
	for _, c := range []struct {
		plan string
		want []string
	}{{planA, []string{a[3], a[2]}}, {planB, []string{b[3]}}} {
		ids, _, err := bk.ListCheckpoints(ctx, c.plan, 10, "")
		if err != nil || !slices.Equal(ids, c.want) {
			t.Fatalf("checkpoints of %s: %v %v, want %v", c.plan, ids, err, c.want)
		}
		for _, id := range ids {
			if v := e.show(id); v.Status != events.StatusAvailable || v.Plan.Retention == nil {
				t.Errorf("%s: %s, plan %+v", id, v.Status, v.Plan)
			}
		}
	}
	for vol, want := range map[string][]string{volA.ID: {a[2], a[3]}, volB.ID: {b[3]}} {
		var got []string
		for id := range e.backupsByCheckpoint(vol) {
			got = append(got, id)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("backups of volume %s belong to %v, want %v", vol, got, want)
		}
	}

	// The chain went newest first: each deletion started once the newer one had ended,
	// and only after the full checkpoint made the chain expire.
	history := func(ops interface {
		History(context.Context, string) ([]bank.StatusChange, error)
	}, id string) (started, ended time.Time) {
		h, err := ops.History(ctx, id)
		if err != nil || len(h) == 0 {
			t.Fatalf("history of %s: %v %v", id, h, err)
		}
		return h[0].At, h[len(h)-1].At
	}
	// keep2: the first goes once the third is available, the second once the fourth is.
	for i, id := range a[:2] {
		_, available := history(bk, a[i+2])
		if started, _ := history(bk.Deletions(), id); started.Before(available) {
			t.Errorf("deletion of %s started before %s was available", id, a[i+2])
		}
	}
	_, newest := history(bk, b[3])
	last := newest
	for _, id := range []string{b[2], b[1], b[0]} {
		started, ended := history(bk.Deletions(), id)
		if started.Before(last) {
			t.Errorf("deletion of %s started at %s, before %s", id, started.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
		}
		last = ended
	}
	if n := e.count(events.CheckpointDeleted); n < 5 {
		t.Errorf("%d checkpoint.deleted events", n)
	}
	e.mu.Lock()
	deleted := slices.Clone(e.observed[events.CheckpointDeleted])
	e.mu.Unlock()
	for _, ev := range deleted {
		var d events.CheckpointDeletedResult
		if err := ev.DataAs(&d); err != nil || d.Status != events.StatusDeleted {
			t.Errorf("checkpoint.deleted %+v %v", d, err)
		}
	}
}

// TestRetentionWhileProtectsFail: a plan stored by a schedule with max_backups 2 is
// protected twice on the real Cinder, then Cinder is
// down for the functions (a proxy between them and Cinder drops every connection) for
// three occurrences, whose protects end in error at their deadline: the two newest
// available checkpoints stay, and forged protect.requested events with the plan's id and
// max_backups 1, or another scope, are refused and remove nothing. Once Cinder is back,
// the next available checkpoint makes only the older of the two go: the error
// checkpoints do not count.
func TestRetentionWhileProtectsFail(t *testing.T) {
	cinder, override := cinderProxy(t)
	e := newEnv(t, envOptions{observe: []string{events.ScheduleSaved},
		extra: map[string]string{"OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE": override, "PROTECT_TIMEOUT": "45s"}})
	ns := e.st.Namespace(t, e.kube, "retfail")
	e.podWithVolume(ns, "app", e.cinderVolume("retention-"+ns, []byte("retention "+ns)), true)
	plan := events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}}, Retention: &events.Retention{MaxBackups: 2},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}
	e.saveSchedule("nightly-"+ns, plan)
	request := func() string {
		t.Helper()
		req := events.ProtectRequest{Plan: plan}
		ev := newEvent(events.ProtectRequested, req)
		e.send(ev)
		return choreographer.CheckpointID(req, ev)
	}
	ended := func(id, want string) {
		t.Helper()
		if res := e.finished(id, 3*time.Minute); res.Status != want {
			t.Fatalf("checkpoint %s finished %+v, want %s", id, res, want)
		}
	}
	protect := func(want string) string {
		t.Helper()
		id := request()
		ended(id, want)
		return id
	}
	var good []string
	start := time.Now()
	for range 2 {
		good = append(good, protect(events.StatusAvailable))
	}
	t.Logf("two protects on the real Cinder: %s", time.Since(start).Round(100*time.Millisecond))

	// Cinder is down for three occurrences (sent at once: each fails at its deadline).
	cinder.Down()
	var failed []string
	for range 3 {
		failed = append(failed, request())
	}
	start = time.Now()
	for _, id := range failed {
		ended(id, events.StatusError)
	}
	t.Logf("three protects with Cinder down: error at their deadline in %s", time.Since(start).Round(100*time.Millisecond))
	for _, id := range failed {
		v := e.show(id)
		i := slices.IndexFunc(v.Resources, func(r checkpoint.ResourceView) bool { return r.Type == graph.VolumeType })
		if i < 0 || v.Resources[i].Status != events.StatusError || !strings.Contains(v.Resources[i].Reason, "deadline") {
			t.Fatalf("checkpoint %s: resources %+v, want its volume failed at the deadline", id, v.Resources)
		}
	}
	ctx := context.Background()
	bk := e.readBank()
	list := func() []string {
		t.Helper()
		ids, _, err := bk.ListCheckpoints(ctx, plan.ID, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	want := []string{failed[2], failed[1], failed[0], good[1], good[0]}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("checkpoints of the plan %v, want %v", got, want)
	}

	forged := plan
	forged.Retention = &events.Retention{MaxBackups: 1}
	ev := newEvent(events.ProtectRequested, events.ProtectRequest{Plan: forged})
	e.send(ev)
	if reason := e.rejected(ev); !strings.Contains(reason, "/plan/retention") || !strings.Contains(reason, "max_backups: 2") {
		t.Fatalf("forged retention: %q", reason)
	}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after the forged request: checkpoints %v, want %v", got, want)
	}
	other := e.st.Namespace(t, e.kube, "retfail-other")
	e.podWithVolume(other, "app", &volumes.Volume{ID: "retention-" + other}, true)
	forged = plan
	forged.Scope = events.Scope{Namespaces: []string{other}}
	ev = newEvent(events.ProtectRequested, events.ProtectRequest{Plan: forged})
	e.send(ev)
	if reason := e.rejected(ev); !strings.Contains(reason, "/plan/scope") || !strings.Contains(reason, ns) {
		t.Fatalf("forged scope: %q", reason)
	}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after the forged scope: checkpoints %v, want %v", got, want)
	}
	for _, id := range good {
		if v := e.show(id); v.Status != events.StatusAvailable {
			t.Fatalf("%s is %s", id, v.Status)
		}
	}

	cinder.Up()
	newest := protect(events.StatusAvailable)
	if d := e.deleted(good[0], 2*time.Minute); d.Status != events.StatusDeleted {
		t.Fatalf("deletion of %s: %+v", good[0], d)
	}
	if got, want := list(), []string{newest, failed[2], failed[1], failed[0], good[1]}; !slices.Equal(got, want) {
		t.Fatalf("checkpoints of the plan %v, want %v", got, want)
	}
}

// cinderProxy starts a proxy in front of the stack's Cinder and returns it with the
// block-storage endpoint that goes through it (OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE).
func cinderProxy(t *testing.T) (*stacktest.Proxy, string) {
	t.Helper()
	st := stacktest.Load(t)
	sc, err := st.OpenStack().BlockStorage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(sc.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := stacktest.NewProxy(t, u.Host)
	u.Host = p.Addr
	return p, u.String()
}
