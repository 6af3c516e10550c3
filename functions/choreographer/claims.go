package choreographer

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
)

// progress is what a result is checked against: an operation's status, the records its
// steps wrote, its pending batches (the checkpoints' Ops in the bank, the restores', the
// deletions').
type progress interface {
	Status(ctx context.Context, id string) (string, error)
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
	Fail(ctx context.Context, id, key, reason string) error
	Take(ctx context.Context, id, batch string) (bool, error)
}

// claim is a step's result to be checked: the batch of an operation it says is done.
type claim struct {
	kind    string // "checkpoint", "restore", "deletion of checkpoint": in reasons and logs
	id      string
	batch   string
	running string // the status of the operation while its batches are worked on
	// ok is the status of a resource that succeeded; any other is a failure.
	ok string
	// gone, when set, reports whether an operation that has no status any more existed
	// (a checkpoint whose metadata a deletion removed): its results are late.
	gone func(ctx context.Context) (bool, error)
}

// claimVerdict is what a result is worth.
type claimVerdict int

const (
	// accepted: the batch was pending; its outcome is recorded and its marker gone.
	accepted claimVerdict = iota
	// late: a duplicate of a batch done, or a result of an operation removed; nothing to do.
	late
	// ended: a duplicate of a batch of an operation that has ended; the operation's end
	// may be announced again (its announcement may be what failed the first time).
	ended
)

// accept checks a result against the bank and records its outcome. A result is a claim:
// it counts only for a pending batch of an operation in progress, and what it counts for
// is read from the record the step wrote for the batch, never from the result's own
// statuses. A late result (the batch finished, or the operation ended) changes nothing
// and is not an error; one for an operation that never existed, or a batch no step
// recorded, is refused (permanent). Accepting costs a status listing, a record read, a
// failure write per failed resource and the marker's deletion. Each resource of the record that
// did not end ok is recorded as a failure, with the step's reason.
func (s *Step) accept(ctx context.Context, p progress, c claim) (claimVerdict, error) {
	log := logging.FromContext(ctx).With(zap.String(c.kind, c.id), zap.String("batch", c.batch))
	status, err := p.Status(ctx, c.id)
	if errors.Is(err, bank.ErrNotFound) {
		if c.gone != nil {
			if gone, gerr := c.gone(ctx); gerr != nil {
				return late, gerr
			} else if gone {
				log.Infow("late result of an operation since removed ignored")
				return late, nil
			}
		}
		return late, function.Permanent(fmt.Errorf("%s %s does not exist", c.kind, c.id))
	}
	if err != nil {
		return late, err
	}
	rec, err := p.Record(ctx, c.id, c.batch)
	if errors.Is(err, bank.ErrNotFound) {
		return late, function.Permanent(fmt.Errorf("/batch: %s %s has no record of batch %s: no step finished it", c.kind, c.id, c.batch))
	}
	if err != nil {
		return late, err
	}
	if status != c.running {
		log.Infow("late result of an operation that ended", zap.String("status", status))
		return ended, nil
	}
	// Failures first, the marker last: a result cut short in between is delivered again
	// and finds the batch still pending.
	keys := make([]string, 0, len(rec.Resources))
	for k := range rec.Resources {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rr := rec.Resources[k]
		if rr.Status == c.ok {
			continue
		}
		reason := rr.Reason
		if reason == "" {
			reason = fmt.Sprintf("ended %q", rr.Status)
		}
		if err := p.Fail(ctx, c.id, k, reason); err != nil {
			return late, err
		}
	}
	taken, err := p.Take(ctx, c.id, c.batch)
	if err != nil {
		return late, err
	}
	if !taken {
		log.Infow("late result of a finished batch ignored")
		return late, nil
	}
	return accepted, nil
}
