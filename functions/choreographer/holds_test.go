package choreographer

import (
	"context"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// finished returns the data of the one checkpoint.finished among es, checked against its
// schema.
func finished(t *testing.T, es []event.Event) events.CheckpointFinishedResult {
	t.Helper()
	e := only(t, es, events.CheckpointFinished)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(e); err != nil {
		t.Fatalf("checkpoint.finished does not match its schema: %v\n%s", err, e.Data())
	}
	return decode[events.CheckpointFinishedResult](t, e)
}

// A pod whose claims do not all lead to a Cinder volume is not all in the checkpoint: the
// checkpoint ends error with each problem as a failure (the pod's view says so too),
// although every batch succeeded; the pods excluded as not Running are listed.
func TestGraphProblemsEndTheCheckpointInError(t *testing.T) {
	w := newWorld(t)
	g, pod, vol := onePodOneVolume()
	g.Problems = []graph.Problem{
		{Pod: pod.Name, Volume: "cache", Claim: "web-cache", Reason: "persistent volume claim is not bound (phase Pending)"},
		{Pod: pod.Name, Volume: "logs", Claim: "web-logs", PersistentVolume: "pv-ebs", Reason: "persistent volume uses CSI driver ebs.csi.aws.com, not Cinder"},
	}
	g.Excluded = []graph.Excluded{{Pod: "shop:batch", Phase: "Pending", Reason: "pod phase Pending is not protectable"}}
	id := w.protect()
	if got := types(w.listed(id, g)); len(got) != 2 {
		t.Fatalf("fan-out sent %v", got)
	}
	// A duplicate listing records nothing new and sends nothing new.
	if got := w.listed(id, g); len(got) != 0 {
		t.Fatalf("a duplicate listing sent %v", types(got))
	}
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	res := finished(t, w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key()))
	w.status(id, events.StatusError)
	if res.Status != events.StatusError || res.Resources != 2 || len(res.Failed) != 2 {
		t.Fatalf("finished %+v", res)
	}
	for i, want := range []struct{ key, reason string }{
		{pod.Name + "/cache", "volume cache of pod shop:web (claim web-cache) is not in the checkpoint: persistent volume claim is not bound (phase Pending)"},
		{pod.Name + "/logs", "volume logs of pod shop:web (claim web-logs, persistent volume pv-ebs) is not in the checkpoint: persistent volume uses CSI driver ebs.csi.aws.com, not Cinder"},
	} {
		if f := res.Failed[i]; f.Key != want.key || f.Name != pod.Name || f.Reason != want.reason {
			t.Errorf("failure %d: %+v, want key %s, reason %q", i, f, want.key, want.reason)
		}
	}
	if len(res.Excluded) != 1 || res.Excluded[0].Pod != "shop:batch" || res.Excluded[0].Phase != "Pending" {
		t.Errorf("excluded %+v", res.Excluded)
	}

	v, err := checkpoint.Load(context.Background(), w.bank, id)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, r := range v.Resources {
		status[r.Key()] = r.Status
		if r.Key() == pod.Key() && (!strings.Contains(r.Reason, "claim web-cache") || !strings.Contains(r.Reason, "claim web-logs")) {
			t.Errorf("pod's reason %q", r.Reason)
		}
	}
	if status[pod.Key()] != events.StatusError || status[vol.Key()] != events.StatusAvailable || len(v.Failed) != 0 ||
		len(v.Problems) != 2 || len(v.Excluded) != 1 || v.Status != events.StatusError {
		t.Fatalf("view: status %s, resources %v, failed %+v, problems %d, excluded %d", v.Status, status, v.Failed, len(v.Problems), len(v.Excluded))
	}
}

// A scope with no protectable pod ends error at once, with the reason, whether or not
// some pods were excluded; a duplicate listing announces the same end.
func TestScopeWithNoProtectablePodEndsInError(t *testing.T) {
	for _, c := range []struct {
		name     string
		excluded []graph.Excluded
		reason   string
	}{
		{"no pods", nil, "no protectable pods in namespace shop"},
		{"only excluded pods", []graph.Excluded{{Pod: "shop:batch", Phase: "Failed", Reason: "pod phase Failed is not protectable"}},
			"no protectable pods in namespace shop: 1 excluded as not protectable: shop:batch (Failed)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			id := w.protect()
			g := &graph.Graph{Nodes: []graph.Node{}, Excluded: c.excluded}
			out := w.listed(id, g)
			res := finished(t, out)
			w.status(id, events.StatusError)
			if len(out) != 1 || res.Status != events.StatusError || res.Resources != 0 || len(res.Failed) != 1 ||
				res.Failed[0].Key != scopeKey || res.Failed[0].Reason != c.reason || len(res.Excluded) != len(c.excluded) {
				t.Fatalf("sent %v, finished %+v", types(out), res)
			}
			again := w.listed(id, g)
			if e := only(t, again, events.CheckpointFinished); e.ID() != only(t, out, events.CheckpointFinished).ID() {
				t.Fatalf("a duplicate listing announced another end: %s", e)
			}
			v, err := checkpoint.Load(context.Background(), w.bank, id)
			if err != nil || v.Status != events.StatusError || len(v.Failed) != 1 || v.Failed[0].Reason != c.reason {
				t.Fatalf("view %+v %v", v, err)
			}
		})
	}
}

// checkpoint.finished lists at most finishedListed failures and excluded pods, and says
// how many it left out.
func TestFinishedBoundsWhatItLists(t *testing.T) {
	w := newWorld(t)
	g := &graph.Graph{Nodes: []graph.Node{}}
	for i := range finishedListed + 3 {
		name := "shop:p" + strings.Repeat("x", i)
		g.Problems = append(g.Problems, graph.Problem{Pod: name, Reason: "pod not found"})
		g.Excluded = append(g.Excluded, graph.Excluded{Pod: name + "-pending", Phase: "Pending", Reason: "pod phase Pending is not protectable"})
	}
	id := w.protect()
	res := finished(t, w.listed(id, g))
	if len(res.Failed) != finishedListed || res.MoreFailed != 4 || len(res.Excluded) != finishedListed || res.MoreExcluded != 3 {
		t.Fatalf("failed %d (+%d), excluded %d (+%d)", len(res.Failed), res.MoreFailed, len(res.Excluded), res.MoreExcluded)
	}
}
