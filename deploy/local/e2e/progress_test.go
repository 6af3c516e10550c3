package e2e

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestProgressOf200Pods protects 200 kwok pods, each with a 1 GiB claim (the volume step
// on the instant Cinder double), in batches of 10 with progress announced at most every
// 50 ms, then restores a checkpoint of 20 of them into a new namespace (on the instant
// volume double). The progress events each flow sent, in the order they were sent, match
// their schema and never go back (done+failed per type, bytes); the final views end at
// the totals, bytes included, and estimate nothing more.
func TestProgressOf200Pods(t *testing.T) {
	const n = 200
	e := newEnv(t, envOptions{cinder: backupvolume.NewInstantCinder(), volumes: restorevolume.NewInstantVolumes(),
		observe: []string{events.CheckpointProgressed, events.RestoreProgressed},
		extra:   map[string]string{"BATCH_SIZE": "10", "PROGRESS_INTERVAL": "50ms", "POD_WAIT": "30s"}})
	// The pods are kept between runs, as the benchmarks keep theirs.
	ns := fmt.Sprintf("e2e-progress-%d", n)
	stacktest.BulkPods(t, e.kube, ns, n)

	req := events.ProtectRequest{Plan: events.Plan{ID: "progress-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	start := time.Now()
	e.send(ev)
	if res := e.finished(id, 5*time.Minute); res.Status != events.StatusAvailable || res.Resources != 2*n {
		t.Fatalf("finished %+v", res)
	}
	took := time.Since(start)
	v := e.show(id)
	if v.Status != events.StatusAvailable {
		t.Fatalf("checkpoint %s", v.Status)
	}
	sent := e.progressOf(events.CheckpointProgressed, id, func(ev event.Event) (string, events.Progress) {
		res := decodeAs[events.CheckpointProgressedResult](t, ev)
		return res.Checkpoint, res.Progress
	})
	checkProgress(t, "protect", sent, v.Progress, n)
	t.Logf("protect of %d pods: available in %s, %d progress events", n, took.Round(10*time.Millisecond), len(sent))

	// The restore: of a checkpoint of 20 of the pods (200 restored pods take minutes to
	// be bound and Running on the local stack; 20 show the same).
	const m = 20
	sub := events.ProtectRequest{Plan: events.Plan{ID: "progress-some-" + ns, Scope: events.Scope{}}}
	for i := range m {
		sub.Plan.Scope.Pods = append(sub.Plan.Scope.Pods, graph.PodName(ns, fmt.Sprintf("p%05d", i)))
	}
	ev = newEvent(events.ProtectRequested, sub)
	some := choreographer.CheckpointID(sub, ev)
	e.send(ev)
	if res := e.finished(some, 5*time.Minute); res.Status != events.StatusAvailable || res.Resources != 2*m {
		t.Fatalf("finished %+v", res)
	}
	target := fmt.Sprintf("e2e-progress-restored-%d", time.Now().UnixNano()%1e9)
	start = time.Now()
	rid := e.restore(events.RestoreRequest{Checkpoint: some, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 5*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore finished %+v", res)
	}
	took = time.Since(start)
	rv := e.showRestore(rid)
	sent = e.progressOf(events.RestoreProgressed, rid, func(ev event.Event) (string, events.Progress) {
		res := decodeAs[events.RestoreProgressedResult](t, ev)
		if res.Checkpoint != some {
			t.Fatalf("restore.progressed of checkpoint %s, want %s", res.Checkpoint, some)
		}
		return res.Restore, res.Progress
	})
	checkProgress(t, "restore", sent, rv.Progress, m)
	t.Logf("restore of %d pods: success in %s, %d progress events", m, took.Round(10*time.Millisecond), len(sent))
}

// progressOf returns the progress events of an operation observed so far, each once, in
// the order they were sent (their time), each checked against its schema; read gives
// the operation an event names and its progress.
func (e *env) progressOf(typ, op string, read func(event.Event) (string, events.Progress)) []events.Progress {
	e.t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		e.t.Fatal(err)
	}
	// The broker delivers asynchronously: the operation's end may overtake its last
	// progress events. Wait for at least two (what checkProgress needs), then take what
	// arrived.
	deadline := time.After(30 * time.Second)
	var mine []event.Event
	for {
		e.mu.Lock()
		observed := append([]event.Event(nil), e.observed[typ]...)
		e.mu.Unlock()
		seen := map[string]bool{}
		mine = mine[:0]
		for _, ev := range observed {
			if ev.Extensions()[events.ExtCheckpoint] != op || seen[ev.ID()] {
				continue // another operation's, or a redelivery
			}
			seen[ev.ID()] = true
			mine = append(mine, ev)
		}
		if len(mine) >= 2 {
			break
		}
		select {
		case <-e.arrived:
		case <-deadline:
			e.t.Fatalf("%s of %s: %d within 30s, want at least 2", typ, op, len(mine))
		}
	}
	for _, ev := range mine {
		if err := v.Validate(ev); err != nil {
			e.t.Fatalf("%s %s does not match its schema: %v\n%s", typ, ev.ID(), err, ev.Data())
		}
	}
	sort.SliceStable(mine, func(i, j int) bool { return mine[i].Time().Before(mine[j].Time()) })
	out := make([]events.Progress, 0, len(mine))
	for _, ev := range mine {
		got, p := read(ev)
		if got != op {
			e.t.Fatalf("%s of %s names %s", typ, op, got)
		}
		out = append(out, p)
	}
	return out
}

// checkProgress: the events never go back and never pass the final view; the final view
// is every resource of n pods and n volumes of 1 GiB done, with nothing left to estimate.
func checkProgress(t *testing.T, flow string, sent []events.Progress, final events.Progress, n int) {
	t.Helper()
	if len(sent) < 2 {
		t.Fatalf("%s: %d progress events, want several", flow, len(sent))
	}
	all := append(append([]events.Progress(nil), sent...), final)
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		what := fmt.Sprintf("%s: progress %d of %d", flow, i, len(sent))
		if i == len(sent) {
			what = flow + ": the final view"
		}
		for _, typ := range []string{graph.PodType, graph.VolumeType} {
			p, c := prev.Resources[typ], cur.Resources[typ]
			if c.Done+c.Failed < p.Done+p.Failed || c.Total != n {
				t.Errorf("%s: %s %+v after %+v", what, typ, c, p)
			}
		}
		if cur.Bytes.Done+cur.Bytes.Failed < prev.Bytes.Done+prev.Bytes.Failed || cur.Bytes.Total != int64(n)<<30 {
			t.Errorf("%s: bytes %+v after %+v", what, cur.Bytes, prev.Bytes)
		}
		if cur.ElapsedSeconds < prev.ElapsedSeconds {
			t.Errorf("%s: elapsed %v after %v", what, cur.ElapsedSeconds, prev.ElapsedSeconds)
		}
	}
	for _, typ := range []string{graph.PodType, graph.VolumeType} {
		if c := final.Resources[typ]; c != (events.Count{Done: n, Total: n}) {
			t.Errorf("%s: the final view's %s %+v, want all %d done", flow, typ, c, n)
		}
	}
	if b := final.Bytes; b.Done != b.Total || b.Total != int64(n)<<30 || b.Failed != 0 || b.Unsized != 0 {
		t.Errorf("%s: the final view's bytes %+v, want %d GiB done of %d GiB", flow, b, n, n)
	}
	if final.RemainingSeconds != nil || final.ElapsedSeconds <= 0 {
		t.Errorf("%s: the final view's elapsed %v, remaining %v: want the time taken and no estimate", flow, final.ElapsedSeconds, final.RemainingSeconds)
	}
	estimated := 0
	for _, p := range sent {
		if p.RemainingSeconds != nil {
			estimated++
		}
	}
	t.Logf("%s: %d of %d progress events estimate the time left; the first: %s", flow, estimated, len(sent), describe(sent[0]))
}

// describe is a progress in a line.
func describe(p events.Progress) string {
	pods, vols := p.Resources[graph.PodType], p.Resources[graph.VolumeType]
	s := fmt.Sprintf("pods %d+%d/%d, volumes %d+%d/%d, %d+%d of %d GiB, elapsed %.3fs", pods.Done, pods.Failed, pods.Total,
		vols.Done, vols.Failed, vols.Total, p.Bytes.Done>>30, p.Bytes.Failed>>30, p.Bytes.Total>>30, p.ElapsedSeconds)
	if p.RemainingSeconds != nil {
		s += fmt.Sprintf(", %.3fs left by %s", *p.RemainingSeconds, p.EstimateBasis)
	}
	return s
}

func decodeAs[T any](t *testing.T, ev event.Event) T {
	t.Helper()
	var v T
	if err := ev.DataAs(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
