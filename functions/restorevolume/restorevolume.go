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
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/step"
)

// Accepts are the event types restore-volume handles.
var Accepts = []string{events.VolumeRestore}

// Metadata keys that tag a restored volume.
const (
	MetaRestore    = "podguard-restore"
	MetaResource   = "podguard-resource"
	MetaCheckpoint = "podguard-checkpoint"
)

// Config is the step's configuration from the environment: the bank and OpenStack.
type Config = step.CinderConfig

// cinder is the part of Cinder's volume API the step uses.
type cinder interface {
	CreateFromBackup(ctx context.Context, opts volumes.CreateFromBackupOpts) (*volumes.Volume, error)
	SetMetadata(ctx context.Context, id string, metadata map[string]string) error
	// ListNamed lists the live volumes with a name, oldest first.
	ListNamed(ctx context.Context, name string) ([]volumes.Volume, error)
	Delete(ctx context.Context, id string) error
}

// Step is the restore-volume step.
type Step struct {
	cinder cinder
	runner *step.Runner
	now    func() time.Time
}

// New builds the step from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	b, sc, err := cfg.Open(ctx)
	if err != nil {
		return nil, err
	}
	return NewStep(volumes.New(sc), b, time.Now), nil
}

// NewStep builds the step from its dependencies.
func NewStep(c cinder, b *bank.Bank, now func() time.Time) *Step {
	return &Step{cinder: c, runner: step.New(b, now), now: now}
}

const workers = 8

// kind: restore-volume takes batches of volumes of a restore in progress.
var kind = step.Kind{Step: events.FnRestoreVolume, Types: []string{graph.VolumeType}, Reply: events.VolumeRestored}

// Handle restores or checks the volumes of a batch from the backups the checkpoint
// recorded; it answers once every volume of the batch is available or failed, and with
// nothing (202) while any is in progress.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return s.runner.Restore(ctx, e, kind, step.Each(workers, s.volume))
}

func (s *Step) volume(ctx context.Context, j *step.Job, r graph.Resource) (bank.ResourceRecord, bool, error) {
	restore, cp, saved := j.Restore.ID, j.Checkpoint.ID, j.Saved.Resources[r.Key()]
	var info checkpoint.VolumeInfo
	if saved.Status != events.StatusAvailable || json.Unmarshal(saved.Data, &info) != nil || info.BackupID == "" {
		return failed(fmt.Sprintf("checkpoint %s has no available backup of volume %s", cp, r.ID), checkpoint.RestoredVolume{OriginalID: r.ID})
	}
	out := checkpoint.RestoredVolume{OriginalID: r.ID, BackupID: info.BackupID, Name: cp + "@" + r.ID}
	tag := map[string]string{MetaRestore: restore, MetaResource: r.Key()}
	v, settling, err := s.find(ctx, out.Name, description(restore))
	if err != nil {
		return bank.ResourceRecord{}, false, err
	}
	if settling {
		return bank.ResourceRecord{}, false, nil // duplicates still being restored: the next check deletes them
	}
	pastDeadline := j.PastDeadline(s.now())
	if v == nil {
		if pastDeadline {
			return failed("the restore's deadline passed before the volume was created", out)
		}
		md := maps.Clone(tag)
		md[MetaCheckpoint] = cp
		v, err = s.cinder.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: out.Name, BackupID: info.BackupID,
			Description: description(restore), Metadata: md})
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
	metrics := observe.FromContext(ctx).Metrics
	switch v.Status {
	case volumes.StatusAvailable:
		ended := s.now()
		j.WhenRecorded(func() {
			metrics.CinderDone(ctx, observe.CinderRestore, events.StatusAvailable, v.CreatedAt, ended, int64(v.Size)<<30)
		})
		// Cinder replaces a restored volume's metadata with the original's: tag it again,
		// so that it is found by its metadata too.
		if v.Metadata[MetaRestore] != restore {
			md := maps.Clone(tag)
			md[MetaCheckpoint] = cp
			if err := s.cinder.SetMetadata(ctx, v.ID, md); err != nil {
				return bank.ResourceRecord{}, false, err
			}
		}
		data, err := json.Marshal(out)
		return bank.ResourceRecord{Status: events.StatusAvailable, Data: data}, true, err
	case volumes.StatusError, volumes.StatusErrorRestoring:
		ended := s.now()
		j.WhenRecorded(func() { metrics.CinderDone(ctx, observe.CinderRestore, events.StatusError, v.CreatedAt, ended, 0) })
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

// backupBusy reports whether Cinder refused a restore because the backup is not available
// at the moment (it is being restored, or backed up).
func backupBusy(err error) bool {
	var uc gophercloud.ErrUnexpectedResponseCode
	return errors.As(err, &uc) && strings.Contains(string(uc.Body), "backup status must be")
}
