package volumes

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/podguard/podguard/shared/openstack"
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

// waited is how the client waits for a volume.
func (c *Client) waited() openstack.Waited[*Volume] {
	return openstack.Waited[*Volume]{
		Kind: "volume", Interval: c.PollInterval,
		Get: func(ctx context.Context, id string) (*Volume, string, error) {
			v, err := c.get(ctx, id)
			if err != nil {
				return nil, "", err
			}
			return v, v.Status, nil
		},
		// The statuses from which a volume does not move on by itself.
		Failed: []string{StatusError, StatusErrorRestoring, StatusErrorDeleting},
		Failure: func(ctx context.Context, v *Volume, status string) error {
			return &FailedError{ID: v.ID, Status: status, Reason: c.lastMessage(ctx, v.ID)}
		},
	}
}

// WaitForStatus reads the volume every PollInterval until its status is one of statuses,
// and returns it then. It fails at once when the volume reaches a failed status (error,
// error_restoring, error_deleting) that is not among statuses, with a *FailedError
// carrying Cinder's latest message about the volume, when the volume cannot be read (a
// 404 included), and when ctx ends.
func (c *Client) WaitForStatus(ctx context.Context, id string, statuses ...string) (*Volume, error) {
	return c.waited().WaitForStatus(ctx, id, statuses...)
}

// WaitForDeleted reads the volume every PollInterval until Cinder no longer knows it. It
// fails at once when the volume reaches status error_deleting (a *FailedError), or any
// status but deleting (nobody deletes it), and when ctx ends.
func (c *Client) WaitForDeleted(ctx context.Context, id string) error {
	return c.waited().WaitForDeleted(ctx, id, StatusDeleting)
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
