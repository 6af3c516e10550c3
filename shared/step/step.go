// Package step is the skeleton every batch step shares. A step request is a pointer: it
// names an operation (a checkpoint being protected, a restore, the deletion of a
// checkpoint) and one of its batches. The Runner loads both from the bank and refuses,
// with a permanent error (400) that gives the reason, a request that disagrees with them:
// an operation or batch that does not exist, resources that are not the batch's, options
// or a deadline other than those recorded, an operation not in the status the step needs.
// Nothing is done for a request refused. A batch already recorded is answered from its
// record (a late duplicate changes nothing); otherwise the step's Work settles the batch,
// and once every resource is settled the record is written and the result returned.
//
//	r := step.New(b, time.Now)
//	func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
//		return s.runner.Protect(ctx, e, kind, s.work)
//	}
package step

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

// Kind says what a step works on and what it answers.
type Kind struct {
	// Step is the step's name, in reasons: "back-up-volume".
	Step string
	// Types are the resource types of the batches it takes; its Work sees which one a
	// batch holds (Job.Batch.Type).
	Types []string
	// Reply is the type of its result event.
	Reply string
}

// takes reports whether the step takes batches of resources of type typ.
func (k Kind) takes(typ string) bool { return slices.Contains(k.Types, typ) }

// Job is a step request as the bank records it: what the step acts on, never the event's
// word for it.
type Job struct {
	Checkpoint *bank.Checkpoint
	// Restore is the restore of a restore step; nil otherwise.
	Restore *bank.Restore
	Batch   graph.Batch
	// Deadline is the operation's.
	Deadline time.Time
	// Saved is the checkpoint's record of the batch, for the restore and delete steps
	// (empty when the checkpoint recorded nothing for it).
	Saved *bank.Record
	// Volumes maps, for the pods of a restore, each original Cinder volume id to the
	// volume restored from its backup, as the restore-volume records say; a volume that
	// was not restored is absent.
	Volumes map[string]string
	// Dependencies are, for the pods of a restore, the restore's records of the
	// ConfigMaps, Secrets and ServiceAccounts each pod references: by pod key, then by
	// the object's key.
	Dependencies map[string]map[string]bank.ResourceRecord

	mu       sync.Mutex
	recorded []func()
}

// WhenRecorded runs f once the batch's record is written, if this request writes it
// first: what counts once per resource (a metric of a Cinder backup's end) is counted by
// the request that settled it, not again by a duplicate that raced it.
func (j *Job) WhenRecorded(f func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recorded = append(j.recorded, f)
}

// PastDeadline reports whether the operation's deadline has passed at now.
func (j *Job) PastDeadline(now time.Time) bool { return !j.Deadline.IsZero() && now.After(j.Deadline) }

// Work settles a job's batch: each resource's record, keyed by resource key, and done
// false while any resource is still in progress (the request comes again later).
type Work func(ctx context.Context, j *Job) (settled map[string]bank.ResourceRecord, done bool, err error)

// Each is Work done resource by resource, up to workers at once; the batch is done once
// every resource is.
func Each(workers int, fn func(ctx context.Context, j *Job, r graph.Resource) (bank.ResourceRecord, bool, error)) Work {
	return func(ctx context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
		settled, inProgress, err := batch.Settle(ctx, j.Batch.Resources, workers, func(ctx context.Context, r graph.Resource) (bank.ResourceRecord, bool, error) {
			return fn(ctx, j, r)
		})
		return settled, err == nil && inProgress == 0, err
	}
}

// checkpoints is what the Runner reads of checkpoints and restores.
type checkpoints interface {
	Batches(ctx context.Context, checkpoint string) (*bank.Batches, error)
	Restore(ctx context.Context, id string) (*bank.Restore, error)
	Deletion(ctx context.Context, checkpoint string) (*bank.Deletion, error)
}

// progress is the progress of the operations of one kind (bank.Ops).
type progress interface {
	Status(ctx context.Context, id string) (string, error)
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
	PutRecordFirst(ctx context.Context, id string, r bank.Record) (bool, error)
}

// Runner runs steps against the bank.
type Runner struct {
	bank                             checkpoints
	checkpoints, restores, deletions progress
	now                              func() time.Time
}

// New is a Runner on a bank.
func New(b *bank.Bank, now func() time.Time) *Runner {
	return &Runner{bank: b, checkpoints: b.Checkpoints(), restores: b.Restores(), deletions: b.Deletions(), now: now}
}

// op is the operation a request names, as the Runner checks it.
type op struct {
	kind     string // "checkpoint", "restore", "deletion of checkpoint": in reasons
	id       string
	progress progress
	want     string // the status the step needs
	// prepare completes the job once the request is known to be new work.
	prepare func(ctx context.Context, j *Job) error
}

// Protect runs a step of the protect of a checkpoint (events.StepRequest): its batch is
// recorded in the checkpoint, which must be protecting.
func (r *Runner) Protect(ctx context.Context, e event.Event, k Kind, work Work) (*event.Event, error) {
	req, bs, b, err := r.stepRequest(ctx, e, k)
	if err != nil {
		return nil, err
	}
	cp := bs.Checkpoint
	if b.Type == graph.VolumeType && req.Parameters != nil && *req.Parameters != cp.Parameters.Volume {
		return nil, function.Permanent(fmt.Errorf("/parameters: %s options differ from those checkpoint %s recorded", graph.VolumeType, cp.ID))
	}
	if err := sameDeadline(req.Deadline, cp.Deadline, "checkpoint", cp.ID); err != nil {
		return nil, err
	}
	j := &Job{Checkpoint: cp, Batch: b, Deadline: cp.Deadline}
	o := op{kind: "checkpoint", id: cp.ID, progress: r.checkpoints, want: events.StatusProtecting}
	return r.run(ctx, k, o, j, work, stepResult(cp.ID, b))
}

// Delete runs a step of the deletion of a checkpoint (events.StepRequest): its batch is
// recorded in the deletion, which must be deleting, as must the checkpoint.
func (r *Runner) Delete(ctx context.Context, e event.Event, k Kind, work Work) (*event.Event, error) {
	req, bs, b, err := r.stepRequest(ctx, e, k)
	if err != nil {
		return nil, err
	}
	cp := bs.Checkpoint
	d, err := r.bank.Deletion(ctx, cp.ID)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, function.Permanent(fmt.Errorf("/checkpoint: no deletion of checkpoint %s is recorded", cp.ID))
	}
	if err != nil {
		return nil, err
	}
	// The deletion's recorded deadline is the one worked to, whatever the request says:
	// racing requests that start one attempt each record theirs, a few milliseconds apart,
	// so the request's may differ from the one that stayed.
	deadline := d.Deadline
	if deadline.IsZero() {
		deadline = req.Deadline // a deletion recorded before deletions had a deadline
	}
	j := &Job{Checkpoint: cp, Batch: b, Deadline: deadline}
	o := op{kind: "deletion of checkpoint", id: cp.ID, progress: r.deletions, want: events.StatusDeleting,
		prepare: func(ctx context.Context, j *Job) error {
			if err := r.needStatus(ctx, "checkpoint", cp.ID, r.checkpoints, events.StatusDeleting, k); err != nil {
				return err
			}
			return r.saved(ctx, j)
		}}
	return r.run(ctx, k, o, j, work, stepResult(cp.ID, b))
}

// Restore runs a step of a restore (events.RestoreStepRequest): its batch, a batch of
// the restored checkpoint, is recorded in the restore, which must be in progress. The
// pods of a batch are restored only once the batches of their volumes and of the objects
// they reference are recorded.
func (r *Runner) Restore(ctx context.Context, e event.Event, k Kind, work Work) (*event.Event, error) {
	var req events.RestoreStepRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	rs, err := r.bank.Restore(ctx, req.Restore)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, function.Permanent(fmt.Errorf("/restore: restore %s does not exist", req.Restore))
	}
	if err != nil {
		return nil, err
	}
	if len(req.Volumes) > 0 {
		// The choreographer never names them: they are read from the restore-volume records.
		return nil, function.Permanent(fmt.Errorf("/volumes: the restored volumes are those restore %s recorded; a request does not name them", rs.ID))
	}
	if req.Checkpoint != rs.Checkpoint {
		return nil, function.Permanent(fmt.Errorf("/checkpoint: restore %s restores checkpoint %s, not %s", rs.ID, rs.Checkpoint, req.Checkpoint))
	}
	bs, b, err := r.batch(ctx, rs.Checkpoint, req.Batch, req.Resources, k)
	if err != nil {
		return nil, err
	}
	if !sameJSON(req.Parameters, rs.Parameters) {
		return nil, function.Permanent(fmt.Errorf("/parameters: differ from those restore %s recorded", rs.ID))
	}
	if err := sameDeadline(req.Deadline, rs.Deadline, "restore", rs.ID); err != nil {
		return nil, err
	}
	j := &Job{Checkpoint: bs.Checkpoint, Restore: rs, Batch: b, Deadline: rs.Deadline}
	o := op{kind: "restore", id: rs.ID, progress: r.restores, want: events.RestoreInProgress,
		prepare: func(ctx context.Context, j *Job) error {
			if err := r.saved(ctx, j); err != nil {
				return err
			}
			if b.Type != graph.PodType {
				return nil
			}
			return r.restoredChildren(ctx, bs, rs.ID, j)
		}}
	return r.run(ctx, k, o, j, work, func(rec *bank.Record) any {
		return events.RestoreStepResult{Restore: rs.ID, Batch: b.Name, Results: results(b, rec)}
	})
}

// stepRequest decodes a step request of a checkpoint's batch (protect and delete
// steps) and reads the batch it names.
func (r *Runner) stepRequest(ctx context.Context, e event.Event, k Kind) (events.StepRequest, *bank.Batches, graph.Batch, error) {
	var req events.StepRequest
	if err := function.Decode(e, &req); err != nil {
		return req, nil, graph.Batch{}, err
	}
	bs, b, err := r.batch(ctx, req.Checkpoint, req.Batch, req.Resources, k)
	return req, bs, b, err
}

// stepResult is the reply of a protect or delete step for a batch.
func stepResult(checkpoint string, b graph.Batch) func(*bank.Record) any {
	return func(rec *bank.Record) any {
		return events.StepResult{Checkpoint: checkpoint, Batch: b.Name, Results: results(b, rec)}
	}
}

// run answers a batch already recorded from its record; otherwise, with the operation
// in the status the step needs, it does the work and records it once settled.
func (r *Runner) run(ctx context.Context, k Kind, o op, j *Job, work Work, reply func(*bank.Record) any) (*event.Event, error) {
	if rec, err := o.progress.Record(ctx, o.id, j.Batch.Name); err == nil {
		return function.Reply(k.Reply, reply(rec))
	} else if !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	if err := r.needStatus(ctx, o.kind, o.id, o.progress, o.want, k); err != nil {
		return nil, err
	}
	if o.prepare != nil {
		if err := o.prepare(ctx, j); err != nil {
			return nil, err
		}
	}
	settled, done, err := work(ctx, j)
	if err != nil || !done {
		return nil, err
	}
	rec := bank.Record{Batch: j.Batch.Name, UpdatedAt: r.now().UTC(), Resources: settled}
	first, err := o.progress.PutRecordFirst(ctx, o.id, rec)
	if err != nil {
		return nil, err
	}
	if !first { // a racing duplicate settled the batch first: its record stands
		stored, err := o.progress.Record(ctx, o.id, j.Batch.Name)
		if err != nil {
			return nil, err
		}
		return function.Reply(k.Reply, reply(stored))
	}
	j.mu.Lock()
	hooks := j.recorded
	j.mu.Unlock()
	for _, f := range hooks {
		f()
	}
	return function.Reply(k.Reply, reply(&rec))
}

// needStatus refuses work on an operation that is not in the status want.
func (r *Runner) needStatus(ctx context.Context, kind, id string, p progress, want string, k Kind) error {
	status, err := p.Status(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return function.Permanent(fmt.Errorf("%s %s has no status: %s does not work on it", kind, id, k.Step))
	}
	if err != nil {
		return err
	}
	if status != want {
		return function.Permanent(fmt.Errorf("%s %s is %s: %s works only on a %s one", kind, id, status, k.Step, want))
	}
	return nil
}

// batch reads a checkpoint cut into batches, and the batch a request names, checked
// against the resources it lists; a checkpoint that does not exist, or has no graph, is
// refused.
func (r *Runner) batch(ctx context.Context, checkpoint, name string, resources []graph.Resource, k Kind) (*bank.Batches, graph.Batch, error) {
	bs, err := r.bank.Batches(ctx, checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, graph.Batch{}, function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s does not exist or has no resources listed", checkpoint))
	}
	if err != nil {
		return nil, graph.Batch{}, err
	}
	b, err := batchOf(bs, name, resources, k)
	return bs, b, err
}

// saved reads the checkpoint's record of the job's batch.
func (r *Runner) saved(ctx context.Context, j *Job) error {
	rec, err := r.checkpoints.Record(ctx, j.Checkpoint.ID, j.Batch.Name)
	switch {
	case errors.Is(err, bank.ErrNotFound):
		j.Saved = &bank.Record{Batch: j.Batch.Name}
	case err != nil:
		return err
	default:
		j.Saved = rec
	}
	return nil
}

// restoredChildren reads the restore's records of what the pods of a job depend on: the
// restored volume of each of their Cinder volumes (Job.Volumes), and the record of each
// ConfigMap, Secret and ServiceAccount they reference (Job.Dependencies). A batch not
// recorded yet means the phase that restores it has not ended: the pods must wait.
func (r *Runner) restoredChildren(ctx context.Context, bs *bank.Batches, restore string, j *Job) error {
	j.Volumes, j.Dependencies = map[string]string{}, map[string]map[string]bank.ResourceRecord{}
	records := map[string]*bank.Record{}
	for _, pod := range j.Batch.Resources {
		for _, child := range bs.Children(pod.Key()) {
			name, ok := bs.Of(child)
			if !ok {
				continue
			}
			typ, _, _ := graph.SplitKey(child)
			rec, read := records[name]
			if !read {
				var err error
				rec, err = r.restores.Record(ctx, restore, name)
				if errors.Is(err, bank.ErrNotFound) {
					return function.Permanent(fmt.Errorf("batch %s of restore %s is not recorded: pods are recreated once their volumes and the objects they reference are restored", name, restore))
				}
				if err != nil {
					return err
				}
				records[name] = rec
			}
			rr := rec.Resources[child]
			if graph.IsDependency(typ) {
				if j.Dependencies[pod.Key()] == nil {
					j.Dependencies[pod.Key()] = map[string]bank.ResourceRecord{}
				}
				j.Dependencies[pod.Key()][child] = rr
				continue
			}
			var v checkpoint.RestoredVolume
			if rr.Status != events.StatusAvailable || json.Unmarshal(rr.Data, &v) != nil || v.VolumeID == "" || v.OriginalID == "" {
				continue // a volume not restored
			}
			j.Volumes[v.OriginalID] = v.VolumeID
		}
	}
	return nil
}

// batchOf is the checkpoint's batch a request names, checked against the resources the
// request lists and the type the step works on.
func batchOf(bs *bank.Batches, name string, resources []graph.Resource, k Kind) (graph.Batch, error) {
	b, ok := bs.Batch(name)
	if !ok {
		return graph.Batch{}, function.Permanent(fmt.Errorf("/batch: checkpoint %s has no batch %s", bs.Checkpoint.ID, name))
	}
	if !k.takes(b.Type) {
		return graph.Batch{}, function.Permanent(fmt.Errorf("/batch: batch %s of checkpoint %s holds %s; %s works on %s", name, bs.Checkpoint.ID, b.Type, k.Step, strings.Join(k.Types, ", ")))
	}
	in := make(map[string]graph.Resource, len(b.Resources))
	for _, r := range b.Resources {
		in[r.Key()] = r
	}
	for i, r := range resources {
		if want, ok := in[r.Key()]; !ok || want.Name != r.Name {
			return graph.Batch{}, function.Permanent(fmt.Errorf("/resources/%d: %s %q is not in batch %s of checkpoint %s", i, r.Key(), r.Name, name, bs.Checkpoint.ID))
		}
	}
	if len(resources) != len(b.Resources) {
		return graph.Batch{}, function.Permanent(fmt.Errorf("/resources: %d resources named; batch %s of checkpoint %s holds %d", len(resources), name, bs.Checkpoint.ID, len(b.Resources)))
	}
	return b, nil
}

// sameDeadline refuses a deadline other than the operation's (none given is the
// operation's).
func sameDeadline(got, recorded time.Time, kind, id string) error {
	if got.IsZero() || got.Equal(recorded) {
		return nil
	}
	return function.Permanent(fmt.Errorf("/deadline: %s is not the deadline %s %s recorded (%s)", got.UTC().Format(time.RFC3339Nano), kind, id, recorded.UTC().Format(time.RFC3339Nano)))
}

// sameJSON compares two values as JSON (an empty map and none are the same).
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// results is a record's outcome of each resource of the batch, in the batch's order.
func results(b graph.Batch, rec *bank.Record) []events.ResourceResult {
	out := make([]events.ResourceResult, 0, len(b.Resources))
	for _, res := range b.Resources {
		rr := rec.Resources[res.Key()]
		out = append(out, events.ResourceResult{Key: res.Key(), Status: rr.Status, Reason: rr.Reason})
	}
	return out
}
