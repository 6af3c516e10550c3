// Package deletebackup is the delete-backup function: for each volume of a batch of a
// checkpoint it deletes the Cinder backup the checkpoint recorded, and returns; Cinder
// deletes asynchronously, so the same request, sent again by the tick, checks the
// deletions until every backup of the batch is gone or failed, or the deadline passes.
//
// The step works only for a checkpoint whose deletion is recorded and which is deleting,
// on a batch of its graph, and deletes only the backups the checkpoint's record of the
// batch names. The state is Cinder's: a redelivered request finds a backup already gone
// (404) and reports it deleted. The outcome is recorded in the deletion's record of the
// batch, which the choreographer reads.
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
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/step"
)

// Accepts are the event types delete-backup handles.
var Accepts = []string{events.BackupDelete}

// Config is the step's configuration from the environment: the bank and OpenStack.
type Config = step.CinderConfig

// cinder is the part of Cinder's backup API the step uses. Get answers a missing backup
// with an error for which gophercloud.ResponseCodeIs(err, 404) holds; Delete counts a
// missing backup, or one being deleted, as deleted, and wraps backups.ErrHasDependents
// when incremental backups depend on the backup.
type cinder interface {
	Get(ctx context.Context, id string) (*backups.Backup, error)
	Delete(ctx context.Context, id string) error
}

// Step is the delete-backup step.
type Step struct {
	cinder cinder
	runner *step.Runner
	now    func() time.Time
}

// New builds the step from its configuration (Keystone, the catalog's Cinder endpoint,
// the bank).
func New(ctx context.Context, cfg *Config) (*Step, error) {
	b, sc, err := cfg.Open(ctx)
	if err != nil {
		return nil, err
	}
	return NewStep(backups.New(sc), b, time.Now), nil
}

// NewStep builds the step from its dependencies.
func NewStep(c cinder, b *bank.Bank, now func() time.Time) *Step {
	return &Step{cinder: c, runner: step.New(b, now), now: now}
}

// workers bounds the volumes of a batch handled at once.
const workers = 8

// kind: delete-backup takes batches of volumes of a checkpoint being deleted.
var kind = step.Kind{Step: events.FnDeleteBackup, Types: []string{graph.VolumeType}, Reply: events.BackupDeleted}

// Handle deletes, or checks the deletion of, the backups the checkpoint recorded for a
// batch of its volumes. It answers with BackupDeleted once every volume of the batch is
// settled (deleted, or error with the reason), recorded in the deletion's record of the
// batch, and with nothing (202) while any backup is still being deleted: the request
// comes again later, which checks again.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return s.runner.Delete(ctx, e, kind, step.Each(workers, s.volume))
}

// volume deletes, or checks the deletion of, the recorded backup of one volume; done is
// false while Cinder is deleting it.
func (s *Step) volume(ctx context.Context, j *step.Job, r graph.Resource) (bank.ResourceRecord, bool, error) {
	saved, checkpointID := j.Saved.Resources[r.Key()], j.Checkpoint.ID
	deleted := func(reason string) (bank.ResourceRecord, bool, error) {
		return bank.ResourceRecord{Status: events.StatusDeleted, Reason: reason}, true, nil
	}
	failed := func(format string, args ...any) (bank.ResourceRecord, bool, error) {
		return bank.ResourceRecord{Status: events.StatusError, Reason: fmt.Sprintf(format, args...)}, true, nil
	}

	var info checkpoint.VolumeInfo
	if len(saved.Data) > 0 {
		if err := json.Unmarshal(saved.Data, &info); err != nil {
			return failed("the record of volume %s in checkpoint %s cannot be read: %v", r.ID, checkpointID, err)
		}
	}
	if info.BackupID == "" {
		reason := fmt.Sprintf("no backup was recorded for volume %s in checkpoint %s", r.ID, checkpointID)
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
		return bank.ResourceRecord{}, false, err
	}
	pastDeadline := j.PastDeadline(s.now())
	switch {
	case b.Status == backups.StatusDeleting && pastDeadline:
		return failed("backup %s of volume %s still deleting at the deadline %s", id, r.ID, j.Deadline.UTC().Format(time.RFC3339))
	case b.Status == backups.StatusDeleting:
		return bank.ResourceRecord{}, false, nil
	case b.Status == backups.StatusErrorDeleting:
		return failed("Cinder could not delete backup %s of volume %s (status %s): %s", id, r.ID, b.Status, orUnknown(b.FailReason))
	case pastDeadline:
		return failed("the deadline %s passed before backup %s of volume %s was deleted (status %s%s)",
			j.Deadline.UTC().Format(time.RFC3339), id, r.ID, b.Status, prefixed(": ", b.FailReason))
	}

	// Available, or in error (a backup that failed, or a deletion that failed and is
	// tried again): ask Cinder. For any other status Cinder refuses, and says so below.
	err = s.cinder.Delete(ctx, id)
	switch {
	case errors.Is(err, backups.ErrDependentsGoing):
		// Cinder counts dependents until it has deleted them: a chain deleted newest
		// first meets this between two links. Check again later.
		logging.FromContext(ctx).Infow("backup waits for its dependent incremental backups to be deleted", zap.String("backup", id), zap.String("volume", r.ID))
		return bank.ResourceRecord{}, false, nil
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
		return bank.ResourceRecord{}, false, err
	}
	logging.FromContext(ctx).Infow("deleting backup", zap.String("backup", id), zap.String("volume", r.ID), zap.String("checkpoint", checkpointID))

	// Look again: a small backup may be gone already, and a deletion may fail at once.
	b, err = s.cinder.Get(ctx, id)
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return deleted("")
	case err != nil:
		return bank.ResourceRecord{}, false, err
	case b.Status == backups.StatusError, b.Status == backups.StatusErrorDeleting:
		return failed("Cinder could not delete backup %s of volume %s (status %s): %s", id, r.ID, b.Status, orUnknown(b.FailReason))
	}
	return bank.ResourceRecord{}, false, nil
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
