// Package deletebackup is the delete-backup function: for each volume of a batch of a
// checkpoint it deletes the Cinder backup the checkpoint recorded, and returns; Cinder
// deletes asynchronously, so the same request, sent again by the tick, checks the
// deletions until every backup of the batch is gone or failed, or the deadline passes.
//
// The state is Cinder's, not the bank's: the step only reads the checkpoint's record of
// the batch to learn the backup ids, and asks Cinder. A redelivered request finds a
// backup already gone (404) and reports it deleted.
//
// Cinder refuses to delete a backup that newer incremental backups depend on; the
// volume's result is then an error saying to delete the checkpoints holding those first,
// newest first. It also refuses a backup that is busy (being created or restored): that
// is an error too, with the backup's status, not something retried until the deadline.
//
//	step := deletebackup.NewStep(backups.New(sc), bank, time.Now)
//	reply, err := step.Handle(ctx, e) // e: dev.podguard.backup.delete
//	// reply == nil, err == nil: deletions in progress, send the request again later
package deletebackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/gophercloud/gophercloud/v2"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/openstack/backups"
)

// Accepts are the event types delete-backup handles.
var Accepts = []string{events.BackupDelete}

// Config is delete-backup's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// cinder is the part of Cinder's backup API the step uses. Get answers a missing backup
// with an error for which gophercloud.ResponseCodeIs(err, 404) holds; Delete counts a
// missing backup, or one being deleted, as deleted, and wraps backups.ErrHasDependents
// when incremental backups depend on the backup.
type cinder interface {
	Get(ctx context.Context, id string) (*backups.Backup, error)
	Delete(ctx context.Context, id string) error
}

// records reads the checkpoint's records.
type records interface {
	Record(ctx context.Context, checkpoint, batch string) (*bank.Record, error)
}

// Step is the delete-backup step.
type Step struct {
	cinder  cinder
	records records
	now     func() time.Time
}

// New builds the step from its configuration (Keystone, the catalog's Cinder endpoint,
// the bank).
func New(ctx context.Context, cfg *Config) (*Step, error) {
	sc, err := cfg.OpenStack.BlockStorage(ctx)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(backups.New(sc), b, time.Now), nil
}

// NewStep builds the step from its dependencies.
func NewStep(c cinder, r records, now func() time.Time) *Step {
	return &Step{cinder: c, records: r, now: now}
}

// workers bounds the volumes of a batch handled at once.
const workers = 8

// Handle deletes, or checks the deletion of, the backups of a batch of volumes. It
// answers with BackupDeleted once every volume of the batch is settled (deleted, or
// error with the reason), and with nothing (202) while any backup is still being
// deleted: the request comes again later, which checks again.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.StepRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	for i, r := range req.Resources {
		if r.Type != graph.VolumeType {
			return nil, function.Permanent(fmt.Errorf("/resources/%d/type: delete-backup deletes backups of %s, not %s", i, graph.VolumeType, r.Type))
		}
	}
	rec, err := s.records.Record(ctx, req.Checkpoint, req.Batch)
	if errors.Is(err, bank.ErrNotFound) {
		rec = &bank.Record{} // nothing was recorded: nothing to delete
	} else if err != nil {
		return nil, err
	}
	settled, inProgress, err := batch.Settle(ctx, req.Resources, workers, func(ctx context.Context, r graph.Resource) (events.ResourceResult, bool, error) {
		return s.volume(ctx, req, r, rec.Resources[r.Key()])
	})
	if err != nil {
		return nil, err
	}
	if inProgress > 0 {
		logging.FromContext(ctx).Debugw("backups being deleted", zap.String("batch", req.Batch), zap.Int("in_progress", inProgress))
		return nil, nil
	}
	out := events.StepResult{Checkpoint: req.Checkpoint, Batch: req.Batch, Results: make([]events.ResourceResult, 0, len(req.Resources))}
	for _, r := range req.Resources {
		out.Results = append(out.Results, settled[r.Key()])
	}
	return function.Reply(events.BackupDeleted, out)
}

// volume deletes, or checks the deletion of, the recorded backup of one volume; done is
// false while Cinder is deleting it.
func (s *Step) volume(ctx context.Context, req events.StepRequest, r graph.Resource, saved bank.ResourceRecord) (events.ResourceResult, bool, error) {
	key := r.Key()
	deleted := func(reason string) (events.ResourceResult, bool, error) {
		return events.ResourceResult{Key: key, Status: events.StatusDeleted, Reason: reason}, true, nil
	}
	failed := func(format string, args ...any) (events.ResourceResult, bool, error) {
		return events.ResourceResult{Key: key, Status: events.StatusError, Reason: fmt.Sprintf(format, args...)}, true, nil
	}

	var info checkpoint.VolumeInfo
	if len(saved.Data) > 0 {
		if err := json.Unmarshal(saved.Data, &info); err != nil {
			return failed("the record of volume %s in checkpoint %s cannot be read: %v", r.ID, req.Checkpoint, err)
		}
	}
	if info.BackupID == "" {
		reason := fmt.Sprintf("no backup was recorded for volume %s in checkpoint %s", r.ID, req.Checkpoint)
		if saved.Reason != "" {
			reason += " (" + saved.Reason + ")"
		}
		return deleted(reason)
	}
	id := info.BackupID

	b, err := s.cinder.Get(ctx, id)
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return deleted("")
	case err != nil:
		return events.ResourceResult{}, false, err
	}
	pastDeadline := !req.Deadline.IsZero() && s.now().After(req.Deadline)
	switch {
	case b.Status == backups.StatusDeleting && pastDeadline:
		return failed("backup %s of volume %s still deleting at the deadline %s", id, r.ID, req.Deadline.UTC().Format(time.RFC3339))
	case b.Status == backups.StatusDeleting:
		return events.ResourceResult{}, false, nil
	case b.Status == backups.StatusErrorDeleting:
		return failed("Cinder could not delete backup %s of volume %s (status %s): %s", id, r.ID, b.Status, orUnknown(b.FailReason))
	case pastDeadline:
		return failed("the deadline %s passed before backup %s of volume %s was deleted (status %s%s)",
			req.Deadline.UTC().Format(time.RFC3339), id, r.ID, b.Status, prefixed(": ", b.FailReason))
	}

	// Available, or in error (a backup that failed, or a deletion that failed and is
	// tried again): ask Cinder. For any other status Cinder refuses, and says so below.
	err = s.cinder.Delete(ctx, id)
	switch {
	case errors.Is(err, backups.ErrDependentsGoing):
		// Cinder counts dependents until it has deleted them: a chain deleted newest
		// first meets this between two links. Check again later.
		logging.FromContext(ctx).Infow("backup waits for its dependent incremental backups to be deleted", zap.String("backup", id), zap.String("volume", r.ID))
		return events.ResourceResult{}, false, nil
	case errors.Is(err, backups.ErrHasDependents):
		logging.FromContext(ctx).Infow("Cinder refused to delete a backup newer incremental backups depend on", zap.String("backup", id), zap.String("volume", r.ID))
		return failed("backup %s of volume %s has newer incremental backups depending on it; delete the checkpoints holding them first (newest first)", id, r.ID)
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest), gophercloud.ResponseCodeIs(err, http.StatusConflict):
		logging.FromContext(ctx).Warnw("Cinder refused to delete a backup", zap.String("backup", id), zap.String("status", b.Status), zap.Error(err))
		if b.Status != backups.StatusAvailable && b.Status != backups.StatusError {
			return failed("backup %s of volume %s is %s: Cinder deletes a backup only when it is available or in error; delete again once it is (Cinder: %s)",
				id, r.ID, b.Status, cinderMessage(err))
		}
		return failed("Cinder refused to delete backup %s of volume %s (status %s): %s", id, r.ID, b.Status, cinderMessage(err))
	case err != nil:
		return events.ResourceResult{}, false, err
	}
	logging.FromContext(ctx).Infow("deleting backup", zap.String("backup", id), zap.String("volume", r.ID), zap.String("checkpoint", req.Checkpoint))

	// Look again: a small backup may be gone already, and a deletion may fail at once.
	b, err = s.cinder.Get(ctx, id)
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return deleted("")
	case err != nil:
		return events.ResourceResult{}, false, err
	case b.Status == backups.StatusError, b.Status == backups.StatusErrorDeleting:
		return failed("Cinder could not delete backup %s of volume %s (status %s): %s", id, r.ID, b.Status, orUnknown(b.FailReason))
	}
	return events.ResourceResult{}, false, nil
}

// cinderMessage is the message of Cinder's fault in err's response body (such as
// "Invalid backup: Backup status must be available or error"), or err's text.
func cinderMessage(err error) string {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		var fault map[string]struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(ue.Body, &fault) == nil {
			for _, f := range fault {
				if f.Message != "" {
					return f.Message
				}
			}
		}
	}
	return err.Error()
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
