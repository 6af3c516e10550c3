// Package choreographer is podguard's small, stateless choreographer. From a request or
// a step's result, and what the bank holds, it derives the next events; it never calls a
// step. For a protect:
//
//	protect.requested -> checkpoint (protecting) -> pods.list
//	pods.listed       -> graph, pending markers  -> metadata.snapshot per batch of pods, volume.backup per batch of volumes
//	*.snapshotted / *.backedup -> marker deleted; when none is left -> available | error, checkpoint.finished
//	tick              -> re-drives pending work (progress checks), fails work past its deadline
//
// Steps work on batches of resources of one type (BATCH_SIZE), so the bank requests and
// events per resource stay small. Each event costs a bounded number of bank operations,
// whatever the size of the checkpoint; only the tick reads a checkpoint's pending work in
// full.
package choreographer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack"
)

// Accepts are the event types the choreographer handles.
var Accepts = []string{events.ProtectRequested, events.PodsListed, events.MetadataSnapshotted,
	events.VolumeBackedUp, events.Tick, events.PingSourceTick}

// Config is the choreographer's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
	// Project is recorded in checkpoints (defaults to OS_PROJECT_NAME).
	Project string `envconfig:"OS_PROJECT_NAME"`
	// ProtectTimeout is how long a checkpoint may stay protecting; past it, unfinished
	// resources fail with a clear reason.
	ProtectTimeout time.Duration `envconfig:"PROTECT_TIMEOUT" default:"24h"`
	// ListTimeout bounds the wait for the graph of a new checkpoint.
	ListTimeout time.Duration `envconfig:"LIST_TIMEOUT" default:"10m"`
	// RedriveAfter: on a tick, a step request older than this is sent again (a progress
	// check for long work, and a cure for lost events).
	RedriveAfter time.Duration `envconfig:"REDRIVE_AFTER" default:"30s"`
	// FanOutWorkers bounds concurrent sends of a fan-out.
	FanOutWorkers int `envconfig:"FANOUT_WORKERS" default:"16"`
	// BatchSize is how many resources of one type a step request carries. Larger batches
	// mean fewer events and bank requests per resource; smaller ones finish in smaller
	// units.
	BatchSize int `envconfig:"BATCH_SIZE" default:"50"`
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if c.ProtectTimeout <= 0 || c.ListTimeout <= 0 || c.RedriveAfter <= 0 || c.FanOutWorkers <= 0 {
		return errors.New("PROTECT_TIMEOUT, LIST_TIMEOUT, REDRIVE_AFTER and FANOUT_WORKERS must be positive")
	}
	if c.BatchSize < 1 || c.BatchSize > 500 {
		return fmt.Errorf("BATCH_SIZE=%d: want 1..500", c.BatchSize)
	}
	return c.Bank.Validate()
}

// store is what the choreographer reads and writes in the bank.
type store interface {
	CreateCheckpoint(ctx context.Context, cp bank.Checkpoint) (*bank.Checkpoint, error)
	Checkpoint(ctx context.Context, id string) (*bank.Checkpoint, error)
	Status(ctx context.Context, id string) (string, error)
	PutGraph(ctx context.Context, id string, g *graph.Graph) error
	Graph(ctx context.Context, id string) (*graph.Graph, error)
	GetRef(ctx context.Context, ref events.ObjectRef) ([]byte, error)
	AddPending(ctx context.Context, id string, keys []string) error
	MarkFannedOut(ctx context.Context, id, phase string) error
	FannedOut(ctx context.Context, id, phase string) (bool, error)
	PendingResources(ctx context.Context, id string) ([]bank.Pending, error)
	Done(ctx context.Context, id, key string) (bool, error)
	Fail(ctx context.Context, id, key, reason string) error
	Finish(ctx context.Context, id string) (string, []bank.Failure, error)
	Active(ctx context.Context) ([]string, error)
}

// Step is the choreographer.
type Step struct {
	bank    store
	sink    function.Sender
	cfg     Config
	now     func() time.Time
	workers int
}

// New builds the choreographer from its configuration; it emits to the runtime's sink.
func New(ctx context.Context, cfg *Config, sink function.Sender) (*Step, error) {
	if sink == nil {
		return nil, errors.New("the choreographer emits events: set K_SINK to the broker")
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(b, sink, *cfg, time.Now), nil
}

// NewStep builds the choreographer from its dependencies.
func NewStep(b store, sink function.Sender, cfg Config, now func() time.Time) *Step {
	if cfg.FanOutWorkers <= 0 {
		cfg.FanOutWorkers = 16
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 50
	}
	return &Step{bank: b, sink: sink, cfg: cfg, now: now, workers: cfg.FanOutWorkers}
}

// Handle routes an event to its handler.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.ProtectRequested:
		return nil, s.protect(ctx, e)
	case events.PodsListed:
		return nil, s.listed(ctx, e)
	case events.MetadataSnapshotted, events.VolumeBackedUp:
		return s.result(ctx, e)
	case events.Tick, events.PingSourceTick:
		return nil, s.tick(ctx)
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not handled by the choreographer", e.Type()))
}

// CheckpointID is the checkpoint a protect request makes: one per scheduled occurrence
// of a plan, else one per request event.
func CheckpointID(req events.ProtectRequest, e event.Event) string {
	if req.Occurrence != "" && req.Plan.ID != "" {
		return function.DerivedID("checkpoint", req.Plan.ID, req.Occurrence)
	}
	return function.DerivedID("checkpoint", e.Source(), e.ID())
}

func (s *Step) protect(ctx context.Context, e event.Event) error {
	var req events.ProtectRequest
	if err := e.DataAs(&req); err != nil {
		return function.Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	if err := req.Plan.Scope.Check(); err != nil {
		return function.Permanent(fmt.Errorf("/plan%w", err))
	}
	// Racing duplicates of the request must write the same index: take the time from
	// the event, which they share.
	now := e.Time().UTC()
	if now.IsZero() {
		now = s.now().UTC()
	}
	cp, err := s.bank.CreateCheckpoint(ctx, bank.Checkpoint{
		ID: CheckpointID(req, e), Plan: bank.PlanRef{ID: req.Plan.ID, Name: req.Plan.Name},
		Project: s.cfg.Project, Provider: checkpoint.ProviderID, CreatedAt: now, Deadline: now.Add(s.cfg.ProtectTimeout),
		Scope: req.Plan.Scope, Parameters: req.Plan.Parameters, BatchSize: s.cfg.BatchSize,
	})
	if err != nil {
		return err
	}
	logging.FromContext(ctx).Infow("checkpoint protecting", zap.String("checkpoint", cp.ID), zap.String("plan", cp.Plan.ID))
	return s.requestListing(ctx, cp, "")
}

func (s *Step) requestListing(ctx context.Context, cp *bank.Checkpoint, attempt string) error {
	return s.emit(ctx, cp.ID, events.PodsList, function.DerivedID(events.FlowProtect, cp.ID, "list", attempt),
		events.PodsListRequest{Scope: cp.Scope})
}

func (s *Step) listed(ctx context.Context, e event.Event) error {
	id, _ := e.Extensions()[events.ExtCheckpoint].(string)
	if id == "" {
		return function.Permanent(fmt.Errorf("%s without the %s extension: not part of a protect", e.Type(), events.ExtCheckpoint))
	}
	var res events.PodsListedResult
	if err := e.DataAs(&res); err != nil {
		return function.Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return function.Permanent(fmt.Errorf("checkpoint %s does not exist", id))
	}
	if err != nil {
		return err
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
		now := s.now()
		return s.redrive(ctx, cp, batches, func(p bank.Pending) bool { return now.Sub(p.Since) > s.cfg.RedriveAfter }, "")
	}
	if len(batches) == 0 {
		return s.finish(ctx, cp.ID)
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
	typ := events.MetadataSnapshot
	if b.Type == graph.VolumeType {
		typ = events.VolumeBackup
		p := cp.Parameters.Volume
		req.Parameters = &p
	}
	return s.emit(ctx, cp.ID, typ, function.DerivedID(events.FlowProtect, cp.ID, b.Name, typ, attempt), req)
}

func (s *Step) result(ctx context.Context, e event.Event) (*event.Event, error) {
	var res events.StepResult
	if err := e.DataAs(&res); err != nil {
		return nil, function.Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	for _, r := range res.Results {
		if r.Status == events.StatusError {
			if err := s.bank.Fail(ctx, res.Checkpoint, r.Key, r.Reason); err != nil {
				return nil, err
			}
		}
	}
	remaining, err := s.bank.Done(ctx, res.Checkpoint, res.Batch)
	if err != nil || remaining {
		return nil, err
	}
	return nil, s.finish(ctx, res.Checkpoint)
}

// finish records the terminal status and announces it. A redelivered last result
// announces the same outcome again, with the same event id.
func (s *Step) finish(ctx context.Context, id string) error {
	status, failures, err := s.bank.Finish(ctx, id)
	if err != nil {
		return err
	}
	cp, err := s.bank.Checkpoint(ctx, id)
	if err != nil {
		return err
	}
	out := events.CheckpointFinishedResult{Checkpoint: id, Plan: cp.Plan.ID, Status: status}
	if g, err := s.bank.Graph(ctx, id); err == nil {
		out.Resources = len(g.Nodes)
	}
	for _, f := range failures {
		out.Failed = append(out.Failed, events.FailedResource{Key: f.Key, Reason: f.Reason})
	}
	logging.FromContext(ctx).Infow("checkpoint finished", zap.String("checkpoint", id), zap.String("status", status), zap.Int("failed", len(failures)))
	return s.emit(ctx, id, events.CheckpointFinished, function.DerivedID(events.FlowProtect, id, "finished"), out)
}

// tick checks every checkpoint in progress: it asks again for a listing that never came,
// re-sends step requests that have waited longer than RedriveAfter (the progress check of
// a backup is its request, sent again), and fails resources past the deadline.
func (s *Step) tick(ctx context.Context) error {
	ids, err := s.bank.Active(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := s.check(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Step) check(ctx context.Context, id string) error {
	cp, err := s.bank.Checkpoint(ctx, id)
	if err != nil {
		return err
	}
	status, err := s.bank.Status(ctx, id)
	if err != nil {
		return err
	}
	if status != events.StatusProtecting {
		_, _, err := s.bank.Finish(ctx, id) // leaves the active index
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
	return s.redrive(ctx, cp, batches, func(p bank.Pending) bool { return now.Sub(p.Since) > s.cfg.RedriveAfter }, attempt)
}

// failPending fails every resource of the batches still pending past the deadline; a
// result arriving later changes nothing.
func (s *Step) failPending(ctx context.Context, cp *bank.Checkpoint, batches []graph.Batch) error {
	pending, err := s.bank.PendingResources(ctx, cp.ID)
	if err != nil {
		return err
	}
	byName := map[string]graph.Batch{}
	for _, b := range batches {
		byName[b.Name] = b
	}
	reason := fmt.Sprintf("not finished by the checkpoint's deadline %s", cp.Deadline.UTC().Format(time.RFC3339))
	for _, p := range pending {
		for _, r := range byName[p.Batch].Resources {
			if err := s.bank.Fail(ctx, cp.ID, r.Key(), reason); err != nil {
				return err
			}
		}
		if _, err := s.bank.Done(ctx, cp.ID, p.Batch); err != nil {
			return err
		}
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
	byName := make(map[string]graph.Batch, len(batches))
	for _, b := range batches {
		byName[b.Name] = b
	}
	var resend []graph.Batch
	for _, p := range pending {
		if b, ok := byName[p.Batch]; ok && want(p) {
			resend = append(resend, b)
		}
	}
	if len(resend) > 0 {
		logging.FromContext(ctx).Infow("re-driving pending work", zap.String("checkpoint", cp.ID), zap.Int("batches", len(resend)))
	}
	return s.sendAll(ctx, cp, resend, attempt)
}

func (s *Step) emit(ctx context.Context, cp, typ, id string, data any) error {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(events.Source + events.FnChoreographer)
	e.SetTime(s.now().UTC())
	e.SetDataSchema(events.SchemaURL(typ))
	e.SetExtension(events.ExtFlow, events.FlowProtect)
	e.SetExtension(events.ExtCheckpoint, cp)
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	if err := s.sink.Send(ctx, e); err != nil {
		return fmt.Errorf("emit %s for checkpoint %s: %w", typ, cp, err)
	}
	return nil
}
