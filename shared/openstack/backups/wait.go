package backups

import (
	"context"
	"fmt"

	"github.com/podguard/podguard/shared/openstack"
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

// waited is how the client waits for a backup.
func (c *Client) waited() openstack.Waited[*Backup] {
	return openstack.Waited[*Backup]{
		Kind: "backup", Interval: c.PollInterval,
		Get: func(ctx context.Context, id string) (*Backup, string, error) {
			b, err := c.get(ctx, id)
			if err != nil {
				return nil, "", err
			}
			return b, b.Status, nil
		},
		// The statuses from which a backup does not move on by itself.
		Failed: []string{StatusError, StatusErrorDeleting},
		Failure: func(_ context.Context, b *Backup, status string) error {
			return &FailedError{ID: b.ID, Status: status, Reason: b.FailReason}
		},
	}
}

// WaitForStatus reads the backup every PollInterval until its status is one of statuses,
// and returns it then. It fails at once when the backup reaches a failed status
// (error, error_deleting) that is not among statuses, with a *FailedError carrying
// Cinder's fail reason, when the backup cannot be read (a 404 included), and when ctx
// ends.
func (c *Client) WaitForStatus(ctx context.Context, id string, statuses ...string) (*Backup, error) {
	return c.waited().WaitForStatus(ctx, id, statuses...)
}

// WaitForDeleted reads the backup every PollInterval until Cinder no longer knows it. It
// fails at once when the backup reaches status error_deleting (a *FailedError), or any
// status but deleting (nobody deletes it), and when ctx ends.
func (c *Client) WaitForDeleted(ctx context.Context, id string) error {
	return c.waited().WaitForDeleted(ctx, id, StatusDeleting, StatusDeleted)
}
