package checkpoint

import (
	"fmt"
	"testing"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// progressGraph is n pods, each with one volume of size GiB (no size recorded when
// size is 0), cut into batches of 2.
func progressGraph(n, size int) []graph.Batch {
	g := &graph.Graph{}
	for i := range n {
		p := graph.PodResource("shop", fmt.Sprintf("web-%d", i))
		v := graph.Resource{Type: graph.VolumeType, ID: fmt.Sprintf("vol-%d", i), Name: fmt.Sprintf("shop/data-%d", i)}
		if size > 0 {
			v.ExtraInfo = map[string]string{graph.InfoSizeBytes: fmt.Sprint(int64(size) << 30)}
		}
		g.Nodes = append(g.Nodes, graph.Node{Resource: p, Children: []string{v.Key()}}, graph.Node{Resource: v})
	}
	return g.Batches(2)
}

func set(keys ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func ptr(f float64) *float64 { return &f }

func TestTallyProgress(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pod := func(i int) string { return graph.PodResource("shop", fmt.Sprintf("web-%d", i)).Key() }
	vol := func(i int) string { return graph.Resource{Type: graph.VolumeType, ID: fmt.Sprintf("vol-%d", i)}.Key() }
	const gib = int64(1) << 30
	count := func(done, failed, total int) events.Count {
		return events.Count{Done: done, Failed: failed, Total: total}
	}
	for _, tt := range []struct {
		name string
		t    Tally
		// pods, volumes; bytes; elapsed, remaining (nil: none) and its basis
		pods, vols events.Count
		bytes      events.Bytes
		elapsed    float64
		remaining  *float64
		basis      string
	}{
		{
			name:    "empty graph: nothing to do, no estimate",
			t:       Tally{Started: start, Now: start.Add(3 * time.Second)},
			elapsed: 3,
		},
		{
			name: "not fanned out yet: nothing done",
			t: Tally{Batches: progressGraph(4, 1), Unstarted: set(graph.PodType, graph.VolumeType),
				Started: start, Now: start.Add(time.Second)},
			pods: count(0, 0, 4), vols: count(0, 0, 4), bytes: events.Bytes{Total: 4 * gib}, elapsed: 1,
		},
		{
			name: "every batch pending: nothing done, no estimate",
			t: Tally{Batches: progressGraph(4, 1), Pending: set("pods-0000", "pods-0001", "volumes-0000", "volumes-0001"),
				Started: start, Now: start.Add(10 * time.Second)},
			pods: count(0, 0, 4), vols: count(0, 0, 4), bytes: events.Bytes{Total: 4 * gib}, elapsed: 10,
		},
		{
			name: "pods done, no volume yet: the slow part is unmeasured, no estimate",
			t: Tally{Batches: progressGraph(4, 1), Pending: set("volumes-0000", "volumes-0001"),
				Started: start, Now: start.Add(10 * time.Second)},
			pods: count(4, 0, 4), vols: count(0, 0, 4), bytes: events.Bytes{Total: 4 * gib}, elapsed: 10,
		},
		{
			name: "half the bytes in 10s: 10s left, by bytes (resources would say 3.3s)",
			t: Tally{Batches: progressGraph(4, 1), Pending: set("volumes-0001"),
				Started: start, Now: start.Add(10 * time.Second)},
			pods: count(4, 0, 4), vols: count(2, 0, 4), bytes: events.Bytes{Done: 2 * gib, Total: 4 * gib}, elapsed: 10,
			remaining: ptr(10), basis: events.EstimateByBytes,
		},
		{
			name: "a failed volume counts as finished, in failed bytes; a pod of a failed problem is failed",
			t: Tally{Batches: progressGraph(4, 1), Pending: set("volumes-0001"),
				Problems: []graph.Problem{{Pod: "shop:web-3", Volume: "cache", Reason: "claim not bound"}},
				Failed:   set(vol(0), "shop:web-3/cache"), Started: start, Now: start.Add(10 * time.Second)},
			pods: count(3, 1, 4), vols: count(1, 1, 4), bytes: events.Bytes{Done: gib, Failed: gib, Total: 4 * gib}, elapsed: 10,
			remaining: ptr(10), basis: events.EstimateByBytes,
		},
		{
			name: "volumes of unknown size: counted as unsized, estimated by resources",
			t: Tally{Batches: progressGraph(4, 0), Pending: set("pods-0001", "volumes-0001"),
				Started: start, Now: start.Add(8 * time.Second)},
			pods: count(2, 0, 4), vols: count(2, 0, 4), bytes: events.Bytes{Unsized: 4}, elapsed: 8,
			remaining: ptr(8), basis: events.EstimateByResources,
		},
		{
			name: "a restore's volumes done, its pods not fanned out: by resources, the pods included",
			t: Tally{Batches: progressGraph(4, 1), Unstarted: set(graph.PodType),
				Started: start, Now: start.Add(4 * time.Second)},
			pods: count(0, 0, 4), vols: count(4, 0, 4), bytes: events.Bytes{Done: 4 * gib, Total: 4 * gib}, elapsed: 4,
			remaining: ptr(4), basis: events.EstimateByResources,
		},
		{
			name: "a failed resource of a pending batch is failed",
			t: Tally{Batches: progressGraph(2, 1), Pending: set("pods-0000", "volumes-0000"), Failed: set(pod(1)),
				Started: start, Now: start.Add(time.Second)},
			pods: count(0, 1, 2), vols: count(0, 0, 2), bytes: events.Bytes{Total: 2 * gib}, elapsed: 1,
		},
		{
			name: "everything done: nothing left, no estimate",
			t:    Tally{Batches: progressGraph(4, 1), Started: start, Now: start.Add(20 * time.Second)},
			pods: count(4, 0, 4), vols: count(4, 0, 4), bytes: events.Bytes{Done: 4 * gib, Total: 4 * gib}, elapsed: 20,
		},
		{
			name: "ended: elapsed up to the end, no estimate even with work left",
			t: Tally{Batches: progressGraph(4, 1), Pending: set("volumes-0001"), Failed: set(vol(2)),
				Started: start, Ended: start.Add(90 * time.Second), Now: start.Add(time.Hour)},
			pods: count(4, 0, 4), vols: count(2, 1, 4), bytes: events.Bytes{Done: 2 * gib, Failed: gib, Total: 4 * gib}, elapsed: 90,
		},
		{
			name: "a clock behind the request: elapsed 0, no estimate",
			t:    Tally{Batches: progressGraph(2, 1), Pending: set("volumes-0000"), Started: start, Now: start.Add(-time.Second)},
			pods: count(2, 0, 2), vols: count(0, 0, 2), bytes: events.Bytes{Total: 2 * gib},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.t.Progress()
			if got := p.Resources[graph.PodType]; got != tt.pods {
				t.Errorf("pods %+v, want %+v", got, tt.pods)
			}
			if got := p.Resources[graph.VolumeType]; got != tt.vols {
				t.Errorf("volumes %+v, want %+v", got, tt.vols)
			}
			if len(p.Resources) != 2 {
				t.Errorf("resources of %d types, want both podguard types always: %+v", len(p.Resources), p.Resources)
			}
			if p.Bytes != tt.bytes {
				t.Errorf("bytes %+v, want %+v", p.Bytes, tt.bytes)
			}
			if p.ElapsedSeconds != tt.elapsed {
				t.Errorf("elapsed %v, want %v", p.ElapsedSeconds, tt.elapsed)
			}
			switch {
			case tt.remaining == nil && p.RemainingSeconds != nil:
				t.Errorf("remaining %v (%s), want none", *p.RemainingSeconds, p.EstimateBasis)
			case tt.remaining != nil && (p.RemainingSeconds == nil || *p.RemainingSeconds != *tt.remaining):
				t.Errorf("remaining %v, want %v", p.RemainingSeconds, *tt.remaining)
			case p.EstimateBasis != tt.basis:
				t.Errorf("basis %q, want %q", p.EstimateBasis, tt.basis)
			}
		})
	}
}

// TestTallyNeverGoesBack: whatever order the batches finish in, a later tally shows at
// least as much finished, per type and in bytes, and ends at the totals.
func TestTallyNeverGoesBack(t *testing.T) {
	batches := progressGraph(7, 2)
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5, 6, 7}, {7, 6, 5, 4, 3, 2, 1, 0}, {4, 0, 7, 2, 5, 1, 6, 3}} {
		pending := map[string]bool{}
		for _, b := range batches {
			pending[b.Name] = true
		}
		failed := map[string]bool{}
		var last events.Progress
		for step, i := range order {
			if i >= len(batches) {
				continue
			}
			b := batches[i]
			if step%3 == 0 {
				failed[b.Resources[0].Key()] = true // failures first, the marker last
			}
			delete(pending, b.Name)
			p := Tally{Batches: batches, Pending: pending, Failed: failed, Started: start, Now: start.Add(time.Duration(step+1) * time.Second)}.Progress()
			for typ, c := range p.Resources {
				if prev := last.Resources[typ]; c.Done+c.Failed < prev.Done+prev.Failed {
					t.Fatalf("order %v, step %d: %s went back from %+v to %+v", order, step, typ, prev, c)
				}
			}
			if p.Bytes.Done+p.Bytes.Failed < last.Bytes.Done+last.Bytes.Failed {
				t.Fatalf("order %v, step %d: bytes went back from %+v to %+v", order, step, last.Bytes, p.Bytes)
			}
			last = p
		}
		for typ, c := range last.Resources {
			if c.Done+c.Failed != c.Total || c.Total != 7 {
				t.Errorf("order %v: %s ends at %+v, want all 7 finished", order, typ, c)
			}
		}
		if last.Bytes.Done+last.Bytes.Failed != last.Bytes.Total || last.Bytes.Total != 14<<30 {
			t.Errorf("order %v: bytes end at %+v", order, last.Bytes)
		}
	}
}
