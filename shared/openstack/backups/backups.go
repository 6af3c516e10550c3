package backups

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/podguard/podguard/shared/openstack"

	"github.com/gophercloud/gophercloud/v2"
	cinder "github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/backups"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Microversion is the Block Storage API microversion the client sends: 3.43 is the first
// that stores metadata on backups and returns it.
const Microversion = "3.43"

// DefaultPollInterval is the pause between two reads of a backup while waiting for it.
const DefaultPollInterval = openstack.DefaultPollInterval

// Backup statuses, as Cinder reports them.
const (
	StatusCreating      = "creating"
	StatusAvailable     = "available"
	StatusRestoring     = "restoring"
	StatusDeleting      = "deleting"
	StatusDeleted       = "deleted"
	StatusError         = "error"
	StatusErrorDeleting = "error_deleting"
)

// ErrHasDependents is wrapped by the error of Delete when Cinder refuses to delete a
// backup because incremental backups depend on it: delete those first.
var ErrHasDependents = errors.New("incremental backups depend on the backup")

// ErrDependentsGoing is wrapped by the error of Delete when Cinder still counts
// dependent incremental backups that are being deleted or already gone: Cinder updates
// the count only after it has deleted them, so deleting again shortly will work.
var ErrDependentsGoing = errors.New("the incremental backups depending on the backup are being deleted")

// Backup is a Cinder backup of a volume.
type Backup struct {
	ID          string
	VolumeID    string
	Name        string
	Description string
	// Container is where the backup driver stores the backup's data.
	Container string
	Status    string
	// FailReason says why the backup is in status error.
	FailReason string
	// Size is the size of the backed up volume, in GiB.
	Size          int
	IsIncremental bool
	// HasDependentBackups is true while incremental backups are based on this one; Cinder
	// refuses to delete it until they are deleted.
	HasDependentBackups bool
	Metadata            map[string]string
	CreatedAt           time.Time
	// DataTimestamp is when the backed up data was taken: the creation time of the backup,
	// or of the snapshot it was taken from. Cinder bases an incremental backup on the
	// volume's backup with the latest data timestamp.
	DataTimestamp time.Time
}

// Client manages backups through a Cinder v3 endpoint.
type Client struct {
	sc *gophercloud.ServiceClient

	// PollInterval is the pause between two reads in WaitForStatus and WaitForDeleted;
	// zero means DefaultPollInterval.
	PollInterval time.Duration
	// PageSize is the number of backups asked for per page of a list; zero leaves it to
	// Cinder (osapi_max_limit, 1000 by default). Lists always read every page.
	PageSize int
}

// New returns a client on the Cinder endpoint of sc. It works on a copy of sc with the
// microversion set to Microversion; sc itself is not modified.
func New(sc *gophercloud.ServiceClient) *Client {
	c := *sc
	c.Microversion = Microversion
	return &Client{sc: &c}
}

// CreateOpts describes a backup to start.
type CreateOpts struct {
	// VolumeID is the volume to back up (required).
	VolumeID    string
	Name        string
	Description string
	// Container is where the backup driver stores the data; empty means the driver's
	// default.
	Container string
	// Force backs up a volume that is attached (in-use).
	Force bool
	// Incremental bases the backup on the volume's latest backup, which must be available
	// (see IncrementalParent).
	Incremental bool
	// Metadata tags the backup, so that Find recognises it.
	Metadata map[string]string
}

// Create starts a backup of a volume and returns it in status creating. Cinder's answer
// only carries the id: the other fields come from opts (CreatedAt and Size are zero),
// Get or WaitForStatus read the rest.
func (c *Client) Create(ctx context.Context, opts CreateOpts) (*Backup, error) {
	r, err := cinder.Create(ctx, c.sc, cinder.CreateOpts{
		VolumeID:    opts.VolumeID,
		Name:        opts.Name,
		Description: opts.Description,
		Container:   opts.Container,
		Force:       opts.Force,
		Incremental: opts.Incremental,
		Metadata:    opts.Metadata,
	}).Extract()
	if err != nil {
		return nil, fmt.Errorf("create backup %q of volume %s (incremental %t): %w", opts.Name, opts.VolumeID, opts.Incremental, err)
	}
	b := &Backup{
		ID:            r.ID,
		VolumeID:      opts.VolumeID,
		Name:          cmp.Or(r.Name, opts.Name),
		Description:   opts.Description,
		Container:     opts.Container,
		Status:        StatusCreating,
		IsIncremental: opts.Incremental,
		Metadata:      maps.Clone(opts.Metadata),
	}
	if b.Metadata == nil {
		b.Metadata = map[string]string{}
	}
	return b, nil
}

// Get reads a backup. A missing backup is an error for which
// gophercloud.ResponseCodeIs(err, http.StatusNotFound) holds.
func (c *Client) Get(ctx context.Context, id string) (*Backup, error) {
	b, err := c.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get backup %s: %w", id, err)
	}
	return b, nil
}

func (c *Client) get(ctx context.Context, id string) (*Backup, error) {
	r, err := cinder.Get(ctx, c.sc, id).Extract()
	if err != nil {
		return nil, err
	}
	return fromCinder(r), nil
}

// HasDependents reports whether incremental backups are based on a backup, as Cinder's
// has_dependent_backups says.
func (c *Client) HasDependents(ctx context.Context, id string) (bool, error) {
	b, err := c.get(ctx, id)
	if err != nil {
		return false, fmt.Errorf("dependents of backup %s: %w", id, err)
	}
	return b.HasDependentBackups, nil
}

// Delete asks Cinder to delete a backup. A backup that is already gone, or already being
// deleted, counts as deleted; WaitForDeleted waits until it is gone. When incremental
// backups depend on it, Cinder refuses and the error wraps ErrHasDependents.
func (c *Client) Delete(ctx context.Context, id string) error {
	err := cinder.Delete(ctx, c.sc, id).ExtractErr()
	switch {
	case err == nil || gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
		// Cinder answers 400 for a backup being deleted already, for one with dependent
		// incremental backups, and for one busy creating or restoring: tell them apart.
		b, gerr := c.get(ctx, id)
		switch {
		case gophercloud.ResponseCodeIs(gerr, http.StatusNotFound):
			return nil
		case gerr != nil:
		case b.Status == StatusDeleting:
			return nil
		case b.HasDependentBackups:
			live, lerr := c.liveDependents(ctx, b)
			if lerr != nil {
				return fmt.Errorf("delete backup %s: %w", id, lerr)
			}
			if !live {
				return fmt.Errorf("delete backup %s: %w: %w", id, ErrDependentsGoing, err)
			}
			return fmt.Errorf("delete backup %s: %w: %w", id, ErrHasDependents, err)
		}
	}
	return fmt.Errorf("delete backup %s: %w", id, err)
}

// liveDependents reports whether an incremental backup based on b exists that is not
// being deleted. Cinder bases an incremental backup on the volume's backup with the
// newest data and does not show parents: b's dependent is the next backup of the volume
// in data time, if it is incremental (one in error counts too, as it does for Cinder).
func (c *Client) liveDependents(ctx context.Context, b *Backup) (bool, error) {
	bs, err := c.list(ctx, b.VolumeID)
	if err != nil {
		return false, fmt.Errorf("dependents of backup %s: %w", b.ID, err)
	}
	var next *Backup
	for i := range bs {
		o := &bs[i]
		if o.ID == b.ID || o.Status == StatusDeleting || o.Status == StatusDeleted || !o.DataTimestamp.After(b.DataTimestamp) {
			continue
		}
		if next == nil || o.DataTimestamp.Before(next.DataTimestamp) {
			next = o
		}
	}
	return next != nil && next.IsIncremental, nil
}

// List returns the backups of a volume, newest data first, in any status (deleted ones
// excepted), reading every page.
func (c *Client) List(ctx context.Context, volumeID string) ([]Backup, error) {
	bs, err := c.list(ctx, volumeID)
	if err != nil {
		return nil, fmt.Errorf("list backups of volume %s: %w", volumeID, err)
	}
	return bs, nil
}

// Find returns the backup of a volume whose metadata holds every key and value of match,
// leaving out backups being deleted; the newest when several match, nil when none does.
// This is how a redelivered request finds the backup it already started.
func (c *Client) Find(ctx context.Context, volumeID string, match map[string]string) (*Backup, error) {
	if len(match) == 0 {
		return nil, fmt.Errorf("find backup of volume %s: no metadata to match", volumeID)
	}
	bs, err := c.list(ctx, volumeID)
	if err != nil {
		return nil, fmt.Errorf("find backup of volume %s with metadata %v: %w", volumeID, match, err)
	}
	for i := range bs {
		if bs[i].Status != StatusDeleting && bs[i].Status != StatusDeleted && contains(bs[i].Metadata, match) {
			return &bs[i], nil
		}
	}
	return nil, nil
}

// LatestAvailable returns the available backup of a volume with the newest data, or nil
// when the volume has none.
func (c *Client) LatestAvailable(ctx context.Context, volumeID string) (*Backup, error) {
	bs, err := c.list(ctx, volumeID)
	if err != nil {
		return nil, fmt.Errorf("latest available backup of volume %s: %w", volumeID, err)
	}
	for i := range bs {
		if bs[i].Status == StatusAvailable {
			return &bs[i], nil
		}
	}
	return nil, nil
}

// IncrementalParent returns the backup an incremental backup of the volume would be based
// on, or nil when an incremental backup cannot be taken now and a full one is needed.
// Cinder bases an incremental backup on the volume's backup with the newest data whatever
// its status, and refuses unless that one is available: a newer backup that failed, or
// one still being created or deleted, rules an incremental out even when an older backup
// is available.
func (c *Client) IncrementalParent(ctx context.Context, volumeID string) (*Backup, error) {
	bs, err := c.list(ctx, volumeID)
	if err != nil {
		return nil, fmt.Errorf("parent of an incremental backup of volume %s: %w", volumeID, err)
	}
	if len(bs) == 0 || bs[0].Status != StatusAvailable {
		return nil, nil
	}
	return &bs[0], nil
}

// list reads every page of the volume's backups, newest data first.
func (c *Client) list(ctx context.Context, volumeID string) ([]Backup, error) {
	if volumeID == "" {
		return nil, errors.New("no volume id")
	}
	var out []Backup
	err := cinder.ListDetail(c.sc, listQuery{volumeID: volumeID, limit: c.PageSize}).EachPage(ctx,
		func(_ context.Context, page pagination.Page) (bool, error) {
			bs, err := cinder.ExtractBackups(page)
			if err != nil {
				return false, err
			}
			for i := range bs {
				if bs[i].Metadata == nil {
					// Without metadata, Find would never recognise a backup and a retry
					// would start a second one: refuse rather than guess.
					return false, fmt.Errorf("backup %s comes without metadata: the endpoint does not honour microversion %s", bs[i].ID, Microversion)
				}
				if bs[i].VolumeID != volumeID || bs[i].Status == StatusDeleted {
					continue
				}
				out = append(out, *fromCinder(&bs[i]))
			}
			return true, nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Backup) int {
		return cmp.Or(b.DataTimestamp.Compare(a.DataTimestamp), b.CreatedAt.Compare(a.CreatedAt))
	})
	return out, nil
}

// listQuery filters the detailed list by volume; Cinder allows the volume_id filter on
// backups (resource_filters.json), gophercloud's ListDetailOpts does not offer it.
type listQuery struct {
	volumeID string
	limit    int
}

func (q listQuery) ToBackupListDetailQuery() (string, error) {
	v := url.Values{"volume_id": {q.volumeID}}
	if q.limit > 0 {
		v.Set("limit", strconv.Itoa(q.limit))
	}
	return "?" + v.Encode(), nil
}

func fromCinder(b *cinder.Backup) *Backup {
	out := &Backup{
		ID:                  b.ID,
		VolumeID:            b.VolumeID,
		Name:                b.Name,
		Description:         b.Description,
		Container:           b.Container,
		Status:              b.Status,
		FailReason:          b.FailReason,
		Size:                b.Size,
		IsIncremental:       b.IsIncremental,
		HasDependentBackups: b.HasDependentBackups,
		Metadata:            map[string]string{},
		CreatedAt:           b.CreatedAt,
		DataTimestamp:       b.DataTimestamp,
	}
	if b.Metadata != nil {
		maps.Copy(out.Metadata, *b.Metadata)
	}
	if out.DataTimestamp.IsZero() {
		out.DataTimestamp = out.CreatedAt
	}
	return out
}

// contains reports whether every key of match has the same value in m.
func contains(m, match map[string]string) bool {
	for k, v := range match {
		if got, ok := m[k]; !ok || got != v {
			return false
		}
	}
	return true
}
