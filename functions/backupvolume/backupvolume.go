// Package backupvolume is the back-up-volume function: it starts a Cinder backup of one
// volume of a checkpoint and returns; the same request, sent again by the tick, checks
// the backup until it is available or in error, or the checkpoint's deadline passes.
// The backup carries metadata naming the checkpoint and the resource, so a redelivered
// request finds it instead of starting a second one.
package backupvolume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
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
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/step"
)

// Accepts are the event types back-up-volume handles.
var Accepts = []string{events.VolumeBackup}

// Metadata keys that tag a backup with its checkpoint and resource.
const (
	MetaCheckpoint = "podguard-checkpoint"
	MetaResource   = "podguard-resource"
)

// Config is the step's configuration from the environment: the bank and OpenStack.
type Config = step.CinderConfig

// cinder is the part of Cinder's backup API the step uses.
type cinder interface {
	List(ctx context.Context, volumeID string) ([]backups.Backup, error)
	Create(ctx context.Context, opts backups.CreateOpts) (*backups.Backup, error)
	Delete(ctx context.Context, id string) error
	IncrementalParent(ctx context.Context, volumeID string) (*backups.Backup, error)
}

// Step is the back-up-volume step.
type Step struct {
	cinder cinder
	runner *step.Runner
	now    func() time.Time
}

// New builds the step from its configuration (Keystone, the catalog's Cinder endpoint).
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

// kind: back-up-volume takes batches of volumes of a checkpoint being protected.
var kind = step.Kind{Step: events.FnBackupVolume, Types: []string{graph.VolumeType}, Reply: events.VolumeBackedUp}

// Handle starts or checks the backups of a batch of the checkpoint's volumes, with the
// options the checkpoint recorded. It answers with VolumeBackedUp once every backup of
// the batch is available or failed, and with nothing (202) while any is in progress: the
// tick sends the request again, which checks again.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return s.runner.Protect(ctx, e, kind, step.Each(workers, s.volume))
}

// volume starts or checks the backup of one volume; done is false while it is in
// progress.
func (s *Step) volume(ctx context.Context, j *step.Job, r graph.Resource) (bank.ResourceRecord, bool, error) {
	key, volumeID, params := r.Key(), r.ID, j.Checkpoint.Parameters.Volume
	tag := map[string]string{MetaCheckpoint: j.Checkpoint.ID, MetaResource: key}
	tagged, err := s.tagged(ctx, volumeID, tag)
	if err != nil {
		return bank.ResourceRecord{}, false, err
	}
	pastDeadline := j.PastDeadline(s.now())
	if len(tagged) == 0 {
		if pastDeadline {
			return failed("the checkpoint's deadline passed before the backup was started", nil)
		}
		b, reason, err := s.start(ctx, j.Checkpoint.ID, r, params, tag)
		if errors.Is(err, errVolumeBusy) {
			// A backup of the volume (a racing delivery of this request, or another
			// plan's) or a restore onto it is under way: check again later, until the
			// deadline.
			logging.FromContext(ctx).Infow("volume busy, backup not started yet", zap.String("volume", volumeID), zap.Error(err))
			return bank.ResourceRecord{}, false, nil
		}
		if err != nil {
			return bank.ResourceRecord{}, false, err
		}
		if reason != "" {
			return failed(reason, nil)
		}
		// Look again: the backup may be complete already, and a racing delivery of this
		// request may have started one too.
		if tagged, err = s.tagged(ctx, volumeID, tag); err != nil {
			return bank.ResourceRecord{}, false, err
		}
		if len(tagged) == 0 {
			tagged = []backups.Backup{*b}
		}
	}
	b, settling := s.converge(ctx, tagged)
	if settling {
		return bank.ResourceRecord{}, false, nil // duplicates still being created: the next check deletes them
	}
	info := &checkpoint.VolumeInfo{VolumeID: volumeID, BackupID: b.ID, Mode: mode(b), SizeGiB: b.Size, BackupStatus: b.Status, StartedAt: b.CreatedAt}
	if params.BackupMode == "incremental" && !b.IsIncremental {
		info.Note = "incremental backup requested, but the volume had no available backup to base it on: made a full backup"
	}
	metrics := observe.FromContext(ctx).Metrics
	switch b.Status {
	case backups.StatusAvailable:
		ended := s.now()
		j.WhenRecorded(func() {
			metrics.CinderDone(ctx, observe.CinderBackup, events.StatusAvailable, b.CreatedAt, ended, int64(b.Size)<<30)
		})
		data, err := json.Marshal(info)
		return bank.ResourceRecord{Status: events.StatusAvailable, Data: data}, true, err
	case backups.StatusError:
		ended := s.now()
		j.WhenRecorded(func() { metrics.CinderDone(ctx, observe.CinderBackup, events.StatusError, b.CreatedAt, ended, 0) })
		return failed(fmt.Sprintf("Cinder backup %s failed: %s", b.ID, orUnknown(b.FailReason)), info)
	}
	if pastDeadline {
		return failed(fmt.Sprintf("Cinder backup %s still %s at the checkpoint's deadline %s", b.ID, b.Status, j.Deadline.UTC().Format(time.RFC3339)), info)
	}
	return bank.ResourceRecord{}, false, nil
}

func failed(reason string, info *checkpoint.VolumeInfo) (bank.ResourceRecord, bool, error) {
	rr := bank.ResourceRecord{Status: events.StatusError, Reason: reason}
	if info != nil {
		data, err := json.Marshal(info)
		if err != nil {
			return rr, true, fmt.Errorf("encode saved info: %w", err)
		}
		rr.Data = data
	}
	return rr, true, nil
}

// start creates the backup. Cinder refusing it (the volume does not exist, or is not
// in a state that can be backed up) is a reason, not an error: retrying cannot help.
func (s *Step) start(ctx context.Context, checkpointID string, r graph.Resource, p events.VolumeParameters, tag map[string]string) (b *backups.Backup, reason string, err error) {
	incremental := p.BackupMode == "incremental"
	if incremental {
		parent, err := s.cinder.IncrementalParent(ctx, r.ID)
		if err != nil {
			return nil, "", err
		}
		incremental = parent != nil // else fall back to full, and say so in the record
	}
	name := p.BackupName
	if name == "" {
		name = "podguard-" + checkpointID
	}
	b, err = s.cinder.Create(ctx, backups.CreateOpts{
		VolumeID: r.ID, Name: name, Description: p.Description, Container: p.Container,
		Force: p.Force, Incremental: incremental, Metadata: tag,
	})
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return nil, fmt.Sprintf("Cinder volume %s does not exist", r.ID), nil
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest) && busy(err):
		return nil, "", fmt.Errorf("back up volume %s: %w: %w", r.ID, errVolumeBusy, err)
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
		return nil, fmt.Sprintf("Cinder refused to back up volume %s: %v", r.ID, err), nil
	case err != nil:
		return nil, "", err
	}
	logging.FromContext(ctx).Infow("backup started", zap.String("volume", r.ID), zap.String("backup", b.ID), zap.Bool("incremental", incremental))
	return b, "", nil
}

// errVolumeBusy is wrapped by start's error when Cinder refuses a backup because the
// volume is in a passing status.
var errVolumeBusy = errors.New("the volume is busy")

// busyStatuses are the volume statuses that pass by themselves; Cinder refuses a backup
// of a volume in them ("... but the current status is backing-up").
var busyStatuses = []string{"backing-up", "restoring-backup", "attaching", "detaching", "creating", "downloading", "uploading", "extending", "retyping", "reserved"}

// busy reports a refusal of Cinder because of a volume status that will pass.
func busy(err error) bool {
	var e gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &e) {
		return false
	}
	body := string(e.Body)
	if !strings.Contains(body, "status") {
		return false
	}
	for _, st := range busyStatuses {
		if strings.Contains(body, st) {
			return true
		}
	}
	return false
}

// tagged lists the live backups of a volume tagged for this checkpoint and resource.
func (s *Step) tagged(ctx context.Context, volumeID string, tag map[string]string) ([]backups.Backup, error) {
	all, err := s.cinder.List(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	var out []backups.Backup
	for _, b := range all {
		if b.Status == backups.StatusDeleting || b.Status == backups.StatusDeleted {
			continue
		}
		if b.Metadata[MetaCheckpoint] == tag[MetaCheckpoint] && b.Metadata[MetaResource] == tag[MetaResource] {
			out = append(out, b)
		}
	}
	return out, nil
}

// converge keeps one backup when racing deliveries of a request started several: the
// earliest, then the lowest id, which every delivery agrees on. The others are deleted
// once Cinder allows it (not while they are being created); settling is true while any
// is left.
func (s *Step) converge(ctx context.Context, tagged []backups.Backup) (keep *backups.Backup, settling bool) {
	sort.Slice(tagged, func(i, j int) bool {
		if !tagged[i].CreatedAt.Equal(tagged[j].CreatedAt) {
			return tagged[i].CreatedAt.Before(tagged[j].CreatedAt)
		}
		return tagged[i].ID < tagged[j].ID
	})
	for _, extra := range tagged[1:] {
		if extra.Status != backups.StatusAvailable && extra.Status != backups.StatusError {
			settling = true
			continue
		}
		if err := s.cinder.Delete(ctx, extra.ID); err != nil {
			logging.FromContext(ctx).Warnw("deleting a duplicate backup", zap.String("backup", extra.ID), zap.Error(err))
			settling = true
			continue
		}
		logging.FromContext(ctx).Infow("deleted a duplicate backup", zap.String("backup", extra.ID), zap.String("kept", tagged[0].ID))
	}
	return &tagged[0], settling
}

func mode(b *backups.Backup) string {
	if b.IsIncremental {
		return "incremental"
	}
	return "full"
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
