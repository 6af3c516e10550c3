package backups

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// FailedError is the error of a wait that ended because the backup reached a failed
// status instead of the awaited one.
type FailedError struct {
	ID     string
	Status string
	// Reason is Cinder's fail_reason for the backup, when it gives one.
	Reason string
}

func (e *FailedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("backup %s is in status %s", e.ID, e.Status)
	}
	return fmt.Sprintf("backup %s is in status %s: %s", e.ID, e.Status, e.Reason)
}

// failed lists the statuses from which a backup does not move on by itself.
var failed = []string{StatusError, StatusErrorDeleting}

// WaitForStatus reads the backup every PollInterval until its status is one of statuses,
// and returns it then. It fails at once when the backup reaches a failed status
// (error, error_deleting) that is not among statuses, with a *FailedError carrying
// Cinder's fail reason, when the backup cannot be read (a 404 included), and when ctx
// ends.
func (c *Client) WaitForStatus(ctx context.Context, id string, statuses ...string) (*Backup, error) {
	want := strings.Join(statuses, " or ")
	if len(statuses) == 0 {
		return nil, fmt.Errorf("wait for backup %s: no status to wait for", id)
	}
	var last *Backup
	err := poll(ctx, c.interval(), func(ctx context.Context) (bool, error) {
		b, err := c.get(ctx, id)
		if err != nil {
			return false, err
		}
		last = b
		switch {
		case slices.Contains(statuses, b.Status):
			return true, nil
		case slices.Contains(failed, b.Status):
			return false, &FailedError{ID: b.ID, Status: b.Status, Reason: b.FailReason}
		}
		return false, nil
	})
	if err != nil {
		if last != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("wait for backup %s to be %s (still %s): %w", id, want, last.Status, err)
		}
		return nil, fmt.Errorf("wait for backup %s to be %s: %w", id, want, err)
	}
	return last, nil
}

// WaitForDeleted reads the backup every PollInterval until Cinder no longer knows it. It
// fails at once when the backup reaches status error_deleting (a *FailedError), or any
// status but deleting (nobody deletes it), and when ctx ends.
func (c *Client) WaitForDeleted(ctx context.Context, id string) error {
	var last string
	err := poll(ctx, c.interval(), func(ctx context.Context) (bool, error) {
		b, err := c.get(ctx, id)
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		last = b.Status
		switch b.Status {
		case StatusDeleting, StatusDeleted:
			return false, nil
		case StatusErrorDeleting:
			return false, &FailedError{ID: b.ID, Status: b.Status, Reason: b.FailReason}
		}
		return false, fmt.Errorf("backup is in status %s, not being deleted", b.Status)
	})
	if err != nil {
		if last != "" && ctx.Err() != nil {
			return fmt.Errorf("wait for backup %s to be deleted (still %s): %w", id, last, err)
		}
		return fmt.Errorf("wait for backup %s to be deleted: %w", id, err)
	}
	return nil
}

func (c *Client) interval() time.Duration {
	if c.PollInterval > 0 {
		return c.PollInterval
	}
	return DefaultPollInterval
}

// poll calls check at once, then every interval, until it is done or fails, or ctx ends.
func poll(ctx context.Context, interval time.Duration, check func(context.Context) (bool, error)) error {
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
