package choreographer

import (
	"context"
	"testing"

	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
)

// A result is a claim: its statuses count for nothing, the record the step wrote is the
// outcome.
func TestResultStatusesAreNotBelieved(t *testing.T) {
	w := newWorld(t)
	g, pod, vol := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	// The step recorded the volume's backup as failed; the result says available.
	if err := w.bank.Checkpoints().PutRecord(context.Background(), id, bank.Record{Batch: "volumes-0000", UpdatedAt: w.now(),
		Resources: map[string]bank.ResourceRecord{vol.Key(): {Status: events.StatusError, Reason: "Cinder backup failed"}}}); err != nil {
		t.Fatal(err)
	}
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	fin := decode[events.CheckpointFinishedResult](t, only(t, w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key()), events.CheckpointFinished))
	if fin.Status != events.StatusError || len(fin.Failed) != 1 || fin.Failed[0].Reason != "Cinder backup failed" {
		t.Fatalf("finished %+v, want error with the recorded reason", fin)
	}
}

// A result for a batch with no record (no step finished it) completes nothing; one for
// an operation or a batch that does not exist is refused.
func TestForgedResultsAreRefused(t *testing.T) {
	w := newWorld(t)
	g, _, _ := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	ctx := logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
	for name, e := range map[string]struct{ typ, op, batch string }{
		"no record":          {events.VolumeBackedUp, id, "volumes-0000"},
		"unknown checkpoint": {events.VolumeBackedUp, "nope", "volumes-0000"},
		"unknown batch":      {events.VolumeBackedUp, id, "volumes-0099"},
		"unknown restore":    {events.VolumeRestored, "nope", "volumes-0000"},
		"unknown deletion":   {events.BackupDeleted, id, "volumes-0000"},
	} {
		var data any = events.StepResult{Checkpoint: e.op, Batch: e.batch, Results: []events.ResourceResult{{Key: "k", Status: events.StatusAvailable}}}
		if e.typ == events.VolumeRestored {
			data = events.RestoreStepResult{Restore: e.op, Batch: e.batch, Results: []events.ResourceResult{{Key: "k", Status: events.StatusAvailable}}}
		}
		_, err := w.step.Handle(ctx, w.event(e.typ, e.op, data))
		if !function.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent refusal", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if pending, err := w.bank.Checkpoints().PendingResources(ctx, id); err != nil || len(pending) != 2 {
		t.Fatalf("pending after forged results: %v %v, want both batches", pending, err)
	}
	w.status(id, events.StatusProtecting)
	if sent := w.out.take(); len(sent) != 0 {
		t.Fatalf("forged results sent %v", types(sent))
	}
}
