package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// Concurrency. Swift has no transactions, so the layout never needs read-modify-write:
//   - the checkpoint index, the graph, the fan-out marker and each failure record are
//     written create-only (If-None-Match: *). Swift refuses such a write when the object
//     already exists, which stops every redelivery that comes after the first write. It
//     does not serialize writers racing in the same instant (the check is made when the
//     PUT starts), so what is written create-only is derived from the request alone:
//     racing duplicates of one event write identical content and lose nothing;
//   - a status change is a new object under status/, named by time: nothing is
//     overwritten, the newest marker is the current status;
//   - a batch's record is written only by the step that owns the batch; a
//     redelivered step request rewrites the same content;
//   - external work that no write can make exclusive (a Cinder backup started by two
//     racing deliveries) is converged by its step: it keeps one and deletes the others;
//   - completion is detected without counters: each batch has a pending marker,
//     deleted when its result arrives; the checkpoint is complete when a listing of
//     pending/ with limit 1 comes back empty. Two racing "last" results both see it
//     empty and write the same terminal status, which is harmless.

// ErrExists is returned by create-only writes when the object already exists.
var ErrExists = errors.New("already exists in the bank")

// Checkpoint is a checkpoint's index.
type Checkpoint struct {
	ID         string            `json:"id"`
	Plan       PlanRef           `json:"plan"`
	Project    string            `json:"project,omitempty"`
	Provider   string            `json:"provider"`
	CreatedAt  time.Time         `json:"created_at"`
	Deadline   time.Time         `json:"deadline"`
	Scope      events.Scope      `json:"scope"`
	Parameters events.Parameters `json:"parameters"`
	// BatchSize is how many resources one step request carries (see graph.Batches).
	BatchSize int `json:"batch_size"`
	// Trace is the W3C traceparent of the protect's trace, which work done for it later
	// (a tick's re-drive) joins; empty when tracing was off.
	Trace string `json:"trace,omitempty"`
	// RequestedBy is who asked for the checkpoint: the caller the front door
	// authenticated (events.ExtCaller), or the choreographer's own reason for a protect
	// it started ("schedule <id>", "schedule of plan <id>", "pingsource <source>"); empty
	// when the request named no one, and in checkpoints made before it was recorded. The
	// index is written create-only, so the first request's wins.
	RequestedBy string `json:"requested_by,omitempty"`
}

// PlanRef names the plan a checkpoint was made for.
type PlanRef struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	// Retention is the retention policy of the plan as stored (by its schedules) when
	// the checkpoint was made, for users to read; nil when none was stored. Retention
	// never reads it: the policy in force is always read from the stored plan.
	Retention *events.Retention `json:"retention,omitempty"`
}

// StatusChange is one status a checkpoint reached.
type StatusChange struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// Record is what a step saved for one batch of resources: each resource's status and,
// when available, what restoring it needs (saved definitions of a pod, or a volume's
// backup).
type Record struct {
	Batch     string                    `json:"batch"`
	UpdatedAt time.Time                 `json:"updated_at"`
	Resources map[string]ResourceRecord `json:"resources"`
}

// ResourceRecord is one resource's part of a record.
type ResourceRecord struct {
	Status string          `json:"status"`
	Reason string          `json:"reason,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Pending is a batch that has not finished.
type Pending struct {
	Batch string
	Since time.Time
}

// Failure is a resource that ended in error, and why.
type Failure struct {
	Key    string    `json:"key"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func isStatus(err error, code int) bool {
	var se *swift.Error
	return errors.As(err, &se) && se.StatusCode == code
}

// putJSON writes v at name; createOnly refuses to replace an existing object.
func (b *Bank) putJSON(ctx context.Context, name string, v any, createOnly bool) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	var h swift.Headers
	if createOnly {
		h = swift.Headers{"If-None-Match": "*"}
	}
	err = b.retry(ctx, func() error {
		_, err := b.store.ObjectPut(ctx, b.container, name, bytes.NewReader(data), false, "", "application/json", h)
		return err
	})
	if createOnly && isStatus(err, http.StatusPreconditionFailed) {
		return fmt.Errorf("put %s/%s: %w", b.container, name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put %s/%s: %w", b.container, name, err)
	}
	return nil
}

func (b *Bank) getJSON(ctx context.Context, name string, v any) error {
	var data []byte
	err := b.retry(ctx, func() error {
		var err error
		data, err = b.store.ObjectGetBytes(ctx, b.container, name)
		return err
	})
	if errors.Is(err, swift.ObjectNotFound) {
		return fmt.Errorf("get %s/%s: %w", b.container, name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("get %s/%s: %w", b.container, name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", b.container, name, err)
	}
	return nil
}

// remove deletes an object; one that is already gone counts as deleted.
func (b *Bank) remove(ctx context.Context, name string) error {
	err := b.retry(ctx, func() error { return b.store.ObjectDelete(ctx, b.container, name) })
	if err != nil && !errors.Is(err, swift.ObjectNotFound) {
		return fmt.Errorf("delete %s/%s: %w", b.container, name, err)
	}
	return nil
}

func (b *Bank) list(ctx context.Context, opts *swift.ObjectsOpts) ([]swift.Object, error) {
	var objs []swift.Object
	err := b.retry(ctx, func() error {
		var err error
		objs, err = b.store.Objects(ctx, b.container, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/%s*: %w", b.container, opts.Prefix, err)
	}
	return objs, nil
}

// listAll pages through every object under prefix.
func (b *Bank) listAll(ctx context.Context, prefix string) ([]swift.Object, error) {
	var all []swift.Object
	opts := &swift.ObjectsOpts{Prefix: prefix, Limit: 10000}
	for {
		page, err := b.list(ctx, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < opts.Limit {
			return all, nil
		}
		opts.Marker = page[len(page)-1].Name
	}
}

// readAll reads every JSON object under prefix, in name order; objects removed since the
// listing (with their operation) are skipped.
func readAll[T any](ctx context.Context, b *Bank, prefix string) ([]T, error) {
	objs, err := b.listAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, obj := range objs {
		var v T
		if err := b.getJSON(ctx, obj.Name, &v); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// retry repeats an idempotent operation once when the connection broke (the Swift proxy
// closes the connection after answering 412, and a PUT on it is not retried by the
// client).
func (b *Bank) retry(ctx context.Context, op func() error) error {
	err := op()
	if err == nil || ctx.Err() != nil {
		return err
	}
	var se *swift.Error
	if errors.As(err, &se) || errors.Is(err, swift.ObjectNotFound) || errors.Is(err, swift.ContainerNotFound) {
		return err // the server answered: not a broken connection
	}
	return op()
}

// CreateCheckpoint writes a new checkpoint's index, its first status (protecting) and
// its index entries, and returns the checkpoint as stored. When the index already exists
// (a redelivered request) the stored one wins and the other writes are completed, so a
// request that failed half-way finishes the job on redelivery.
func (b *Bank) CreateCheckpoint(ctx context.Context, cp Checkpoint) (*Checkpoint, error) {
	err := b.putJSON(ctx, b.layout.CheckpointIndex(cp.ID), cp, true)
	if errors.Is(err, ErrExists) {
		stored, gerr := b.Checkpoint(ctx, cp.ID)
		if gerr != nil {
			return nil, gerr
		}
		cp = *stored
	} else if err != nil {
		return nil, err
	}
	if err := b.setStatus(ctx, cp.ID, events.StatusProtecting, cp.CreatedAt); err != nil {
		return nil, err
	}
	for _, name := range []string{
		b.layout.AllIndex(cp.ID, cp.CreatedAt),
		b.layout.PlanIndex(cp.Plan.ID, cp.ID, cp.CreatedAt),
		b.layout.DateIndex(cp.ID, cp.CreatedAt),
		b.layout.Active(CheckpointOp(cp.ID)),
	} {
		if err := b.putJSON(ctx, name, map[string]string{"checkpoint": cp.ID}, false); err != nil {
			return nil, err
		}
	}
	return &cp, nil
}

// Checkpoint reads a checkpoint's index.
func (b *Bank) Checkpoint(ctx context.Context, id string) (*Checkpoint, error) {
	var cp Checkpoint
	if err := b.getJSON(ctx, b.layout.CheckpointIndex(id), &cp); err != nil {
		return nil, err
	}
	return &cp, nil
}

// PutGraph stores a checkpoint's graph, create-only: ErrExists when it is already stored.
func (b *Bank) PutGraph(ctx context.Context, id string, g *graph.Graph) error {
	return b.putJSON(ctx, b.layout.Graph(id), g, true)
}

// Graph reads a checkpoint's graph.
func (b *Bank) Graph(ctx context.Context, id string) (*graph.Graph, error) {
	var g graph.Graph
	if err := b.getJSON(ctx, b.layout.Graph(id), &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// Finish ends the protect of a checkpoint: available when no resource failed, else
// error (unless it ended before); it leaves the active index.
func (b *Bank) Finish(ctx context.Context, id string) (Ending, error) {
	return b.End(ctx, id, events.StatusProtecting, events.StatusAvailable, events.StatusError)
}

// ListCheckpoints returns checkpoint ids of a plan ("" for every plan, by date), newest
// first, up to limit, after marker (an id from a previous page's next).
func (b *Bank) ListCheckpoints(ctx context.Context, plan string, limit int, marker string) (ids []string, next string, err error) {
	prefix := b.layout.AllIndexPrefix()
	if plan != "" {
		prefix = b.layout.PlanIndexPrefix(plan)
	}
	return b.indexPage(ctx, prefix, limit, marker)
}

// indexPage reads a page of an index whose entries end in _<id>: the ids, newest first,
// up to limit, after marker, and the marker of the next page ("" at the end). An id
// indexed twice (racing duplicates of a request, each at its own time) is listed once.
func (b *Bank) indexPage(ctx context.Context, prefix string, limit int, marker string) (ids []string, next string, err error) {
	objs, err := b.list(ctx, &swift.ObjectsOpts{Prefix: prefix, Limit: limit + 1, Marker: marker})
	if err != nil {
		return nil, "", err
	}
	seen := map[string]bool{}
	for i, o := range objs {
		if i == limit {
			next = objs[i-1].Name
			break
		}
		if id := b.layout.CheckpointOfIndex(o.Name); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, next, nil
}
