package openstack

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// Waited is a Cinder resource a wait reads (a volume, a backup): what it is called in
// errors ("volume", "backup"), how to read it, and the error of its failed statuses.
type Waited[T any] struct {
	Kind string
	// Interval between reads; DefaultPollInterval when 0.
	Interval time.Duration
	// Get reads the resource and its status; a missing one is an error for which
	// gophercloud.ResponseCodeIs(err, 404) holds.
	Get func(ctx context.Context, id string) (T, string, error)
	// Failed lists the statuses from which the resource does not move on by itself.
	Failed []string
	// Failure is the error of a resource found in a failed status.
	Failure func(ctx context.Context, r T, status string) error
}

// DefaultPollInterval is how often a wait reads a resource unless told.
const DefaultPollInterval = 2 * time.Second

// WaitForStatus reads the resource every Interval until its status is one of statuses,
// and returns it then. It fails at once when the resource reaches a failed status that is
// not among statuses (with Failure's error), when it cannot be read (a 404 included), and
// when ctx ends.
func (w Waited[T]) WaitForStatus(ctx context.Context, id string, statuses ...string) (T, error) {
	var last T
	want := strings.Join(statuses, " or ")
	if len(statuses) == 0 {
		return last, fmt.Errorf("wait for %s %s: no status to wait for", w.Kind, id)
	}
	status := ""
	err := Poll(ctx, w.Interval, func(ctx context.Context) (bool, error) {
		r, st, err := w.Get(ctx, id)
		if err != nil {
			return false, err
		}
		last, status = r, st
		switch {
		case slices.Contains(statuses, st):
			return true, nil
		case slices.Contains(w.Failed, st):
			return false, w.Failure(ctx, r, st)
		}
		return false, nil
	})
	if err != nil {
		var zero T
		if status != "" && ctx.Err() != nil {
			return zero, fmt.Errorf("wait for %s %s to be %s (still %s): %w", w.Kind, id, want, status, err)
		}
		return zero, fmt.Errorf("wait for %s %s to be %s: %w", w.Kind, id, want, err)
	}
	return last, nil
}

// WaitForDeleted reads the resource every Interval until Cinder no longer knows it. It
// fails at once when the resource reaches a failed status (Failure's error) or any status
// but one of deleting (nobody deletes it), and when ctx ends.
func (w Waited[T]) WaitForDeleted(ctx context.Context, id string, deleting ...string) error {
	var last string
	err := Poll(ctx, w.Interval, func(ctx context.Context) (bool, error) {
		r, st, err := w.Get(ctx, id)
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		last = st
		switch {
		case slices.Contains(deleting, st):
			return false, nil
		case slices.Contains(w.Failed, st):
			return false, w.Failure(ctx, r, st)
		}
		return false, fmt.Errorf("%s is in status %s, not being deleted", w.Kind, st)
	})
	if err != nil {
		if last != "" && ctx.Err() != nil {
			return fmt.Errorf("wait for %s %s to be deleted (still %s): %w", w.Kind, id, last, err)
		}
		return fmt.Errorf("wait for %s %s to be deleted: %w", w.Kind, id, err)
	}
	return nil
}

// Poll calls check at once, then every interval (DefaultPollInterval when 0), until it
// is done or fails, or ctx ends.
func Poll(ctx context.Context, interval time.Duration, check func(context.Context) (bool, error)) error {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done, err := check(ctx)
		if done || err != nil {
			if err != nil && ctx.Err() != nil {
				// The request failed because ctx ended: say so plainly.
				return ctx.Err()
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
