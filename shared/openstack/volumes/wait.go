package volumes

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// FailedError is the error of a wait that ended because the volume reached a failed
// status instead of the awaited one.
type FailedError struct {
	ID     string
	Status string
	// Reason is Cinder's latest user message about the volume, when there is one
	// (volumes have no fail reason of their own).
	Reason string
}

func (e *FailedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("volume %s is in status %s", e.ID, e.Status)
	}
	return fmt.Sprintf("volume %s is in status %s: %s", e.ID, e.Status, e.Reason)
}

// failed lists the statuses from which a volume does not move on by itself.
var failed = []string{StatusError, StatusErrorRestoring, StatusErrorDeleting}

// WaitForStatus reads the volume every PollInterval until its status is one of statuses,
// and returns it then. It fails at once when the volume reaches a failed status (error,
// error_restoring, error_deleting) that is not among statuses, with a *FailedError
// carrying Cinder's latest message about the volume, when the volume cannot be read (a
// 404 included), and when ctx ends.
func (c *Client) WaitForStatus(ctx context.Context, id string, statuses ...string) (*Volume, error) {
	want := strings.Join(statuses, " or ")
	if len(statuses) == 0 {
		return nil, fmt.Errorf("wait for volume %s: no status to wait for", id)
	}
	var last *Volume
	err := poll(ctx, c.interval(), func(ctx context.Context) (bool, error) {
		v, err := c.get(ctx, id)
		if err != nil {
			return false, err
		}
		last = v
		switch {
		case slices.Contains(statuses, v.Status):
			return true, nil
		case slices.Contains(failed, v.Status):
			return false, &FailedError{ID: v.ID, Status: v.Status, Reason: c.lastMessage(ctx, v.ID)}
		}
		return false, nil
	})
	if err != nil {
		if last != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("wait for volume %s to be %s (still %s): %w", id, want, last.Status, err)
		}
		return nil, fmt.Errorf("wait for volume %s to be %s: %w", id, want, err)
	}
	return last, nil
}

// WaitForDeleted reads the volume every PollInterval until Cinder no longer knows it. It
// fails at once when the volume reaches status error_deleting (a *FailedError), or any
// status but deleting (nobody deletes it), and when ctx ends.
func (c *Client) WaitForDeleted(ctx context.Context, id string) error {
	var last string
	err := poll(ctx, c.interval(), func(ctx context.Context) (bool, error) {
		v, err := c.get(ctx, id)
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		last = v.Status
		switch v.Status {
		case StatusDeleting:
			return false, nil
		case StatusErrorDeleting:
			return false, &FailedError{ID: v.ID, Status: v.Status, Reason: c.lastMessage(ctx, v.ID)}
		}
		return false, fmt.Errorf("volume is in status %s, not being deleted", v.Status)
	})
	if err != nil {
		if last != "" && ctx.Err() != nil {
			return fmt.Errorf("wait for volume %s to be deleted (still %s): %w", id, last, err)
		}
		return fmt.Errorf("wait for volume %s to be deleted: %w", id, err)
	}
	return nil
}

// message is one of Cinder's user messages (GET /messages).
type message struct {
	UserMessage string `json:"user_message"`
	CreatedAt   string `json:"created_at"`
}

// lastMessage is the newest of Cinder's user messages about a resource, or "" when there
// is none or they cannot be read: it only adds detail to an error.
func (c *Client) lastMessage(ctx context.Context, id string) string {
	var body struct {
		Messages []message `json:"messages"`
	}
	u := c.sc.ServiceURL("messages") + "?" + url.Values{"resource_uuid": {id}}.Encode()
	if _, err := c.sc.Get(ctx, u, &body, nil); err != nil || len(body.Messages) == 0 {
		return ""
	}
	// Cinder writes every timestamp in one format: they compare as strings.
	return slices.MaxFunc(body.Messages, func(a, b message) int {
		return strings.Compare(a.CreatedAt, b.CreatedAt)
	}).UserMessage
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
