package volumes

import (
	"cmp"
	"context"
	"encoding/json"
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
	cinder "github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Microversion is the Block Storage API microversion the client sends: 3.47 is the first
// that creates a volume from a backup (backup_id) in the create request itself.
const Microversion = "3.47"

// DefaultPollInterval is the pause between two reads of a volume while waiting for it.
const DefaultPollInterval = openstack.DefaultPollInterval

// Volume statuses, as Cinder reports them (the ones podguard meets).
const (
	StatusCreating        = "creating"
	StatusAvailable       = "available"
	StatusInUse           = "in-use"
	StatusBackingUp       = "backing-up"
	StatusRestoringBackup = "restoring-backup"
	StatusDeleting        = "deleting"
	StatusError           = "error"
	StatusErrorDeleting   = "error_deleting"
	StatusErrorRestoring  = "error_restoring"
	StatusErrorExtending  = "error_extending"
)

// MetadataSourceBackup is the metadata key Cinder sets, when a restore completes, to the id
// of the backup the volume was restored from.
const MetadataSourceBackup = "src_backup_id"

// Volume is a Cinder volume.
type Volume struct {
	ID          string
	Name        string
	Description string
	Status      string
	// Size is in GiB.
	Size             int
	VolumeType       string
	AvailabilityZone string
	Metadata         map[string]string
	// BackupID is the backup the volume was restored from, if any: Cinder's backup_id
	// where the release shows it (Zed does not), else the src_backup_id metadata Cinder
	// sets when the restore completes. CreateFromBackup fills it from its request.
	BackupID  string
	CreatedAt time.Time
}

// Client manages volumes through a Cinder v3 endpoint.
type Client struct {
	sc *gophercloud.ServiceClient

	// PollInterval is the pause between two reads in WaitForStatus and WaitForDeleted;
	// zero means DefaultPollInterval.
	PollInterval time.Duration
	// PageSize is the number of volumes asked for per page of a list; zero leaves it to
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

// CreateFromBackupOpts describes a volume to restore from a backup.
type CreateFromBackupOpts struct {
	Name        string
	Description string
	// BackupID is the backup to restore (required); it must be available.
	BackupID string
	// Size is in GiB; zero means the size of the backed up volume.
	Size int
	// VolumeType and AvailabilityZone are optional; empty means Cinder's defaults.
	VolumeType       string
	AvailabilityZone string
	// Metadata tags the volume, so that FindRestored recognises it (FindByMetadata too,
	// until the restore completes).
	Metadata map[string]string
}

// CreateFromBackup starts restoring a backup into a new volume and returns the volume,
// usually in status creating.
//
// When the restore completes, Cinder replaces the volume's metadata with the metadata the
// backed up volume had, plus src_backup_id: opts.Metadata is gone from then on. Find the
// volume with FindRestored, and put the metadata back with SetMetadata.
func (c *Client) CreateFromBackup(ctx context.Context, opts CreateFromBackupOpts) (*Volume, error) {
	if opts.BackupID == "" {
		return nil, fmt.Errorf("create volume %q from a backup: no backup id", opts.Name)
	}
	v, err := c.create(ctx, cinder.CreateOpts{
		Name:             opts.Name,
		Description:      opts.Description,
		BackupID:         opts.BackupID,
		Size:             opts.Size,
		VolumeType:       opts.VolumeType,
		AvailabilityZone: opts.AvailabilityZone,
		Metadata:         opts.Metadata,
	})
	if err != nil {
		return nil, fmt.Errorf("create volume %q from backup %s: %w", opts.Name, opts.BackupID, err)
	}
	v.BackupID = cmp.Or(v.BackupID, opts.BackupID)
	return v, nil
}

// Create starts creating an empty volume of sizeGiB and returns it, usually in status
// creating.
func (c *Client) Create(ctx context.Context, name string, sizeGiB int, metadata map[string]string) (*Volume, error) {
	v, err := c.create(ctx, cinder.CreateOpts{Name: name, Size: sizeGiB, Metadata: metadata})
	if err != nil {
		return nil, fmt.Errorf("create volume %q of %d GiB: %w", name, sizeGiB, err)
	}
	return v, nil
}

func (c *Client) create(ctx context.Context, opts cinder.CreateOpts) (*Volume, error) {
	v, err := cinder.Create(ctx, c.sc, opts, nil).Extract()
	if err != nil {
		return nil, err
	}
	return fromCinder(v), nil
}

// Get reads a volume. A missing volume is an error for which
// gophercloud.ResponseCodeIs(err, http.StatusNotFound) holds.
func (c *Client) Get(ctx context.Context, id string) (*Volume, error) {
	v, err := c.get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get volume %s: %w", id, err)
	}
	return v, nil
}

func (c *Client) get(ctx context.Context, id string) (*Volume, error) {
	v, err := cinder.Get(ctx, c.sc, id).Extract()
	if err != nil {
		return nil, err
	}
	return fromCinder(v), nil
}

// Delete asks Cinder to delete a volume. A volume that is already gone, or already being
// deleted, counts as deleted; WaitForDeleted waits until it is gone. Cinder refuses to
// delete a volume that is attached, busy (creating, backing up, restoring) or has
// snapshots: that error is returned as is.
func (c *Client) Delete(ctx context.Context, id string) error {
	err := cinder.Delete(ctx, c.sc, id, nil).ExtractErr()
	switch {
	case err == nil || gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
		// Cinder answers 400 for a volume being deleted already: tell it apart.
		v, gerr := c.get(ctx, id)
		if gophercloud.ResponseCodeIs(gerr, http.StatusNotFound) || (gerr == nil && v.Status == StatusDeleting) {
			return nil
		}
	}
	return fmt.Errorf("delete volume %s: %w", id, err)
}

// FindByMetadata returns the volume whose metadata holds every key and value of match,
// leaving out volumes being deleted (deleting, error_deleting); the newest when several
// match, nil when none does. Cinder filters the list by metadata itself. A volume
// restored from a backup loses its metadata when the restore completes: see FindRestored.
func (c *Client) FindByMetadata(ctx context.Context, match map[string]string) (*Volume, error) {
	if len(match) == 0 {
		return nil, errors.New("find volume by metadata: no metadata to match")
	}
	vs, err := c.list(ctx, match)
	if err != nil {
		return nil, fmt.Errorf("find volume with metadata %v: %w", match, err)
	}
	for i := range vs {
		if live(vs[i].Status) && contains(vs[i].Metadata, match) {
			return &vs[i], nil
		}
	}
	return nil, nil
}

// FindRestored returns the volume restored from a backup that carries match, as
// FindByMetadata does, or else the newest volume restored from that backup (src_backup_id)
// that has none of match's keys: one whose restore completed and replaced its metadata
// before SetMetadata put match back. It returns nil when there is neither.
func (c *Client) FindRestored(ctx context.Context, backupID string, match map[string]string) (*Volume, error) {
	if len(match) == 0 || backupID == "" {
		return nil, fmt.Errorf("find volume restored from backup %q: no metadata to match or no backup", backupID)
	}
	tagged, err := c.list(ctx, match)
	if err != nil {
		return nil, fmt.Errorf("find volume restored from backup %s with metadata %v: %w", backupID, match, err)
	}
	for i := range tagged {
		if live(tagged[i].Status) && contains(tagged[i].Metadata, match) {
			return &tagged[i], nil
		}
	}
	restored, err := c.list(ctx, map[string]string{MetadataSourceBackup: backupID})
	if err != nil {
		return nil, fmt.Errorf("find volume restored from backup %s: %w", backupID, err)
	}
	for i := range restored {
		v := &restored[i]
		if live(v.Status) && v.Metadata[MetadataSourceBackup] == backupID && !hasAnyKey(v.Metadata, match) {
			return v, nil
		}
	}
	return nil, nil
}

// ListNamed lists the volumes named name (Cinder filters by the exact name), leaving out
// volumes being deleted, oldest first (then by id, an order every caller agrees on). A
// restored volume keeps the name and description it was created with, so this finds
// every volume a restore created for a resource, tagged or not.
func (c *Client) ListNamed(ctx context.Context, name string) ([]Volume, error) {
	if name == "" {
		return nil, errors.New("list volumes by name: no name")
	}
	vs, err := c.query(ctx, listQuery{name: name, limit: c.PageSize})
	if err != nil {
		return nil, fmt.Errorf("list volumes named %q: %w", name, err)
	}
	out := vs[:0]
	for _, v := range vs {
		if live(v.Status) && v.Name == name {
			out = append(out, v)
		}
	}
	slices.SortStableFunc(out, func(a, b Volume) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// SetMetadata adds the keys of metadata to a volume's metadata, replacing their values and
// leaving the other keys alone.
func (c *Client) SetMetadata(ctx context.Context, id string, metadata map[string]string) error {
	_, err := c.sc.Post(ctx, c.sc.ServiceURL("volumes", id, "metadata"), map[string]any{"metadata": metadata}, nil,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}})
	if err != nil {
		return fmt.Errorf("set metadata %v of volume %s: %w", metadata, id, err)
	}
	return nil
}

// live reports whether a volume is not being deleted.
func live(status string) bool {
	return status != StatusDeleting && status != StatusErrorDeleting
}

// list reads every page of the volumes with the metadata, newest first.
func (c *Client) list(ctx context.Context, metadata map[string]string) ([]Volume, error) {
	return c.query(ctx, listQuery{metadata: metadata, limit: c.PageSize})
}

// query reads every page of the volumes a query selects, newest first.
func (c *Client) query(ctx context.Context, q listQuery) ([]Volume, error) {
	var out []Volume
	err := cinder.List(c.sc, q).EachPage(ctx,
		func(_ context.Context, page pagination.Page) (bool, error) {
			vs, err := cinder.ExtractVolumes(page)
			if err != nil {
				return false, err
			}
			for i := range vs {
				out = append(out, *fromCinder(&vs[i]))
			}
			return true, nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Volume) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}

// listQuery filters the detailed list by metadata, or name. Cinder reads the metadata
// filter as a Python literal; JSON is one for a map of strings, and unlike gophercloud's
// ListOpts it escapes quotes inside keys and values.
type listQuery struct {
	metadata map[string]string
	name     string
	limit    int
}

func (q listQuery) ToVolumeListQuery() (string, error) {
	v := url.Values{}
	if q.name != "" {
		v.Set("name", q.name)
	}
	if len(q.metadata) > 0 {
		m, err := json.Marshal(q.metadata)
		if err != nil {
			return "", err
		}
		v.Set("metadata", string(m))
	}
	if q.limit > 0 {
		v.Set("limit", strconv.Itoa(q.limit))
	}
	if len(v) == 0 {
		return "", nil
	}
	return "?" + v.Encode(), nil
}

func fromCinder(v *cinder.Volume) *Volume {
	out := &Volume{
		ID:               v.ID,
		Name:             v.Name,
		Description:      v.Description,
		Status:           v.Status,
		Size:             v.Size,
		VolumeType:       v.VolumeType,
		AvailabilityZone: v.AvailabilityZone,
		Metadata:         maps.Clone(v.Metadata),
		CreatedAt:        v.CreatedAt,
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	if v.BackupID != nil {
		out.BackupID = *v.BackupID
	}
	out.BackupID = cmp.Or(out.BackupID, out.Metadata[MetadataSourceBackup])
	return out
}

// hasAnyKey reports whether m has any of the keys of match.
func hasAnyKey(m, match map[string]string) bool {
	for k := range match {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
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
