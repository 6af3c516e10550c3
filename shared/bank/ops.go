package bank

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ncw/swift/v2"
)

// Ops tracks the progress of operations of one kind (checkpoints, restores or
// deletions), each by id: status markers, per-batch records, pending markers, failures.
// Bank embeds the checkpoints' Ops; Restores and Deletions return the others.
type Ops struct {
	b    *Bank
	kind string
}

// Restores tracks restores.
func (b *Bank) Restores() *Ops { return &Ops{b: b, kind: KindRestores} }

// Deletions tracks deletions of checkpoints (by checkpoint id).
func (b *Bank) Deletions() *Ops { return &Ops{b: b, kind: KindDeletions} }

func (o *Ops) op(id string) Op { return Op{Kind: o.kind, ID: id} }

// SetStatus records a new status of an operation.
func (o *Ops) SetStatus(ctx context.Context, id, status string) error {
	return o.setStatus(ctx, id, status, o.b.now().UTC())
}

func (o *Ops) setStatus(ctx context.Context, id, status string, at time.Time) error {
	return o.b.putJSON(ctx, o.b.layout.StatusMarker(o.op(id), at, status), StatusChange{Status: status, At: at}, false)
}

// History returns every status an operation reached, oldest first; the last is current.
func (o *Ops) History(ctx context.Context, id string) ([]StatusChange, error) {
	objs, err := o.b.listAll(ctx, o.b.layout.StatusPrefix(o.op(id)))
	if err != nil {
		return nil, err
	}
	var h []StatusChange
	for _, obj := range objs {
		at, status, ok := o.b.layout.ParseStatusMarker(obj.Name)
		// Racing duplicates of the last event of an operation may each record its end:
		// a status repeated in a row was reached once, at its first marker.
		if ok && (len(h) == 0 || h[len(h)-1].Status != status) {
			h = append(h, StatusChange{Status: status, At: at})
		}
	}
	return h, nil
}

// Status is an operation's current status; ErrNotFound when it has none.
func (o *Ops) Status(ctx context.Context, id string) (string, error) {
	h, err := o.History(ctx, id)
	if err != nil {
		return "", err
	}
	if len(h) == 0 {
		return "", fmt.Errorf("status of %s %s: %w", o.kind, id, ErrNotFound)
	}
	return h[len(h)-1].Status, nil
}

// MarkFannedOut records, create-only, that the pending markers of a phase of an
// operation exist and its step requests may be sent; ErrExists when already recorded.
// The protect of a checkpoint has one phase, "".
func (o *Ops) MarkFannedOut(ctx context.Context, id, phase string) error {
	return o.b.putJSON(ctx, o.b.layout.FanOut(o.op(id), phase), map[string]time.Time{"at": o.b.now().UTC()}, true)
}

// FannedOut reports whether the fan-out of a phase was recorded.
func (o *Ops) FannedOut(ctx context.Context, id, phase string) (bool, error) {
	var v map[string]time.Time
	err := o.b.getJSON(ctx, o.b.layout.FanOut(o.op(id), phase), &v)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// AddPending creates the pending markers of batches in one request (Swift's bulk upload
// of a tar archive), so the fan-out of a large operation costs one round trip.
func (o *Ops) AddPending(ctx context.Context, id string, batches []string) error {
	names := make([]string, len(batches))
	for i, b := range batches {
		names[i] = o.b.layout.Pending(o.op(id), b)
	}
	if err := o.b.putEmpty(ctx, names); err != nil {
		return fmt.Errorf("pending markers of %s %s: %w", o.kind, id, err)
	}
	return nil
}

// putEmpty writes empty objects in one request (Swift's bulk upload of a tar archive).
func (b *Bank) putEmpty(ctx context.Context, names []string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := b.now()
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 0, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := b.store.BulkUpload(ctx, b.container, bytes.NewReader(buf.Bytes()), swift.UploadTar, nil)
	if err != nil {
		return fmt.Errorf("bulk upload of %d objects: %w", len(names), err)
	}
	if len(res.Errors) > 0 || int(res.NumberCreated) != len(names) {
		return fmt.Errorf("bulk upload: %d of %d created, errors %v", res.NumberCreated, len(names), res.Errors)
	}
	return nil
}

// Done deletes a batch's pending marker (already gone counts as done) and reports
// whether the operation still has unfinished batches.
func (o *Ops) Done(ctx context.Context, id, batch string) (remaining bool, err error) {
	if err := o.b.remove(ctx, o.b.layout.Pending(o.op(id), batch)); err != nil {
		return false, err
	}
	return o.Remaining(ctx, id, "")
}

// Take deletes a batch's pending marker and reports whether it was there: of racing
// duplicates of a batch's result, one takes it.
func (o *Ops) Take(ctx context.Context, id, batch string) (bool, error) {
	name := o.b.layout.Pending(o.op(id), batch)
	err := o.b.retry(ctx, func() error { return o.b.store.ObjectDelete(ctx, o.b.container, name) })
	if errors.Is(err, swift.ObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete %s/%s: %w", o.b.container, name, err)
	}
	return true, nil
}

// Remaining reports whether batches whose names start with prefix are still pending.
func (o *Ops) Remaining(ctx context.Context, id, prefix string) (bool, error) {
	objs, err := o.b.list(ctx, &swift.ObjectsOpts{Prefix: o.b.layout.PendingPrefix(o.op(id)) + prefix, Limit: 1})
	if err != nil {
		return false, err
	}
	return len(objs) > 0, nil
}

// PendingResources lists an operation's unfinished batches, with when each was marked,
// or sent again (Resent), whichever is later.
func (o *Ops) PendingResources(ctx context.Context, id string) ([]Pending, error) {
	prefix := o.b.layout.PendingPrefix(o.op(id))
	objs, err := o.b.listAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Pending, 0, len(objs))
	for _, obj := range objs {
		batch, err := UnescapeKey(strings.TrimPrefix(obj.Name, prefix))
		if err != nil {
			continue
		}
		out = append(out, Pending{Batch: batch, Since: obj.LastModified})
	}
	if len(out) == 0 {
		return out, nil
	}
	resentPrefix := o.b.layout.ResentPrefix(o.op(id))
	resent, err := o.b.listAll(ctx, resentPrefix)
	if err != nil {
		return nil, err
	}
	last := make(map[string]time.Time, len(resent))
	for _, obj := range resent {
		if batch, err := UnescapeKey(strings.TrimPrefix(obj.Name, resentPrefix)); err == nil {
			last[batch] = obj.LastModified
		}
	}
	for i := range out {
		if t := last[out[i].Batch]; t.After(out[i].Since) {
			out[i].Since = t
		}
	}
	return out, nil
}

// Resent records that the requests of batches were sent again, so that the next tick
// waits before sending them once more. These markers are separate from the pending ones:
// touching a pending marker could bring back a batch that finished meanwhile.
func (o *Ops) Resent(ctx context.Context, id string, batches []string) error {
	if len(batches) == 0 {
		return nil
	}
	names := make([]string, len(batches))
	for i, b := range batches {
		names[i] = o.b.layout.Resent(o.op(id), b)
	}
	return o.b.putEmpty(ctx, names)
}

// Fail records, create-only, that a resource ended in error; the first reason stays.
func (o *Ops) Fail(ctx context.Context, id, key, reason string) error {
	err := o.b.putJSON(ctx, o.b.layout.Failure(o.op(id), key), Failure{Key: key, Reason: reason, At: o.b.now().UTC()}, true)
	if errors.Is(err, ErrExists) {
		return nil
	}
	return err
}

// Failures lists the resources of an operation that ended in error, with reasons.
func (o *Ops) Failures(ctx context.Context, id string) ([]Failure, error) {
	out, err := readAll[Failure](ctx, o.b, o.b.layout.FailurePrefix(o.op(id)))
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// FailedKeys lists the keys of the resources of an operation that ended in error, in
// order, from one listing: no record is read.
func (o *Ops) FailedKeys(ctx context.Context, id string) ([]string, error) {
	objs, err := o.b.listAll(ctx, o.b.layout.FailurePrefix(o.op(id)))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(objs))
	for _, obj := range objs {
		if key, ok := o.b.layout.FailureKey(o.op(id), obj.Name); ok {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// PutRecord writes a batch's record; only the step that owns the batch writes it.
func (o *Ops) PutRecord(ctx context.Context, id string, r Record) error {
	return o.b.putJSON(ctx, o.b.layout.Record(o.op(id), r.Batch), r, false)
}

// PutRecordFirst writes a batch's record unless one is there (create-only): first is
// false, and nothing written, when a racing duplicate of the step wrote it before.
func (o *Ops) PutRecordFirst(ctx context.Context, id string, r Record) (first bool, err error) {
	err = o.b.putJSON(ctx, o.b.layout.Record(o.op(id), r.Batch), r, true)
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	return err == nil, err
}

// Record reads a batch's record.
func (o *Ops) Record(ctx context.Context, id, batch string) (*Record, error) {
	var r Record
	if err := o.b.getJSON(ctx, o.b.layout.Record(o.op(id), batch), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Records reads every record of an operation.
func (o *Ops) Records(ctx context.Context, id string) ([]Record, error) {
	objs, err := o.b.listAll(ctx, o.b.layout.RecordPrefix(o.op(id)))
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(objs))
	for _, obj := range objs {
		var r Record
		if err := o.b.getJSON(ctx, obj.Name, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Activate puts an operation in the active index, which the tick walks.
func (o *Ops) Activate(ctx context.Context, id string) error {
	return o.b.putJSON(ctx, o.b.layout.Active(o.op(id)), map[string]string{"id": id}, false)
}

// Deactivate takes an operation out of the active index.
func (o *Ops) Deactivate(ctx context.Context, id string) error {
	return o.b.remove(ctx, o.b.layout.Active(o.op(id)))
}

// Active lists the operations still in progress.
func (o *Ops) Active(ctx context.Context) ([]string, error) {
	prefix := o.b.layout.ActivePrefix(o.kind)
	objs, err := o.b.listAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(objs))
	for _, obj := range objs {
		ids = append(ids, unsegment(strings.TrimPrefix(obj.Name, prefix)))
	}
	return ids, nil
}

// stripes is a fixed set of mutexes chosen by key: callers with one key are serialized,
// callers with others rarely wait, and nothing grows with the keys seen.
type stripes [64]sync.Mutex

// lock locks key's mutex and returns its unlock.
func (s *stripes) lock(key string) func() {
	h := fnv.New32a()
	h.Write([]byte(key))
	m := &s[h.Sum32()%uint32(len(s))]
	m.Lock()
	return m.Unlock
}
