// Package restorevolume is the restore-volume function: for each volume of a batch it
// creates a new Cinder volume from the volume's backup in the checkpoint, named
// "<checkpoint id>@<original volume id>" and tagged with the restore, and returns; the
// same request, sent again by the tick, checks the volumes until they are available or
// failed, or the restore's deadline passes. A redelivered request finds its volume (by its
// name and description, which Cinder keeps) instead of creating a second one, and when
// racing deliveries both created one, the oldest is kept and the other deleted.
package restorevolume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
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
	"github.com/podguard/podguard/shared/openstack/volumes"
)

// Accepts are the event types restore-volume handles.
var Accepts = []string{events.VolumeRestore}

// Metadata keys that tag a restored volume.
const (
	MetaRestore    = "podguard-restore"
	MetaResource   = "podguard-resource"
	MetaCheckpoint = "podguard-checkpoint"
)

// Config is restore-volume's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// cinder is the part of Cinder's volume API the step uses.
type cinder interface {
	CreateFromBackup(ctx context.Context, opts volumes.CreateFromBackupOpts) (*volumes.Volume, error)
	SetMetadata(ctx context.Context, id string, metadata map[string]string) error
	// ListNamed lists the live volumes with a name, oldest first.
	ListNamed(ctx context.Context, name string) ([]volumes.Volume, error)
	Delete(ctx context.Context, id string) error
}

// records reads one operation's batch records (the checkpoint's, or the restore's).
type records interface {
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
}

// restoreRecords reads and writes the restore's records.
type restoreRecords interface {
	records
	PutRecord(ctx context.Context, id string, r bank.Record) error
}

// Step is the restore-volume step.
type Step struct {
	cinder      cinder
	checkpoints records
	restores    restoreRecords
	now         func() time.Time
}

// New builds the step from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	sc, err := cfg.OpenStack.BlockStorage(ctx)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(volumes.New(sc), b, b.Restores(), time.Now), nil
}

// NewStep builds the step from its dependencies.
func NewStep(c cinder, checkpoints records, restores restoreRecords, now func() time.Time) *Step {
	return &Step{cinder: c, checkpoints: checkpoints, restores: restores, now: now}
}

const workers = 8

// Handle restores or checks the volumes of a batch; it answers once every volume of the
// batch is available or failed, and with nothing (202) while any is in progress.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.RestoreStepRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	for i, r := range req.Resources {
		if r.Type != graph.VolumeType {
			return nil, function.Permanent(fmt.Errorf("/resources/%d/type: restore-volume restores %s, not %s", i, graph.VolumeType, r.Type))
		}
	}
	if rec, err := s.restores.Record(ctx, req.Restore, req.Batch); err == nil {
		return result(req, rec)
	} else if !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	saved, err := s.checkpoints.Record(ctx, req.Checkpoint, req.Batch)
	if errors.Is(err, bank.ErrNotFound) {
		saved = &bank.Record{} // every volume of the batch fails below, with the reason
	} else if err != nil {
		return nil, err
	}
	settled, inProgress, err := batch.Settle(ctx, req.Resources, workers, func(ctx context.Context, r graph.Resource) (bank.ResourceRecord, bool, error) {
		return s.volume(ctx, req, r, saved.Resources[r.Key()])
	})
	if err != nil {
		return nil, err
	}
	if inProgress > 0 {
		return nil, nil
	}
	rec := bank.Record{Batch: req.Batch, Resources: settled, UpdatedAt: s.now().UTC()}
	if err := s.restores.PutRecord(ctx, req.Restore, rec); err != nil {
		return nil, err
	}
	return result(req, &rec)
}

// volume restores or checks one volume; done is false while it is in progress.
func (s *Step) volume(ctx context.Context, req events.RestoreStepRequest, r graph.Resource, saved bank.ResourceRecord) (bank.ResourceRecord, bool, error) {
	var info checkpoint.VolumeInfo
	if saved.Status != events.StatusAvailable || json.Unmarshal(saved.Data, &info) != nil || info.BackupID == "" {
		return failed(fmt.Sprintf("checkpoint %s has no available backup of volume %s", req.Checkpoint, r.ID), checkpoint.RestoredVolume{OriginalID: r.ID})
	}
	out := checkpoint.RestoredVolume{OriginalID: r.ID, BackupID: info.BackupID, Name: req.Checkpoint + "@" + r.ID}
	tag := map[string]string{MetaRestore: req.Restore, MetaResource: r.Key()}
	v, settling, err := s.find(ctx, out.Name, description(req.Restore))
	if err != nil {
		return bank.ResourceRecord{}, false, err
	}
	if settling {
		return bank.ResourceRecord{}, false, nil // duplicates still being restored: the next check deletes them
	}
	pastDeadline := !req.Deadline.IsZero() && s.now().After(req.Deadline)
	if v == nil {
		if pastDeadline {
			return failed("the restore's deadline passed before the volume was created", out)
		}
		md := maps.Clone(tag)
		md[MetaCheckpoint] = req.Checkpoint
		v, err = s.cinder.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: out.Name, BackupID: info.BackupID,
			Description: description(req.Restore), Metadata: md})
		switch {
		case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
			return failed(fmt.Sprintf("backup %s of volume %s no longer exists", info.BackupID, r.ID), out)
		case gophercloud.ResponseCodeIs(err, http.StatusBadRequest) && backupBusy(err):
			// The backup is being restored already: by a duplicate of this request racing
			// this one (whose volume a later check finds), or by another restore. Check
			// again later; the deadline bounds the wait.
			logging.FromContext(ctx).Infow("backup busy, checking again later", zap.String("backup", info.BackupID), zap.Error(err))
			return bank.ResourceRecord{}, false, nil
		case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
			return failed(fmt.Sprintf("Cinder refused to restore backup %s: %v", info.BackupID, err), out)
		case err != nil:
			return bank.ResourceRecord{}, false, err
		}
		logging.FromContext(ctx).Infow("restoring volume", zap.String("backup", info.BackupID), zap.String("volume", v.ID))
	}
	out.VolumeID = v.ID
	switch v.Status {
	case volumes.StatusAvailable:
		// Cinder replaces a restored volume's metadata with the original's: tag it again,
		// so that it is found by its metadata too.
		if v.Metadata[MetaRestore] != req.Restore {
			md := maps.Clone(tag)
			md[MetaCheckpoint] = req.Checkpoint
			if err := s.cinder.SetMetadata(ctx, v.ID, md); err != nil {
				return bank.ResourceRecord{}, false, err
			}
		}
		data, err := json.Marshal(out)
		return bank.ResourceRecord{Status: events.StatusAvailable, Data: data}, true, err
	case volumes.StatusError, volumes.StatusErrorRestoring:
		return failed(fmt.Sprintf("Cinder could not restore backup %s into volume %s (status %s)", info.BackupID, v.ID, v.Status), out)
	}
	if pastDeadline {
		return failed(fmt.Sprintf("volume %s still %s at the restore's deadline", v.ID, v.Status), out)
	}
	return bank.ResourceRecord{}, false, nil
}

// description is the description of the volumes a restore creates. Cinder keeps a
// restored volume's name and description (it replaces only the metadata), so with the
// name, "<checkpoint>@<original volume>", it tells the volumes of a restore and resource
// apart from any other.
func description(restore string) string { return "restored by podguard restore " + restore }

// find returns the volume this restore created for a resource, found by its name and
// description, which Cinder keeps (the tag in the metadata is lost when Cinder completes
// the restore, and a volume of another restore of the checkpoint has the same name); nil
// when there is none. Racing deliveries of a request may each have created one: Cinder
// accepts a second restore of a backup until the first reaches the volume service, which
// may take seconds. Once every one of them has settled, find keeps the oldest available
// one (else the oldest), an order every delivery agrees on, and deletes the others;
// settling is true until then.
func (s *Step) find(ctx context.Context, name, desc string) (keep *volumes.Volume, settling bool, err error) {
	named, err := s.cinder.ListNamed(ctx, name)
	if err != nil {
		return nil, false, err
	}
	var mine []volumes.Volume
	for _, v := range named {
		if v.Description == desc {
			mine = append(mine, v)
		}
	}
	switch len(mine) {
	case 0:
		return nil, false, nil
	case 1:
		return &mine[0], false, nil
	}
	keep = &mine[0]
	for i := range mine {
		switch mine[i].Status {
		case volumes.StatusAvailable:
			if keep.Status != volumes.StatusAvailable {
				keep = &mine[i]
			}
		case volumes.StatusError, volumes.StatusErrorRestoring:
		default:
			return nil, true, nil // being restored: Cinder deletes it only once it has settled
		}
	}
	for _, extra := range mine {
		if extra.ID == keep.ID {
			continue
		}
		if err := s.cinder.Delete(ctx, extra.ID); err != nil {
			logging.FromContext(ctx).Warnw("deleting a duplicate restored volume", zap.String("volume", extra.ID), zap.Error(err))
			settling = true
			continue
		}
		logging.FromContext(ctx).Infow("deleted a duplicate restored volume", zap.String("volume", extra.ID), zap.String("kept", keep.ID))
	}
	return keep, settling, nil
}

func failed(reason string, v checkpoint.RestoredVolume) (bank.ResourceRecord, bool, error) {
	data, err := json.Marshal(v)
	return bank.ResourceRecord{Status: events.StatusError, Reason: reason, Data: data}, true, err
}

func result(req events.RestoreStepRequest, rec *bank.Record) (*event.Event, error) {
	out := events.RestoreStepResult{Restore: req.Restore, Batch: req.Batch}
	for _, r := range req.Resources {
		rr := rec.Resources[r.Key()]
		out.Results = append(out.Results, events.ResourceResult{Key: r.Key(), Status: rr.Status, Reason: rr.Reason})
	}
	return function.Reply(events.VolumeRestored, out)
}

// backupBusy reports whether Cinder refused a restore because the backup is not available
// at the moment (it is being restored, or backed up).
func backupBusy(err error) bool {
	var uc gophercloud.ErrUnexpectedResponseCode
	return errors.As(err, &uc) && strings.Contains(string(uc.Body), "backup status must be")
}
