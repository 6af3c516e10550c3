package bank

import (
	"context"
	"time"
)

// Deletion is the index of the deletion of a checkpoint: the plan the checkpoint was made
// for, which is still known once the checkpoint's metadata is removed (the retention of
// the plan runs again when a deletion ends).
type Deletion struct {
	Checkpoint string  `json:"checkpoint"`
	Plan       PlanRef `json:"plan"`
	// Deadline is when the current attempt must be done by; delete-backup works to it.
	Deadline time.Time `json:"deadline,omitzero"`
	// RequestedBy is who asked for the current attempt: the caller the front door
	// authenticated (events.ExtCaller), or "retention of plan <id>" for a deletion the
	// plan's retention requested; empty when the request named no one.
	RequestedBy string `json:"requested_by,omitempty"`
}

// PutDeletion writes the index of a deletion as an attempt starts; a redelivered request
// writes the same, and a new attempt (after error-deleting) writes its own deadline and
// caller.
func (b *Bank) PutDeletion(ctx context.Context, d Deletion) error {
	return b.putJSON(ctx, b.layout.DeletionIndex(d.Checkpoint), d, false)
}

// Deletion reads the index of the deletion of a checkpoint; ErrNotFound when the
// deletion never started, or started before deletions had an index.
func (b *Bank) Deletion(ctx context.Context, checkpoint string) (*Deletion, error) {
	var d Deletion
	if err := b.getJSON(ctx, b.layout.DeletionIndex(checkpoint), &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// RecordsOf reads the records of the batches of an operation whose names start with
// prefix (such as "volumes-"), and only those; records removed meanwhile are skipped.
func (o *Ops) RecordsOf(ctx context.Context, id, prefix string) ([]Record, error) {
	return readAll[Record](ctx, o.b, o.b.layout.RecordPrefix(o.op(id))+EscapeKey(prefix))
}
