package choreographer

import (
	"context"
	"encoding/json"
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
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
)

// CheckpointID is the checkpoint a protect request makes: one per scheduled occurrence
// of a plan, else one per request event.
func CheckpointID(req events.ProtectRequest, e event.Event) string {
	if req.Occurrence != "" && req.Plan.ID != "" {
		return function.DerivedID("checkpoint", req.Plan.ID, req.Occurrence)
	}
	return function.DerivedID("checkpoint", e.Source(), e.ID())
}

func (s *Step) protect(ctx context.Context, e event.Event) error {
	by, err := callerOf(e)
	if err != nil {
		return err
	}
	var req events.ProtectRequest
	if err := function.Decode(e, &req); err != nil {
		return err
	}
	if by == "" {
		if by, err = s.scheduledBy(ctx, e, req); err != nil {
			return err
		}
	}
	return s.protectRequest(ctx, e, req, by)
}

// protectRequest starts the checkpoint of a protect request (from a user, a schedule or
// a PingSource); by is who asked (caller.go).
func (s *Step) protectRequest(ctx context.Context, e event.Event, req events.ProtectRequest, by string) error {
	if err := req.Plan.Scope.Check(); err != nil {
		return function.Permanent(fmt.Errorf("/plan%w", err))
	}
	// The policy recorded is the plan's as stored; a request that disagrees is refused.
	retention, err := s.planRetention(ctx, req.Plan)
	if err != nil {
		return err
	}
	// Racing duplicates of the request must write the same index: take the time from
	// the occurrence, or from the event, which they share.
	now := s.eventTime(e)
	if t, err := time.Parse(time.RFC3339, req.Occurrence); err == nil {
		now = t.UTC()
	}
	id := CheckpointID(req, e)
	// A late duplicate of the request of a checkpoint since deleted must not bring it back.
	if status, err := s.deletions.Status(ctx, id); err == nil {
		logging.FromContext(ctx).Infow("protect request of a deleted checkpoint ignored", zap.String("checkpoint", id), zap.String("deletion", status))
		return nil
	} else if !errors.Is(err, bank.ErrNotFound) {
		return err
	}
	_, err = s.bank.Status(ctx, id)
	fresh := errors.Is(err, bank.ErrNotFound)
	if err != nil && !fresh {
		return err
	}
	if fresh {
		var span trace.Span
		ctx, span = s.telemetry.StartOperation(ctx, "podguard.protect", attribute.String("podguard.checkpoint", id), attribute.String("podguard.plan", req.Plan.ID))
		defer span.End()
	}
	cp, err := s.bank.CreateCheckpoint(ctx, bank.Checkpoint{
		ID: id, Plan: bank.PlanRef{ID: req.Plan.ID, Name: req.Plan.Name, Retention: retention},
		Project: s.cfg.Project, Provider: checkpoint.ProviderID, CreatedAt: now, Deadline: now.Add(s.cfg.ProtectTimeout),
		Scope: req.Plan.Scope, Parameters: req.Plan.Parameters, BatchSize: s.cfg.BatchSize, Trace: s.telemetry.TraceParent(ctx),
		RequestedBy: by,
	})
	if err != nil {
		return err
	}
	if fresh {
		s.metrics.OperationStarted(ctx, observe.Protect)
	}
	logging.FromContext(ctx).Infow("checkpoint protecting", zap.String("checkpoint", cp.ID), zap.String("plan", cp.Plan.ID), zap.String("requested_by", cp.RequestedBy))
	return s.requestListing(ctx, cp, "")
}

func (s *Step) requestListing(ctx context.Context, cp *bank.Checkpoint, attempt string) error {
	return s.emit(ctx, events.FlowProtect, cp.ID, events.PodsList, function.DerivedID(events.FlowProtect, cp.ID, "list", attempt),
		events.PodsListRequest{Scope: cp.Scope})
}

func (s *Step) listed(ctx context.Context, e event.Event) error {
	id, _ := e.Extensions()[events.ExtCheckpoint].(string)
	if id == "" {
		return function.Permanent(fmt.Errorf("%s without the %s extension: not part of a protect", e.Type(), events.ExtCheckpoint))
	}
	var res events.PodsListedResult
	if err := function.Decode(e, &res); err != nil {
		return err
	}
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return function.Permanent(fmt.Errorf("checkpoint %s does not exist", id))
	}
	if err != nil {
		return err
	}
	// A listing that comes after the checkpoint ended (the tick failed it for want of a
	// listing within LIST_TIMEOUT) must not start backups for it.
	if status, err := s.bank.Status(ctx, id); err != nil {
		return err
	} else if status != events.StatusProtecting {
		return s.listedAfterEnd(ctx, cp, status)
	}
	g := res.Graph
	if g == nil && res.GraphRef != nil {
		raw, err := s.bank.GetRef(ctx, *res.GraphRef)
		if err != nil {
			return err
		}
		g = &graph.Graph{}
		if err := json.Unmarshal(raw, g); err != nil {
			return function.Permanent(fmt.Errorf("graph at %s: %w", res.GraphRef.Object, err))
		}
	}
	if g == nil {
		return function.Permanent(errors.New("pods.listed carries neither graph nor graphRef"))
	}
	if err := outOfScope(cp.Scope, g); err != nil {
		return function.Permanent(err)
	}
	// The first graph stored wins: a later listing (a duplicate, or one re-driven by the
	// tick) must not change what the checkpoint protects.
	if err := s.bank.PutGraph(ctx, id, g); errors.Is(err, bank.ErrExists) {
		if g, err = s.bank.Graph(ctx, id); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return s.fanOut(ctx, cp, g)
}

// fanOut creates the pending markers, records the fan-out, and sends a step request per
// batch. After a crash or a failed send, a redelivery re-sends the requests of the
// batches still pending.
func (s *Step) fanOut(ctx context.Context, cp *bank.Checkpoint, g *graph.Graph) error {
	done, err := s.bank.FannedOut(ctx, cp.ID, "")
	if err != nil {
		return err
	}
	batches := g.Batches(cp.BatchSize)
	if done {
		// A redelivery: re-send only what has waited long enough to be lost, so the
		// duplicate does not race the requests just sent.
		return s.redrive(ctx, cp, batches, s.stale(s.now()), "")
	}
	// What the checkpoint will not hold is failed before any batch can finish it.
	if err := s.recordGaps(ctx, cp, g); err != nil {
		return err
	}
	if len(batches) == 0 {
		return s.finish(ctx, cp.ID) // nothing to protect: recordGaps failed the scope
	}
	names := make([]string, len(batches))
	for i, b := range batches {
		names[i] = b.Name
	}
	if err := s.bank.AddPending(ctx, cp.ID, names); err != nil {
		return err
	}
	if err := s.bank.MarkFannedOut(ctx, cp.ID, ""); errors.Is(err, bank.ErrExists) {
		return nil // a duplicate fanned out first
	} else if err != nil {
		return err
	}
	logging.FromContext(ctx).Infow("fanning out", zap.String("checkpoint", cp.ID), zap.Int("resources", len(g.Nodes)), zap.Int("batches", len(batches)))
	return s.sendAll(ctx, cp, batches, "")
}

// sendAll sends the step request of each batch with bounded concurrency.
func (s *Step) sendAll(ctx context.Context, cp *bank.Checkpoint, batches []graph.Batch, attempt string) error {
	return batch.Each(ctx, batches, s.workers, func(ctx context.Context, b graph.Batch) error {
		return s.sendStep(ctx, cp, b, attempt)
	})
}

func (s *Step) sendStep(ctx context.Context, cp *bank.Checkpoint, b graph.Batch, attempt string) error {
	req := events.StepRequest{Checkpoint: cp.ID, Batch: b.Name, Resources: b.Resources, Deadline: cp.Deadline}
	typ := requestType(events.FlowProtect, b.Type)
	if b.Type == graph.VolumeType {
		p := cp.Parameters.Volume
		req.Parameters = &p
	}
	return s.emit(ctx, events.FlowProtect, cp.ID, typ, function.DerivedID(events.FlowProtect, cp.ID, b.Name, typ, attempt), req)
}

// result takes a step's result for a batch of a checkpoint; the last batch finishes it.
func (s *Step) result(ctx context.Context, e event.Event) (*event.Event, error) {
	var res events.StepResult
	if err := function.Decode(e, &res); err != nil {
		return nil, err
	}
	v, err := s.accept(ctx, s.bank, claim{kind: "checkpoint", id: res.Checkpoint, batch: res.Batch,
		running: events.StatusProtecting, ok: events.StatusAvailable, gone: s.deleted(res.Checkpoint)})
	switch {
	case err != nil || v == late:
		return nil, err
	case v == ended:
		return nil, s.finish(ctx, res.Checkpoint)
	}
	s.checkpointProgressed(ctx, res.Checkpoint)
	remaining, err := s.bank.Remaining(ctx, res.Checkpoint, "")
	if err != nil || remaining {
		return nil, err
	}
	return nil, s.finish(ctx, res.Checkpoint)
}

// deleted reports whether a checkpoint that has no status any more was deleted.
func (s *Step) deleted(id string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		_, err := s.deletions.Status(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}
}

// finish records the terminal status and announces it. A redelivered last result
// announces the same outcome again, with the same event id.
func (s *Step) finish(ctx context.Context, id string) error {
	end, err := s.bank.Finish(ctx, id)
	if err != nil {
		return err
	}
	status, failures := end.Status, end.Failures
	s.gate.forget(id)
	cp, err := s.bank.Checkpoint(ctx, id)
	if err != nil {
		return err
	}
	g, err := s.bank.Graph(ctx, id)
	if err != nil && !errors.Is(err, bank.ErrNotFound) {
		return err
	}
	s.finished(ctx, observe.Protect, end, cp.CreatedAt, g, events.StatusAvailable)
	if end.First {
		s.protectEnded(cp.Plan.ID, status, cp.CreatedAt)
	}
	out := finishedResult(cp, status, g, failures)
	logging.FromContext(ctx).Infow("checkpoint finished", zap.String("checkpoint", id), zap.String("status", status), zap.Int("failed", len(failures)),
		zap.Int("excluded", len(out.Excluded)+out.MoreExcluded))
	if err := s.emit(ctx, events.FlowProtect, id, events.CheckpointFinished, function.DerivedID(events.FlowProtect, id, "finished"), out); err != nil {
		return err
	}
	// A protect that failed deletes nothing: retention runs only once a new checkpoint of
	// the plan is available.
	if status != events.StatusAvailable {
		return nil
	}
	return s.retain(ctx, cp.Plan.ID)
}

// check is the tick of a checkpoint being protected: it asks again for a listing that never
// came, re-sends step requests that have waited longer than RedriveAfter (the progress
// check of a backup is its request, sent again), and fails resources past the deadline.
func (s *Step) check(ctx context.Context, id string) error {
	cp, err := s.bank.Checkpoint(ctx, id)
	if err != nil {
		return err
	}
	ctx, span := s.telemetry.Resume(ctx, cp.Trace, "podguard.check")
	defer span.End()
	status, err := s.bank.Status(ctx, id)
	if err != nil {
		return err
	}
	if status != events.StatusProtecting {
		_, err := s.bank.Finish(ctx, id) // leaves the active index
		return err
	}
	now := s.now()
	attempt := now.UTC().Format(time.RFC3339)
	g, err := s.bank.Graph(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		switch age := now.Sub(cp.CreatedAt); {
		case age > s.cfg.ListTimeout:
			if err := s.bank.Fail(ctx, id, "checkpoint", fmt.Sprintf("listing the plan's pods did not complete within %s", s.cfg.ListTimeout)); err != nil {
				return err
			}
			return s.finish(ctx, id)
		case age > s.cfg.RedriveAfter:
			return s.requestListing(ctx, cp, attempt)
		}
		return nil
	}
	if err != nil {
		return err
	}
	fanned, err := s.bank.FannedOut(ctx, id, "")
	if err != nil {
		return err
	}
	if !fanned {
		if now.Sub(cp.CreatedAt) > s.cfg.RedriveAfter {
			return s.fanOut(ctx, cp, g)
		}
		return nil
	}
	batches := g.Batches(cp.BatchSize)
	if now.After(cp.Deadline) {
		return s.failPending(ctx, cp, batches)
	}
	return s.redrive(ctx, cp, batches, s.stale(now), attempt)
}

// failPending fails every resource of the batches still pending past the deadline; a
// result arriving later changes nothing.
func (s *Step) failPending(ctx context.Context, cp *bank.Checkpoint, batches []graph.Batch) error {
	pending, err := s.bank.PendingResources(ctx, cp.ID)
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("not finished by the checkpoint's deadline %s", cp.Deadline.UTC().Format(time.RFC3339))
	if err := failUnfinished(ctx, s.bank, cp.ID, pendingBatches(batches, pending, all), pending, reason); err != nil {
		return err
	}
	return s.finish(ctx, cp.ID)
}

// redrive re-sends the step requests of pending batches selected by want; when nothing
// is pending any more the checkpoint is finished.
func (s *Step) redrive(ctx context.Context, cp *bank.Checkpoint, batches []graph.Batch, want func(bank.Pending) bool, attempt string) error {
	pending, err := s.bank.PendingResources(ctx, cp.ID)
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		return s.finish(ctx, cp.ID)
	}
	resend := pendingBatches(batches, pending, want)
	if len(resend) > 0 {
		logging.FromContext(ctx).Infow("re-driving pending work", zap.String("checkpoint", cp.ID), zap.Int("batches", len(resend)))
	}
	return s.resend(ctx, events.FlowProtect, s.bank, cp.ID, resend, func() error { return s.sendAll(ctx, cp, resend, attempt) })
}
