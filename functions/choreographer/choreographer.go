// Package choreographer is podguard's small, stateless choreographer. From a request or
// a step's result, and what the bank holds, it derives the next events; it never calls a
// step. Three flows:
//
//	protect (protect.go):
//	  protect.requested -> checkpoint (protecting) -> pods.list
//	  pods.listed       -> graph, pending markers  -> metadata.snapshot per batch of pods and of the ConfigMaps, Secrets
//	                       and ServiceAccounts they reference, volume.backup per batch of volumes
//	  *.snapshotted / *.backedup -> marker deleted; when none is left -> available | error, checkpoint.finished
//	restore (restore.go):
//	  restore.requested -> restore (in_progress) -> volume.restore per batch of volumes, and alongside
//	                       pod.recreate per batch of the objects the pods reference
//	  volume.restored / pod.recreated of those -> when every such batch is done -> pod.recreate per batch of pods
//	  pod.recreated     -> when every pod batch is done -> success | fail, restore.finished
//	delete (delete.go):
//	  delete.requested  -> checkpoint deleting -> backup.delete per batch of volumes
//	  backup.deleted    -> when every batch is done -> metadata removed, deleted | error-deleting, checkpoint.deleted
//	schedules (schedules.go):
//	  schedule.set / schedule.delete -> the schedule in the bank
//	  tick -> protect.requested for each schedule's due occurrence, schedule.skipped for missed ones
//	  PingSource firing with a plan -> a protect of that plan, one checkpoint per firing minute
//	tick -> re-drives pending work of every flow (progress checks), fails work past its deadline
//
// Steps work on batches of resources of one type (BATCH_SIZE), so the bank requests and
// events per resource stay small. Each event costs a bounded number of bank operations,
// whatever the size of the operation; only the tick, the start of a restore's pod phase
// and a progress announcement (progress.go: at most once every PROGRESS_INTERVAL per
// operation; the graph is kept from one to the next) read an operation's progress in full.
package choreographer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/openstack"
)

// Accepts are the event types the choreographer handles.
var Accepts = []string{events.ProtectRequested, events.PodsListed, events.MetadataSnapshotted,
	events.VolumeBackedUp, events.RestoreRequested, events.VolumeRestored, events.PodRecreated,
	events.DeleteRequested, events.BackupDeleted, events.Tick, events.PingSourceTick,
	events.ScheduleSet, events.ScheduleDelete}

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
	// RestoreTimeout is how long a restore may stay in progress.
	RestoreTimeout time.Duration `envconfig:"RESTORE_TIMEOUT" default:"6h"`
	// DeleteTimeout is how long the deletion of a checkpoint may take.
	DeleteTimeout time.Duration `envconfig:"DELETE_TIMEOUT" default:"1h"`
	// RedriveAfter: on a tick, a step request older than this is sent again (a progress
	// check for long work, and a cure for lost events).
	RedriveAfter time.Duration `envconfig:"REDRIVE_AFTER" default:"30s"`
	// FanOutWorkers bounds concurrent sends of a fan-out.
	FanOutWorkers int `envconfig:"FANOUT_WORKERS" default:"16"`
	// BatchSize is how many resources of one type a step request carries. Larger batches
	// mean fewer events and bank requests per resource; smaller ones finish in smaller
	// units.
	BatchSize int `envconfig:"BATCH_SIZE" default:"50"`
	// ProgressInterval is the least time between two progress events of one operation
	// (checkpoint.progressed, restore.progressed); the first accepted result of an
	// operation is announced at once.
	ProgressInterval time.Duration `envconfig:"PROGRESS_INTERVAL" default:"5s"`
	// ProtectedNamespaces never receive a restore (as the front door refuses it too,
	// so that a request that reaches the broker otherwise is refused here).
	ProtectedNamespaces []string `envconfig:"RESTORE_PROTECTED_NAMESPACES" default:"kube-system,kube-public,kube-node-lease"`
	// Namespace is podguard's own namespace, protected too (when set).
	Namespace string `envconfig:"POD_NAMESPACE"`
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if c.ProtectTimeout <= 0 || c.ListTimeout <= 0 || c.RestoreTimeout <= 0 || c.DeleteTimeout <= 0 || c.RedriveAfter <= 0 || c.FanOutWorkers <= 0 || c.ProgressInterval <= 0 {
		return errors.New("PROTECT_TIMEOUT, LIST_TIMEOUT, RESTORE_TIMEOUT, DELETE_TIMEOUT, REDRIVE_AFTER, FANOUT_WORKERS and PROGRESS_INTERVAL must be positive")
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
	Take(ctx context.Context, id, batch string) (bool, error)
	Remaining(ctx context.Context, id, prefix string) (bool, error)
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
	Fail(ctx context.Context, id, key, reason string) error
	Finish(ctx context.Context, id string) (bank.Ending, error)
	Active(ctx context.Context) ([]string, error)
	Resent(ctx context.Context, id string, batches []string) error
	SetStatus(ctx context.Context, id, status string) error
	SetStatusAt(ctx context.Context, id, status string, at time.Time) error
	CreateRestore(ctx context.Context, r bank.Restore) (*bank.Restore, error)
	Restore(ctx context.Context, id string) (*bank.Restore, error)
	RemoveCheckpoint(ctx context.Context, id string) error
	// Retention (retention.go).
	ListCheckpoints(ctx context.Context, plan string, limit int, marker string) ([]string, string, error)
	RecordsOf(ctx context.Context, id, prefix string) ([]bank.Record, error)
	PutDeletion(ctx context.Context, d bank.Deletion) error
	Deletion(ctx context.Context, checkpoint string) (*bank.Deletion, error)
}

// ops is the progress of the restores, or of the deletions (bank.Ops).
type ops interface {
	Status(ctx context.Context, id string) (string, error)
	History(ctx context.Context, id string) ([]bank.StatusChange, error)
	SetStatusAt(ctx context.Context, id, status string, at time.Time) error
	AddPending(ctx context.Context, id string, batches []string) error
	MarkFannedOut(ctx context.Context, id, phase string) error
	FannedOut(ctx context.Context, id, phase string) (bool, error)
	PendingResources(ctx context.Context, id string) ([]bank.Pending, error)
	Done(ctx context.Context, id, batch string) (bool, error)
	Take(ctx context.Context, id, batch string) (bool, error)
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
	Remaining(ctx context.Context, id, prefix string) (bool, error)
	Fail(ctx context.Context, id, key, reason string) error
	Records(ctx context.Context, id string) ([]bank.Record, error)
	Failures(ctx context.Context, id string) ([]bank.Failure, error)
	End(ctx context.Context, id, running, ok, failed string) (bank.Ending, error)
	Reset(ctx context.Context, id string) error
	Activate(ctx context.Context, id string) error
	Active(ctx context.Context) ([]string, error)
	Resent(ctx context.Context, id string, batches []string) error
}

// Step is the choreographer.
type Step struct {
	bank      store
	restores  ops
	deletions ops
	// schedules is nil when the store keeps no schedules (test doubles).
	schedules scheduleStore
	sink      function.Sender
	cfg       Config
	now       func() time.Time
	workers   int

	// plans is where stored plans are found (retention.go); nil when the store keeps none.
	plans storedPlans
	// metrics are told what happens to operations (metrics.go).
	metrics *observe.Metrics
	// telemetry traces the work a tick does for an operation in the operation's trace.
	telemetry *observe.Telemetry
	// tallies is where progress is read (progress.go); nil when the store cannot say.
	tallies tallies
	// gate limits the progress events of each operation.
	gate *progressGate
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
	s := NewStep(b, b.Restores(), b.Deletions(), sink, *cfg, time.Now)
	s.SetTelemetry(observe.FromContext(ctx))
	return s, nil
}

// SetTelemetry makes the choreographer report to t (NewStep's reports go nowhere).
func (s *Step) SetTelemetry(t *observe.Telemetry) { s.telemetry, s.metrics = t, t.Metrics }

// NewStep builds the choreographer from its dependencies: the bank, the progress of
// restores and of deletions, and where to send events.
func NewStep(b store, restores, deletions ops, sink function.Sender, cfg Config, now func() time.Time) *Step {
	if cfg.FanOutWorkers <= 0 {
		cfg.FanOutWorkers = 16
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 50
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 5 * time.Second
	}
	sched, _ := b.(scheduleStore)
	plans, _ := b.(storedPlans)
	t := observe.Noop()
	tl, _ := b.(tallies)
	return &Step{bank: b, restores: restores, deletions: deletions, schedules: sched, plans: plans, sink: sink, cfg: cfg, now: now, workers: cfg.FanOutWorkers,
		metrics: t.Metrics, telemetry: t, tallies: tl, gate: newProgressGate(cfg.ProgressInterval, gateSize)}
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
	case events.RestoreRequested:
		return nil, s.restore(ctx, e)
	case events.VolumeRestored, events.PodRecreated:
		return nil, s.restoreResult(ctx, e)
	case events.DeleteRequested:
		return nil, s.delete(ctx, e)
	case events.BackupDeleted:
		return nil, s.deleteResult(ctx, e)
	case events.Tick:
		return nil, s.tick(ctx)
	case events.PingSourceTick:
		return nil, s.ping(ctx, e)
	case events.ScheduleSet:
		return s.setSchedule(ctx, e)
	case events.ScheduleDelete:
		return s.deleteSchedule(ctx, e)
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not handled by the choreographer", e.Type()))
}

// emit sends an event of a flow about an operation (a checkpoint, or a restore).
func (s *Step) emit(ctx context.Context, flow, op, typ, id string, data any) error {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(ownSource)
	e.SetTime(s.now().UTC())
	e.SetDataSchema(events.SchemaURL(typ))
	e.SetExtension(events.ExtFlow, flow)
	e.SetExtension(events.ExtCheckpoint, op)
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	if err := s.sink.Send(ctx, e); err != nil {
		return fmt.Errorf("emit %s for %s %s: %w", typ, flow, op, err)
	}
	return nil
}

// tick checks every operation in progress: checkpoints being protected, restores and
// deletions; and runs the schedules' due occurrences.
func (s *Step) tick(ctx context.Context) error {
	errs := []error{s.runSchedules(ctx)}
	for _, kind := range []struct {
		name   string
		kind   string
		active func(context.Context) ([]string, error)
		check  func(context.Context, string) error
		times  func(context.Context, string) (time.Time, time.Time, error)
	}{
		{"checkpoint", observe.Protect, s.bank.Active, s.check, s.checkpointTimes},
		{"restore", observe.Restore, s.restores.Active, s.checkRestore, s.restoreTimes},
		{"deletion of checkpoint", observe.Delete, s.deletions.Active, s.checkDeletion, s.deletionTimes},
	} {
		ids, err := kind.active(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.inFlight(ctx, kind.kind, ids, kind.times)
		for _, id := range ids {
			if err := kind.check(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", kind.name, id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// sendBatches sends one request per batch with bounded concurrency.
func (s *Step) sendBatches(ctx context.Context, batches []graph.Batch, send func(context.Context, graph.Batch) error) error {
	return batch.Each(ctx, batches, s.workers, send)
}

// resend sends the requests of pending batches again and records it, so that the next
// tick waits RedriveAfter before sending them once more (a step still working on a
// batch is not flooded with copies of its request).
func (s *Step) resend(ctx context.Context, flow string, r interface {
	Resent(ctx context.Context, id string, batches []string) error
}, id string, batches []graph.Batch, send func() error) error {
	if len(batches) == 0 {
		return nil
	}
	if err := send(); err != nil {
		return err
	}
	for _, b := range batches {
		s.metrics.Retried(ctx, requestType(flow, b.Type), 1)
	}
	return r.Resent(ctx, id, names(batches))
}

// requestType is the type of the step request of a flow for a batch of typ.
func requestType(flow, typ string) string {
	switch {
	case flow == events.FlowProtect && typ == graph.VolumeType:
		return events.VolumeBackup
	case flow == events.FlowProtect:
		return events.MetadataSnapshot // pods, and the objects they reference
	case flow == events.FlowRestore && typ == graph.VolumeType:
		return events.VolumeRestore
	case flow == events.FlowRestore:
		return events.PodRecreate // pods, and before them the objects they reference
	}
	return events.BackupDelete
}

// stale selects the pending batches whose request waited longer than RedriveAfter.
func (s *Step) stale(now time.Time) func(bank.Pending) bool {
	return func(p bank.Pending) bool { return now.Sub(p.Since) > s.cfg.RedriveAfter }
}

// pendingBatches returns the batches among all that are pending and selected by want.
func pendingBatches(all []graph.Batch, pending []bank.Pending, want func(bank.Pending) bool) []graph.Batch {
	byName := make(map[string]graph.Batch, len(all))
	for _, b := range all {
		byName[b.Name] = b
	}
	var out []graph.Batch
	for _, p := range pending {
		if b, ok := byName[p.Batch]; ok && want(p) {
			out = append(out, b)
		}
	}
	return out
}

// all selects every pending batch.
func all(bank.Pending) bool { return true }

// failUnfinished fails every resource of the unfinished batches with reason, then marks
// the pending batches done, so that a result arriving later changes nothing.
func failUnfinished(ctx context.Context, o interface {
	Fail(ctx context.Context, id, key, reason string) error
	Done(ctx context.Context, id, batch string) (bool, error)
}, id string, unfinished []graph.Batch, pending []bank.Pending, reason string) error {
	for _, b := range unfinished {
		for _, r := range b.Resources {
			if err := o.Fail(ctx, id, r.Key(), reason); err != nil {
				return err
			}
		}
	}
	for _, p := range pending {
		if _, err := o.Done(ctx, id, p.Batch); err != nil {
			return err
		}
	}
	return nil
}

// ofType keeps the batches of one resource type.
func ofType(bs []graph.Batch, typ string) []graph.Batch {
	var out []graph.Batch
	for _, b := range bs {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// eventTime is when a request was made: the event's time, which racing duplicates
// share, else now.
func (s *Step) eventTime(e event.Event) time.Time {
	if t := e.Time().UTC(); !t.IsZero() {
		return t
	}
	return s.now().UTC()
}
