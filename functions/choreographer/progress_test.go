package choreographer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/graph"
)

// finishedOf is a progress with n finished resources of each type.
func finishedOf(pods, volumes int) events.Progress {
	return events.Progress{Resources: map[string]events.Count{
		graph.PodType: {Done: pods, Total: 10}, graph.VolumeType: {Done: volumes, Total: 10}}}
}

func TestProgressGate(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	g := newProgressGate(5*time.Second, 3)
	p := func(pods, volumes int) *events.Progress { x := finishedOf(pods, volumes); return &x }

	steps := []struct {
		what string
		do   func() bool
		want bool
	}{
		{"the first result of an operation announces at once", func() bool { return g.take("a", at(0)) }, true},
		{"one announcement at a time", func() bool { return g.take("a", at(0)) }, false},
		{"anything finished is news the first time", func() bool { return g.advances("a", finishedOf(1, 0)) }, true},
		{"released, announced at 0", func() bool { g.release("a", p(1, 0), at(0)); return true }, true},
		{"4.9s later: too soon", func() bool { return g.take("a", at(4900*time.Millisecond)) }, false},
		{"another operation has its own interval", func() bool { return g.take("b", at(time.Second)) }, true},
		{"b released without announcing", func() bool { g.release("b", nil, at(time.Second)); return true }, true},
		{"b not announced: it may try again at once", func() bool { return g.take("b", at(time.Second)) }, true},
		{"b released", func() bool { g.release("b", nil, at(time.Second)); return true }, true},
		{"5s later: a may announce", func() bool { return g.take("a", at(5*time.Second)) }, true},
		{"the same progress is no news", func() bool { return g.advances("a", finishedOf(1, 0)) }, false},
		{"less finished of one type is refused, whatever the rest", func() bool { return g.advances("a", finishedOf(0, 5)) }, false},
		{"more finished is news", func() bool { return g.advances("a", finishedOf(1, 1)) }, true},
		{"released, announced at 5s", func() bool { g.release("a", p(1, 1), at(5*time.Second)); return true }, true},
		{"a late read that saw less is still refused 10s on", func() bool {
			ok := g.take("a", at(10*time.Second))
			defer g.release("a", nil, at(10*time.Second))
			return ok && !g.advances("a", finishedOf(1, 0))
		}, true},
		{"a ended: forgotten", func() bool { g.forget("a"); return g.remembered() == 1 }, true},
		{"a progress read before the end is not sent after it", func() bool { return g.advances("a", finishedOf(9, 9)) }, false},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: %v, want %v", s.what, got, s.want)
		}
	}
}

// The gate remembers at most its size: the operation announced longest ago is dropped
// for a new one, never one whose announcement is in flight.
func TestProgressGateIsBounded(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := newProgressGate(5*time.Second, 2)
	for i, op := range []string{"a", "b"} {
		if !g.take(op, t0) {
			t.Fatalf("take %s", op)
		}
		p := finishedOf(1, 0)
		g.release(op, &p, t0.Add(time.Duration(i)*time.Second))
	}
	if !g.take("c", t0.Add(2*time.Second)) || g.remembered() != 2 {
		t.Fatalf("a new operation in a full gate: %d remembered", g.remembered())
	}
	if _, kept := g.ops["a"]; kept {
		t.Fatal("a, announced longest ago, was kept")
	}
	if !g.take("b", t0.Add(6*time.Second)) {
		t.Fatal("b was dropped instead of a")
	}
	// b and c are in flight: a new operation waits for room rather than drop them.
	if g.take("d", t0.Add(7*time.Second)) || g.remembered() != 2 {
		t.Fatalf("d taken in a gate full of announcements in flight (%d remembered)", g.remembered())
	}
}

// sizedGraph is n pods, each with one 1 GiB volume.
func sizedGraph(n int) (*graph.Graph, []graph.Resource, []graph.Resource) {
	g := &graph.Graph{}
	var pods, vols []graph.Resource
	for i := range n {
		p := graph.PodResource("shop", fmt.Sprintf("web-%d", i))
		v := graph.Resource{Type: graph.VolumeType, ID: fmt.Sprintf("vol-%d", i), Name: fmt.Sprintf("shop/web-%d-data", i),
			ExtraInfo: map[string]string{graph.InfoSizeBytes: fmt.Sprint(1 << 30)}}
		g.Nodes = append(g.Nodes, graph.Node{Resource: p, Children: []string{v.Key()}}, graph.Node{Resource: v})
		pods, vols = append(pods, p), append(vols, v)
	}
	return g, pods, vols
}

// progressWorld is a world whose batches hold one resource each, announcing progress at
// most every 5s.
func progressWorld(t *testing.T) *world {
	w := newWorld(t)
	w.cfg.BatchSize = 1
	w.cfg.ProgressInterval = 5 * time.Second
	w.step = NewStep(w.bank, w.bank.Restores(), w.bank.Deletions(), w.out, w.cfg, w.now)
	return w
}

// progressed returns the progress events among es (at most one), checked against the
// schema of their type.
func progressed(t *testing.T, es []event.Event, typ string) []event.Event {
	t.Helper()
	var out []event.Event
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Type() != typ {
			continue
		}
		if err := v.Validate(e); err != nil {
			t.Fatalf("%s does not match its schema: %v\n%s", typ, err, e.Data())
		}
		out = append(out, e)
	}
	if len(out) > 1 {
		t.Fatalf("%d %s events at once", len(out), typ)
	}
	return out
}

// Results announce the checkpoint's progress: the first at once, then at most every
// interval, counted from the bank; duplicates and late results announce nothing, and
// nothing announced goes back.
func TestResultsAnnounceCheckpointProgress(t *testing.T) {
	w := progressWorld(t)
	g, pods, vols := sizedGraph(3)
	id := w.protect()
	w.listed(id, g)
	var last events.Progress
	var ids []string
	expect := func(what string, sent []event.Event, pods, podsFailed, volumes, volumesFailed int) {
		t.Helper()
		got := progressed(t, sent, events.CheckpointProgressed)
		if pods < 0 {
			if len(got) != 0 {
				t.Fatalf("%s: announced %s", what, got[0].Data())
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("%s: no progress announced among %v", what, types(sent))
		}
		res := decode[events.CheckpointProgressedResult](t, got[0])
		p := res.Progress
		want := map[string]events.Count{graph.PodType: {Done: pods, Failed: podsFailed, Total: 3}, graph.VolumeType: {Done: volumes, Failed: volumesFailed, Total: 3}}
		for typ, c := range want {
			if p.Resources[typ] != c {
				t.Fatalf("%s: %s %+v, want %+v", what, typ, p.Resources[typ], c)
			}
		}
		if p.Bytes.Done != int64(volumes)<<30 || p.Bytes.Failed != int64(volumesFailed)<<30 || p.Bytes.Total != 3<<30 {
			t.Fatalf("%s: bytes %+v", what, p.Bytes)
		}
		if res.Checkpoint != id || res.Plan != "plan" || got[0].Extensions()[events.ExtCheckpoint] != id || p.Finished() <= last.Finished() {
			t.Fatalf("%s: %+v after %+v", what, res, last)
		}
		last = p
		ids = append(ids, got[0].ID())
	}
	expect("first result", w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pods[0].Key()), 1, 0, 0, 0)
	expect("a result 1ms later", w.result(events.MetadataSnapshotted, id, "pods-0001", events.StatusAvailable, pods[1].Key()), -1, 0, 0, 0)
	w.advance(5 * time.Second)
	expect("a duplicate, 5s later", w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pods[0].Key()), -1, 0, 0, 0)
	expect("a failed backup, out of order", w.result(events.VolumeBackedUp, id, "volumes-0002", events.StatusError, vols[2].Key()), 2, 0, 0, 1)
	if last.RemainingSeconds == nil || last.EstimateBasis != events.EstimateByBytes {
		t.Errorf("a third of the bytes finished in 5s: remaining %v by %q, want an estimate by bytes", last.RemainingSeconds, last.EstimateBasis)
	}
	w.advance(5 * time.Second)
	expect("the failed backup's result again", w.result(events.VolumeBackedUp, id, "volumes-0002", events.StatusError, vols[2].Key()), -1, 0, 0, 0)
	expect("the next result", w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vols[0].Key()), 2, 0, 1, 1)
	w.advance(5 * time.Second)
	w.result(events.MetadataSnapshotted, id, "pods-0002", events.StatusAvailable, pods[2].Key())
	if w.step.gate.remembered() != 1 {
		t.Fatalf("the gate remembers %d operations during the protect, want 1", w.step.gate.remembered())
	}
	sent := w.result(events.VolumeBackedUp, id, "volumes-0001", events.StatusAvailable, vols[1].Key())
	finished(t, sent)
	if w.step.gate.remembered() != 0 {
		t.Fatalf("the gate remembers %d operations after the end, want 0", w.step.gate.remembered())
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("two progress events share the id %s", id)
		}
		seen[id] = true
	}
}

// A restore announces its progress: its pods wait while its volumes are restored.
func TestResultsAnnounceRestoreProgress(t *testing.T) {
	w := progressWorld(t)
	cp, pod, vol := w.available()
	rid, _ := w.startRestore(cp)
	w.volumeRestored(rid, vol, "new-1")
	sent := w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, vol.Key())
	only(t, sent, events.PodRecreate)
	got := progressed(t, sent, events.RestoreProgressed)
	if len(got) != 1 {
		t.Fatalf("no restore progress among %v", types(sent))
	}
	res := decode[events.RestoreProgressedResult](t, got[0])
	if res.Restore != rid || res.Checkpoint != cp || got[0].Extensions()[events.ExtFlow] != events.FlowRestore {
		t.Fatalf("progressed %+v", res)
	}
	if p := res.Progress; p.Resources[graph.VolumeType] != (events.Count{Done: 1, Total: 1}) || p.Resources[graph.PodType] != (events.Count{Total: 1}) ||
		p.Bytes.Unsized != 1 || p.RemainingSeconds == nil || p.EstimateBasis != events.EstimateByResources {
		t.Fatalf("progress with the volume restored and the pod not started: %+v", p)
	}
	w.advance(5 * time.Second)
	sent = w.result(events.PodRecreated, rid, "pods-0000", events.StatusAvailable, pod.Key())
	only(t, sent, events.RestoreFinished)
	if got := progressed(t, sent, events.RestoreProgressed); len(got) != 1 ||
		decode[events.RestoreProgressedResult](t, got[0]).Progress.Finished() != 2 {
		t.Fatalf("the last result's progress: %v", got)
	}
	if w.step.gate.remembered() != 0 {
		t.Fatalf("the gate remembers %d operations after the restore ended", w.step.gate.remembered())
	}
}

// A store that cannot say what progress is (a test double without Batches) announces
// nothing, and the results are handled all the same.
func TestNoProgressWithoutTallies(t *testing.T) {
	w := progressWorld(t)
	w.step.tallies = nil
	g, pod, vol := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	sent := w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	sent = append(sent, w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key())...)
	finished(t, sent)
	if got := progressed(t, sent, events.CheckpointProgressed); len(got) != 0 {
		t.Fatalf("announced %s", got[0].Data())
	}
}

// A progress that cannot be read is not announced; the result is accepted.
func TestUnreadableProgressIsNotAnnounced(t *testing.T) {
	w := progressWorld(t)
	g, pod, _ := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	w.step.tallies = brokenTallies{}
	sent := w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	if got := progressed(t, sent, events.CheckpointProgressed); len(got) != 0 {
		t.Fatalf("announced %s", got[0].Data())
	}
	if more, err := w.bank.Remaining(context.Background(), id, "pods-"); err != nil || more {
		t.Fatalf("the pods' batch is still pending (%v): the result was not accepted", err)
	}
	// Nothing was announced: the next result may announce at once.
	w.step.tallies = w.bank
	if w.step.gate.remembered() != 1 || !w.step.gate.take(id, w.now()) {
		t.Fatal("a failed read delays the next announcement")
	}
}

type brokenTallies struct{}

func (brokenTallies) Batches(context.Context, string) (*bank.Batches, error) {
	return nil, fmt.Errorf("swift is down")
}

func (brokenTallies) FailedKeys(context.Context, string) ([]string, error) {
	return nil, fmt.Errorf("swift is down")
}
