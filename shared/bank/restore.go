package bank

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/podguard/podguard/events"
)

// Restore is a restore's index.
type Restore struct {
	ID         string                   `json:"id"`
	Checkpoint string                   `json:"checkpoint"`
	Parameters events.RestoreParameters `json:"parameters"`
	CreatedAt  time.Time                `json:"created_at"`
	Deadline   time.Time                `json:"deadline"`
	// Trace is the W3C traceparent of the restore's trace (see Checkpoint.Trace).
	Trace string `json:"trace,omitempty"`
	// RequestedBy is who asked for the restore: the caller the front door authenticated
	// (events.ExtCaller); empty when the request named no one. The first request's wins,
	// as the index is written create-only.
	RequestedBy string `json:"requested_by,omitempty"`
}

// CreateRestore writes a new restore's index, its first status (in_progress), its entry in
// the list of restores, and makes it active. As with checkpoints, an existing index wins
// and the other writes are completed.
func (b *Bank) CreateRestore(ctx context.Context, r Restore) (*Restore, error) {
	err := b.putJSON(ctx, b.layout.RestoreIndex(r.ID), r, true)
	if errors.Is(err, ErrExists) {
		stored, gerr := b.Restore(ctx, r.ID)
		if gerr != nil {
			return nil, gerr
		}
		r = *stored
	} else if err != nil {
		return nil, err
	}
	ops := b.Restores()
	if err := ops.setStatus(ctx, r.ID, events.RestoreInProgress, r.CreatedAt); err != nil {
		return nil, err
	}
	if err := b.putJSON(ctx, b.layout.RestoresIndex(r.ID, r.CreatedAt), map[string]string{"restore": r.ID}, false); err != nil {
		return nil, err
	}
	if err := ops.Activate(ctx, r.ID); err != nil {
		return nil, err
	}
	return &r, nil
}

// Restore reads a restore's index.
func (b *Bank) Restore(ctx context.Context, id string) (*Restore, error) {
	var r Restore
	if err := b.getJSON(ctx, b.layout.RestoreIndex(id), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListRestores returns restore ids, newest first, up to limit, after marker.
func (b *Bank) ListRestores(ctx context.Context, limit int, marker string) (ids []string, next string, err error) {
	return b.indexPage(ctx, b.layout.RestoresPrefix(), limit, marker)
}

// Ending is how an operation ended.
type Ending struct {
	// Status is the terminal status in force.
	Status   string
	Failures []Failure
	// First is true for the call that recorded the end, false when it had ended before
	// (a duplicate or a late result announcing it again).
	First bool
}

// End records an operation's terminal status, chosen by whether any resource failed,
// unless it already ended, and takes it out of the active index.
//
// Racing "last" results of one operation both find it complete. Within a process they
// are serialized; across processes the attempt's end marker is written create-only, so
// at most one caller (save for writes racing in the same instant, which Swift's check
// cannot order) is told First and counts the end. The loser takes the winner's status.
func (o *Ops) End(ctx context.Context, id string, running, ok, failed string) (Ending, error) {
	unlock := o.b.ending.lock(o.kind + "/" + id)
	defer unlock()
	failures, err := o.Failures(ctx, id)
	if err != nil {
		return Ending{}, err
	}
	end := Ending{Status: ok, Failures: failures}
	if len(failures) > 0 {
		end.Status = failed
	}
	h, err := o.History(ctx, id)
	if err != nil {
		return Ending{}, err
	}
	if len(h) == 0 {
		return Ending{}, fmt.Errorf("status of %s %s: %w", o.kind, id, ErrNotFound)
	}
	if current := h[len(h)-1]; current.Status != running {
		end.Status = current.Status
	} else {
		marker := o.b.layout.Ended(o.op(id), current.At)
		err := o.b.putJSON(ctx, marker, StatusChange{Status: end.Status, At: o.b.now().UTC()}, true)
		switch {
		case err == nil:
			end.First = true
		case errors.Is(err, ErrExists):
			// Another caller recorded this attempt's end (and may not have written its
			// status marker yet): its status is the one in force.
			var won StatusChange
			if err := o.b.getJSON(ctx, marker, &won); err != nil {
				return Ending{}, err
			}
			end.Status = won.Status
		default:
			return Ending{}, err
		}
		if err := o.SetStatus(ctx, id, end.Status); err != nil {
			return Ending{}, err
		}
	}
	if err := o.Deactivate(ctx, id); err != nil {
		return Ending{}, err
	}
	return end, nil
}
