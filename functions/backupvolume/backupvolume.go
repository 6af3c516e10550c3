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
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/gophercloud/gophercloud/v2"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/openstack/backups"
)

// Accepts are the event types back-up-volume handles.
var Accepts = []string{events.VolumeBackup}

// Metadata keys that tag a backup with its checkpoint and resource.
const (
	MetaCheckpoint = "podguard-checkpoint"
	MetaResource   = "podguard-resource"
)

// Config is back-up-volume's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// cinder is the part of Cinder's backup API the step uses.
type cinder interface {
	List(ctx context.Context, volumeID string) ([]backups.Backup, error)
	Create(ctx context.Context, opts backups.CreateOpts) (*backups.Backup, error)
	Delete(ctx context.Context, id string) error
	IncrementalParent(ctx context.Context, volumeID string) (*backups.Backup, error)
}

// records reads and writes the records of a checkpoint.
type records interface {
	Record(ctx context.Context, checkpoint, key string) (*bank.Record, error)
	PutRecord(ctx context.Context, checkpoint string, r bank.Record) error
}

// Step is the back-up-volume step.
type Step struct {
	cinder  cinder
	records records
	now     func() time.Time
}

// New builds the step from its configuration (Keystone, the catalog's Cinder endpoint).
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

// Handle starts or checks the backup of one volume. It answers with VolumeBackedUp once
// the backup is available or failed, and with nothing (202) while it is in progress.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.StepRequest
	if err := e.DataAs(&req); err != nil {
		return nil, function.Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	if req.Resource.Type != graph.VolumeType {
		return nil, function.Permanent(fmt.Errorf("/resource/type: back-up-volume backs up %s, not %s", graph.VolumeType, req.Resource.Type))
	}
	key, volumeID := req.Resource.Key(), req.Resource.ID
	if r, err := s.records.Record(ctx, req.Checkpoint, key); err == nil && r.Status != events.StatusProtecting {
		return result(req.Checkpoint, key, r.Status, r.Reason) // already finished: same outcome
	} else if err != nil && !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	params := events.VolumeParameters{}
	if req.Parameters != nil {
		params = *req.Parameters
	}
	tag := map[string]string{MetaCheckpoint: req.Checkpoint, MetaResource: key}
	tagged, err := s.tagged(ctx, volumeID, tag)
	if err != nil {
		return nil, err
	}
	pastDeadline := !req.Deadline.IsZero() && s.now().After(req.Deadline)
	if len(tagged) == 0 {
		if pastDeadline {
			return s.finish(ctx, req, events.StatusError, "the checkpoint's deadline passed before the backup was started", nil)
		}
		b, reason, err := s.start(ctx, req, params, tag)
		if err != nil {
			return nil, err
		}
		if reason != "" {
			return s.finish(ctx, req, events.StatusError, reason, nil)
		}
		// Look again: the backup may be complete already, and a racing delivery of this
		// request may have started one too.
		if tagged, err = s.tagged(ctx, volumeID, tag); err != nil {
			return nil, err
		}
		if len(tagged) == 0 {
			tagged = []backups.Backup{*b}
		}
	}
	b, settling := s.converge(ctx, tagged)
	if settling {
		return nil, nil // duplicates still being created: the next check deletes them
	}
	info := &checkpoint.VolumeInfo{VolumeID: volumeID, BackupID: b.ID, Mode: mode(b), SizeGiB: b.Size, BackupStatus: b.Status, StartedAt: b.CreatedAt}
	if params.BackupMode == "incremental" && !b.IsIncremental {
		info.Note = "incremental backup requested, but the volume had no available backup to base it on: made a full backup"
	}
	switch b.Status {
	case backups.StatusAvailable:
		return s.finish(ctx, req, events.StatusAvailable, "", info)
	case backups.StatusError:
		return s.finish(ctx, req, events.StatusError, fmt.Sprintf("Cinder backup %s failed: %s", b.ID, orUnknown(b.FailReason)), info)
	}
	if pastDeadline {
		return s.finish(ctx, req, events.StatusError, fmt.Sprintf("Cinder backup %s still %s at the checkpoint's deadline %s", b.ID, b.Status, req.Deadline.UTC().Format(time.RFC3339)), info)
	}
	logging.FromContext(ctx).Debugw("backup in progress", zap.String("backup", b.ID), zap.String("status", b.Status))
	return nil, nil
}

// start creates the backup. Cinder refusing it (the volume does not exist, or is not
// in a state that can be backed up) is a reason, not an error: retrying cannot help.
func (s *Step) start(ctx context.Context, req events.StepRequest, p events.VolumeParameters, tag map[string]string) (b *backups.Backup, reason string, err error) {
	incremental := p.BackupMode == "incremental"
	if incremental {
		parent, err := s.cinder.IncrementalParent(ctx, req.Resource.ID)
		if err != nil {
			return nil, "", err
		}
		incremental = parent != nil // else fall back to full, and say so in the record
	}
	name := p.BackupName
	if name == "" {
		name = "podguard-" + req.Checkpoint
	}
	b, err = s.cinder.Create(ctx, backups.CreateOpts{
		VolumeID: req.Resource.ID, Name: name, Description: p.Description, Container: p.Container,
		Force: p.Force, Incremental: incremental, Metadata: tag,
	})
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return nil, fmt.Sprintf("Cinder volume %s does not exist", req.Resource.ID), nil
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
		return nil, fmt.Sprintf("Cinder refused to back up volume %s: %v", req.Resource.ID, err), nil
	case err != nil:
		return nil, "", err
	}
	logging.FromContext(ctx).Infow("backup started", zap.String("volume", req.Resource.ID), zap.String("backup", b.ID), zap.Bool("incremental", incremental))
	return b, "", nil
}

func (s *Step) finish(ctx context.Context, req events.StepRequest, status, reason string, info *checkpoint.VolumeInfo) (*event.Event, error) {
	r := bank.Record{Key: req.Resource.Key(), Status: status, Reason: reason, UpdatedAt: s.now().UTC()}
	if info != nil {
		data, err := json.Marshal(info)
		if err != nil {
			return nil, fmt.Errorf("encode saved info of %s: %w", r.Key, err)
		}
		r.Data = data
	}
	if err := s.records.PutRecord(ctx, req.Checkpoint, r); err != nil {
		return nil, err
	}
	return result(req.Checkpoint, r.Key, status, reason)
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

func result(cp, key, status, reason string) (*event.Event, error) {
	return function.Reply(events.VolumeBackedUp, events.StepResult{Checkpoint: cp, Key: key, Status: status, Reason: reason})
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
