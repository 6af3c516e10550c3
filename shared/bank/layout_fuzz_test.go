package bank

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// FuzzLayout feeds ids, batch names and resource keys to the layout, through the event
// schemas: whatever they are, every object of an operation lies under the operation's
// prefix, which is one path segment that no other id shares; ids the schemas accept are
// their own segment.
func FuzzLayout(f *testing.F) {
	v, err := events.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][3]string{
		{"6935517c-d9f3-577e-986e-7d94b72245b6", "volumes-0000", "OS::Cinder::Volume#v1"},
		{"a/records", "pods-0000", "x"}, {"..", "../..", "a/b"}, {".", "", "%2F"}, {"a%2Fb", "volumes-0001", "é"},
	} {
		f.Add(seed[0], seed[1], seed[2], "other")
	}
	var l Layout
	f.Fuzz(func(t *testing.T, id, batch, key, other string) {
		if id == "" {
			return
		}
		for _, kind := range []string{KindCheckpoints, KindRestores, KindDeletions} {
			op := Op{Kind: kind, ID: id}
			prefix := op.Prefix()
			seg := strings.TrimSuffix(strings.TrimPrefix(prefix, kind+"/"), "/")
			if seg == "" || seg == "." || seg == ".." || strings.Contains(seg, "/") || unsegment(seg) != id {
				t.Fatalf("id %q: segment %q", id, seg)
			}
			for _, name := range []string{
				l.StatusMarker(op, time.Unix(0, 1), events.StatusAvailable), l.FanOut(op, ""), l.Record(op, batch),
				l.Pending(op, batch), l.Resent(op, batch), l.Failure(op, key), l.CheckpointIndex(id), l.Graph(id),
				l.RestoreIndex(id), l.DeletionIndex(id), l.CheckpointKey(id, key),
			} {
				if strings.HasPrefix(name, kind+"/") && !strings.HasPrefix(name, prefix) {
					t.Fatalf("%s %q: %q is outside %q", kind, id, name, prefix)
				}
			}
			if got, ok := l.FailureKey(op, l.Failure(op, key)); key != "" && (!ok || got != key) {
				t.Fatalf("%s %q: failure of %q reads back %q %v", kind, id, key, got, ok)
			}
			if _, ok := l.FailureKey(op, l.Record(op, batch)); ok {
				t.Fatalf("%s %q: the record of %q reads as a failure", kind, id, batch)
			}
			if other != id && strings.HasPrefix(Op{Kind: kind, ID: other}.Prefix(), prefix) {
				t.Fatalf("%q and %q share the prefix %q", id, other, prefix)
			}
		}
		for _, name := range []string{l.AllIndex(id, time.Unix(1, 0)), l.PlanIndex("plan", id, time.Unix(1, 0))} {
			if got := l.CheckpointOfIndex(name); got != id {
				t.Fatalf("index %q reads back %q, want %q", name, got, id)
			}
		}
		if other != "" {
			// A checkpoint's entry in the index of a key (other) is one segment under it.
			keyEntry, keyPrefix := l.KeyIndex(other, id), l.KeyIndexPrefix(other)
			if seg, ok := strings.CutPrefix(keyEntry, keyPrefix); !ok || strings.Contains(seg, "/") || unsegment(seg) != id {
				t.Fatalf("key %q, checkpoint %q: entry %q under %q", other, id, keyEntry, keyPrefix)
			}
			// A schedule's entry under its plan (other) reads back the schedule, one segment
			// under the plan's prefix.
			entry := l.PlanSchedule(other, id)
			if got, ok := l.ScheduleOfPlanIndex(other, entry); !ok || got != id || !strings.HasPrefix(entry, l.PlanSchedulesPrefix(other)) {
				t.Fatalf("plan %q, schedule %q: entry %q reads back %q %v", other, id, entry, got, ok)
			}
		}
		if got := l.ActivePrefix(KindCheckpoints); !strings.HasPrefix(l.Active(CheckpointOp(id)), got) || strings.Contains(strings.TrimPrefix(l.Active(CheckpointOp(id)), got), "/") {
			t.Fatalf("active entry of %q: %q", id, l.Active(CheckpointOp(id)))
		}
		// What the schemas let through names its objects as it is.
		e := event.New()
		e.SetID("1")
		e.SetSource("fuzz")
		e.SetType(events.VolumeBackup)
		_ = e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: id, Batch: batch, Deadline: time.Unix(1, 0).UTC(),
			Resources: []graph.Resource{{Type: graph.VolumeType, ID: "v", Name: "v"}}})
		if v.Validate(e) == nil && (Segment(id) != id || EscapeKey(batch) != batch) {
			t.Fatalf("the schema accepts id %q / batch %q, which are not their own segment", id, batch)
		}
	})
}
