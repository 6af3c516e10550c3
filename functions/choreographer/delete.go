package choreographer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
)

// deletion is one attempt at deleting a checkpoint: the deletion's progress is kept by
// checkpoint id, and a failed deletion may be requested again.
type deletion struct {
	checkpoint *bank.Checkpoint
	started    time.Time
	deadline   time.Time
}

// delete starts, or carries on with, the deletion of a checkpoint that is available or
// error (or whose deletion failed before: it is tried again). Each attempt records who
// asked for it (caller.go).
func (s *Step) delete(ctx context.Context, e event.Event) error {
	by, err := callerOf(e)
	if err != nil {
		return err
	}
	var req events.DeleteRequest
	if err := function.Decode(e, &req); err != nil {
		return err
	}
	id := req.Checkpoint
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		// Deleted already: a duplicate, or the metadata removed by a deletion cut short.
		if status, err := s.deletions.Status(ctx, id); err == nil {
			if status == events.StatusDeleting {
				return s.completeDeletion(ctx, id)
			}
			d, err := s.deletionIndex(ctx, id)
			if err != nil {
				return err
			}
			return s.announceDeletion(ctx, id, d.RequestedBy, status, nil)
		}
		return function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s does not exist", id))
	}
	if err != nil {
		return err
	}
	status, err := s.bank.Status(ctx, id)
	if err != nil {
		return err
	}
	switch status {
	case events.StatusAvailable, events.StatusError, events.StatusErrorDeleting:
		if err := s.restoring(ctx, id); err != nil {
			return err
		}
		var span trace.Span
		ctx, span = s.telemetry.StartOperation(ctx, "podguard.delete", attribute.String("podguard.checkpoint", id))
		defer span.End()
		at := s.eventTime(e)
		if by == "" {
			by = deletedBy(e, cp)
		}
		if err := s.noteDeletion(ctx, cp, at.Add(s.cfg.DeleteTimeout), by); err != nil {
			return err
		}
		if status == events.StatusErrorDeleting {
			// Try again: forget the failures of the attempt before.
			if err := s.deletions.Reset(ctx, id); err != nil {
				return err
			}
		}
		if err := s.deletions.SetStatusAt(ctx, id, events.StatusDeleting, at); err != nil {
			return err
		}
		if err := s.deletions.Activate(ctx, id); err != nil {
			return err
		}
		if err := s.bank.SetStatusAt(ctx, id, events.StatusDeleting, at); err != nil {
			return err
		}
		s.metrics.OperationStarted(ctx, observe.Delete)
		logging.FromContext(ctx).Infow("checkpoint deleting", zap.String("checkpoint", id), zap.String("requested_by", by))
	case events.StatusDeleting:
		// A duplicate: carry on.
	default:
		return function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s is %s; only an available or error checkpoint can be deleted", id, status))
	}
	d, err := s.deletion(ctx, cp)
	if err != nil {
		return err
	}
	return s.deleteBackups(ctx, d)
}

// restoring refuses to delete a checkpoint that a restore in progress reads.
func (s *Step) restoring(ctx context.Context, checkpoint string) error {
	ids, err := s.restores.Active(ctx)
	if err != nil {
		return err
	}
	for _, rid := range ids {
		r, err := s.bank.Restore(ctx, rid)
		if err != nil {
			if errors.Is(err, bank.ErrNotFound) {
				continue
			}
			return err
		}
		if r.Checkpoint != checkpoint {
			continue
		}
		if status, err := s.restores.Status(ctx, rid); err == nil && status == events.RestoreInProgress {
			return function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s is being restored by restore %s; delete it once the restore has ended", checkpoint, rid))
		}
	}
	return nil
}

// deletion reads the current attempt at deleting a checkpoint: it started when the
// deletion last became deleting.
func (s *Step) deletion(ctx context.Context, cp *bank.Checkpoint) (*deletion, error) {
	h, err := s.deletions.History(ctx, cp.ID)
	if err != nil {
		return nil, err
	}
	d := &deletion{checkpoint: cp, started: attemptStart(h)}
	if d.started.IsZero() {
		return nil, fmt.Errorf("deletion of checkpoint %s: no deleting status: %w", cp.ID, bank.ErrNotFound)
	}
	d.deadline = d.started.Add(s.cfg.DeleteTimeout)
	return d, nil
}

// attemptStart is when the current attempt at a deletion started: when it last became
// deleting.
func attemptStart(h []bank.StatusChange) time.Time {
	var t time.Time
	for _, c := range h {
		if c.Status == events.StatusDeleting {
			t = c.At
		}
	}
	return t
}

// deleteBackups fans out a backup.delete per batch of the checkpoint's volumes. Pods have
// nothing outside the bank to delete.
func (s *Step) deleteBackups(ctx context.Context, d *deletion) error {
	id := d.checkpoint.ID
	batches, err := s.volumeBatches(ctx, d.checkpoint)
	if err != nil {
		return err
	}
	done, err := s.deletions.FannedOut(ctx, id, "")
	if err != nil {
		return err
	}
	if done {
		pending, err := s.deletions.PendingResources(ctx, id)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return s.completeDeletion(ctx, id)
		}
		resend := pendingBatches(batches, pending, s.stale(s.now()))
		return s.resend(ctx, events.FlowDelete, s.deletions, id, resend, func() error { return s.sendDeletes(ctx, d, resend, "") })
	}
	if len(batches) > 0 {
		if err := s.deletions.AddPending(ctx, id, names(batches)); err != nil {
			return err
		}
	}
	if err := s.deletions.MarkFannedOut(ctx, id, ""); errors.Is(err, bank.ErrExists) {
		return nil
	} else if err != nil {
		return err
	}
	if len(batches) == 0 {
		return s.completeDeletion(ctx, id)
	}
	return s.sendDeletes(ctx, d, batches, "")
}

// volumeBatches are the checkpoint's batches of volumes; a checkpoint that never got its
// graph has none.
func (s *Step) volumeBatches(ctx context.Context, cp *bank.Checkpoint) ([]graph.Batch, error) {
	g, err := s.bank.Graph(ctx, cp.ID)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ofType(g.Batches(cp.BatchSize), graph.VolumeType), nil
}

func (s *Step) sendDeletes(ctx context.Context, d *deletion, batches []graph.Batch, attempt string) error {
	id := d.checkpoint.ID
	started := d.started.UTC().Format(time.RFC3339Nano)
	return s.sendBatches(ctx, batches, func(ctx context.Context, b graph.Batch) error {
		req := events.StepRequest{Checkpoint: id, Batch: b.Name, Resources: b.Resources, Deadline: d.deadline}
		return s.emit(ctx, events.FlowDelete, id, events.BackupDelete, function.DerivedID(events.FlowDelete, id, started, b.Name, attempt), req)
	})
}

// deleteResult takes delete-backup's result for a batch (its outcome is the deletion's
// record of the batch); the last batch completes the deletion.
func (s *Step) deleteResult(ctx context.Context, e event.Event) error {
	var res events.StepResult
	if err := function.Decode(e, &res); err != nil {
		return err
	}
	v, err := s.accept(ctx, s.deletions, claim{kind: "deletion of checkpoint", id: res.Checkpoint, batch: res.Batch,
		running: events.StatusDeleting, ok: events.StatusDeleted})
	switch {
	case err != nil || v == late:
		return err
	case v == ended:
		return s.completeDeletion(ctx, res.Checkpoint)
	}
	more, err := s.deletions.Remaining(ctx, res.Checkpoint, "")
	if err != nil || more {
		return err
	}
	return s.completeDeletion(ctx, res.Checkpoint)
}

// completeDeletion ends a deletion once no batch is pending: with every backup deleted,
// the checkpoint's metadata is removed and it is deleted; otherwise the metadata stays,
// so the deletion can be requested again, and it is error-deleting with the reasons.
func (s *Step) completeDeletion(ctx context.Context, id string) error {
	failures, err := s.deletions.Failures(ctx, id)
	if err != nil {
		return err
	}
	// What the deletion settled is counted from the graph, read before the metadata goes.
	g, err := s.bank.Graph(ctx, id)
	if err != nil && !errors.Is(err, bank.ErrNotFound) {
		return err
	}
	d, err := s.deletionIndex(ctx, id)
	if err != nil {
		return err
	}
	if len(failures) == 0 {
		if err := s.bank.RemoveCheckpoint(ctx, id); err != nil {
			return err
		}
	}
	end, err := s.deletions.End(ctx, id, events.StatusDeleting, events.StatusDeleted, events.StatusErrorDeleting)
	if err != nil {
		return err
	}
	status, failures := end.Status, end.Failures
	if end.First {
		started := time.Time{}
		if !d.Deadline.IsZero() {
			started = d.Deadline.Add(-s.cfg.DeleteTimeout)
		}
		s.finished(ctx, observe.Delete, end, started, g, events.StatusDeleted)
	}
	if status == events.StatusErrorDeleting {
		if current, err := s.bank.Status(ctx, id); err == nil && current == events.StatusDeleting {
			if err := s.bank.SetStatus(ctx, id, events.StatusErrorDeleting); err != nil {
				return err
			}
		}
	}
	logging.FromContext(ctx).Infow("checkpoint deletion ended", zap.String("checkpoint", id), zap.String("status", status), zap.Int("failed", len(failures)))
	if err := s.announceDeletion(ctx, id, d.RequestedBy, status, failures); err != nil {
		return err
	}
	return s.retainAfterDeletion(ctx, id)
}

// deletionIndex reads the index of the deletion of a checkpoint; an empty one when there
// is none (a deletion started before deletions had an index).
func (s *Step) deletionIndex(ctx context.Context, id string) (*bank.Deletion, error) {
	d, err := s.bank.Deletion(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return &bank.Deletion{Checkpoint: id}, nil
	}
	return d, err
}

// announceDeletion announces how a deletion ended, and who asked for it.
func (s *Step) announceDeletion(ctx context.Context, id, by, status string, failures []bank.Failure) error {
	h, err := s.deletions.History(ctx, id)
	if err != nil {
		return err
	}
	started := attemptStart(h).UTC().Format(time.RFC3339Nano)
	out := events.CheckpointDeletedResult{Checkpoint: id, Status: status, RequestedBy: by}
	for _, f := range failures {
		out.Failed = append(out.Failed, events.FailedResource{Key: f.Key, Reason: f.Reason})
	}
	return s.emit(ctx, events.FlowDelete, id, events.CheckpointDeleted, function.DerivedID(events.FlowDelete, id, started, "finished"), out)
}

// checkDeletion is the tick of a deletion: it fans out a deletion whose fan-out was lost,
// re-sends requests that waited longer than RedriveAfter (the progress check of a backup
// deletion), completes a deletion whose last result was lost, and past the deadline fails
// what is unfinished.
func (s *Step) checkDeletion(ctx context.Context, id string) error {
	status, err := s.deletions.Status(ctx, id)
	if err != nil {
		return err
	}
	if status != events.StatusDeleting {
		_, err := s.deletions.End(ctx, id, events.StatusDeleting, events.StatusDeleted, events.StatusErrorDeleting)
		return err
	}
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return s.completeDeletion(ctx, id) // the metadata was removed, the end not recorded
	}
	if err != nil {
		return err
	}
	d, err := s.deletion(ctx, cp)
	if err != nil {
		return err
	}
	// The request may have stopped after recording the deletion and before marking the
	// checkpoint: mark it, so that it is not restored while its backups go.
	if current, err := s.bank.Status(ctx, id); err != nil {
		return err
	} else if current != events.StatusDeleting {
		if err := s.bank.SetStatusAt(ctx, id, events.StatusDeleting, d.started); err != nil {
			return err
		}
	}
	now := s.now()
	fanned, err := s.deletions.FannedOut(ctx, id, "")
	if err != nil {
		return err
	}
	if !fanned {
		if now.Sub(d.started) > s.cfg.RedriveAfter {
			return s.deleteBackups(ctx, d)
		}
		return nil
	}
	batches, err := s.volumeBatches(ctx, cp)
	if err != nil {
		return err
	}
	pending, err := s.deletions.PendingResources(ctx, id)
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		return s.completeDeletion(ctx, id)
	}
	if now.After(d.deadline.Add(2 * s.cfg.RedriveAfter)) {
		reason := fmt.Sprintf("backup not deleted by the deadline %s", d.deadline.UTC().Format(time.RFC3339))
		if err := failUnfinished(ctx, s.deletions, id, pendingBatches(batches, pending, all), pending, reason); err != nil {
			return err
		}
		return s.completeDeletion(ctx, id)
	}
	resend := pendingBatches(batches, pending, s.stale(now))
	return s.resend(ctx, events.FlowDelete, s.deletions, id, resend, func() error { return s.sendDeletes(ctx, d, resend, now.UTC().Format(time.RFC3339)) })
}
