package bank

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SetStatusAt records a status reached at a given time. Racing duplicates of one request
// pass the request's time, so they write the same marker rather than two.
func (o *Ops) SetStatusAt(ctx context.Context, id, status string, at time.Time) error {
	return o.setStatus(ctx, id, status, at.UTC())
}

// Reset forgets the progress of an earlier attempt of an operation (its fan-out markers,
// pending batches, records and failures) so that it can be tried again. Its status
// history stays.
func (o *Ops) Reset(ctx context.Context, id string) error {
	var names []string
	for _, prefix := range []string{o.b.layout.PendingPrefix(o.op(id)), o.b.layout.RecordPrefix(o.op(id)), o.b.layout.FailurePrefix(o.op(id)), o.b.layout.FanOut(o.op(id), "")} {
		objs, err := o.b.listAll(ctx, prefix)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			names = append(names, obj.Name)
		}
	}
	return o.b.removeAll(ctx, names)
}

// RemoveCheckpoint deletes a checkpoint's metadata: its index entries first, so that lists
// stop showing it, then every object under its prefix (its records before its entries in
// the keys' index), the index object last, so that a removal cut short can be done again. A checkpoint already removed is not an error.
func (b *Bank) RemoveCheckpoint(ctx context.Context, id string) error {
	cp, err := b.Checkpoint(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	indices := []string{
		b.layout.AllIndex(cp.ID, cp.CreatedAt),
		b.layout.PlanIndex(cp.Plan.ID, cp.ID, cp.CreatedAt),
		b.layout.DateIndex(cp.ID, cp.CreatedAt),
		b.layout.Active(CheckpointOp(cp.ID)),
	}
	if err := b.removeAll(ctx, indices); err != nil {
		return err
	}
	objs, err := b.listAll(ctx, b.layout.CheckpointPrefix(id))
	if err != nil {
		return err
	}
	index, keysPrefix := b.layout.CheckpointIndex(id), b.layout.CheckpointKeysPrefix(id)
	var names, keyMarkers, keyEntries []string
	for _, obj := range objs {
		switch seg, isKey := strings.CutPrefix(obj.Name, keysPrefix); {
		case obj.Name == index:
		case isKey:
			keyMarkers = append(keyMarkers, obj.Name)
			keyEntries = append(keyEntries, b.layout.KeyIndex(unsegment(seg), id))
		default:
			names = append(names, obj.Name)
		}
	}
	// The keys' index entries go once the records sealed with them are gone, and before
	// the markers they are found by.
	for _, batch := range [][]string{names, keyEntries, keyMarkers} {
		if err := b.removeAll(ctx, batch); err != nil {
			return err
		}
	}
	return b.remove(ctx, index)
}

// removeAll deletes objects in bulk requests (Swift's bulk delete, up to 10,000 names
// each); objects already gone count as deleted.
func (b *Bank) removeAll(ctx context.Context, names []string) error {
	const max = 10000
	for len(names) > 0 {
		n := min(len(names), max)
		res, err := b.store.BulkDelete(ctx, b.container, names[:n])
		if err != nil {
			return fmt.Errorf("bulk delete of %d objects in %s: %w", n, b.container, err)
		}
		if len(res.Errors) > 0 {
			return fmt.Errorf("bulk delete in %s: %d of %d objects not deleted: %v", b.container, len(res.Errors), n, res.Errors)
		}
		names = names[n:]
	}
	return nil
}
