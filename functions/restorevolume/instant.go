package restorevolume

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/volumes"
)

// InstantVolumes is an in-process stand-in for Cinder's volume API whose restored volumes
// are available at once. It exists for tests and benchmarks and runs without Cinder.
//
// As Cinder does, it replaces a restored volume's metadata, once the restore completes,
// with the backed up volume's (BackedUp) plus src_backup_id. Missing backups answer as
// Cinder does for a backup that does not exist (404); volumes restored from Failing
// backups end in status error; volumes restored from Slow backups stay restoring-backup
// until Complete is called.
type InstantVolumes struct {
	mu      sync.Mutex
	volumes map[string]*volumes.Volume
	seq     int
	clock   time.Time

	Missing  map[string]bool
	Failing  map[string]bool
	Slow     map[string]bool
	BackedUp map[string]map[string]string
}

// NewInstantVolumes returns an instant Cinder without volumes.
func NewInstantVolumes() *InstantVolumes {
	return &InstantVolumes{volumes: map[string]*volumes.Volume{}, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Missing: map[string]bool{}, Failing: map[string]bool{}, Slow: map[string]bool{}, BackedUp: map[string]map[string]string{}}
}

// FindRestored returns the newest live volume carrying every key and value of match, or
// else the newest restored from backupID that has none of match's keys, as
// volumes.Client.FindRestored does; nil when there is neither.
func (c *InstantVolumes) FindRestored(_ context.Context, backupID string, match map[string]string) (*volumes.Volume, error) {
	if len(match) == 0 || backupID == "" {
		return nil, fmt.Errorf("find volume restored from backup %q: no metadata to match or no backup", backupID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	vs := c.newestFirst()
	for _, v := range vs {
		if hasAll(v.Metadata, match) {
			return clone(v), nil
		}
	}
	for _, v := range vs {
		if v.Metadata[volumes.MetadataSourceBackup] == backupID && !hasAnyKey(v.Metadata, match) {
			return clone(v), nil
		}
	}
	return nil, nil
}

// CreateFromBackup restores a backup into a new volume: available at once (its metadata
// replaced as Cinder replaces it), error for a Failing backup, restoring-backup for a Slow
// one; a Missing backup is a 404.
func (c *InstantVolumes) CreateFromBackup(_ context.Context, o volumes.CreateFromBackupOpts) (*volumes.Volume, error) {
	if o.BackupID == "" {
		return nil, fmt.Errorf("create volume %q from a backup: no backup id", o.Name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Missing[o.BackupID] {
		return nil, fmt.Errorf("create volume %q from backup %s: %w", o.Name, o.BackupID, notFound("Backup "+o.BackupID))
	}
	c.seq++
	c.clock = c.clock.Add(time.Second)
	v := &volumes.Volume{ID: fmt.Sprintf("restored-%04d", c.seq), Name: o.Name, Description: o.Description, Size: max(o.Size, 1),
		Status: volumes.StatusRestoringBackup, Metadata: maps.Clone(o.Metadata), BackupID: o.BackupID, CreatedAt: c.clock}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	c.volumes[v.ID] = v
	if !c.Slow[o.BackupID] {
		c.complete(v)
	}
	return clone(v), nil
}

// SetMetadata adds the keys of metadata to a volume's metadata.
func (c *InstantVolumes) SetMetadata(_ context.Context, id string, metadata map[string]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[id]
	if !ok {
		return fmt.Errorf("set metadata %v of volume %s: %w", metadata, id, notFound("Volume "+id))
	}
	maps.Copy(v.Metadata, metadata)
	return nil
}

// ListNamed returns the volumes named name, oldest first, as volumes.Client.ListNamed
// does.
func (c *InstantVolumes) ListNamed(_ context.Context, name string) ([]volumes.Volume, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	vs := c.newestFirst()
	slices.Reverse(vs)
	var out []volumes.Volume
	for _, v := range vs {
		if v.Name == name {
			out = append(out, *clone(v))
		}
	}
	return out, nil
}

// Delete removes a volume; a missing one counts as deleted. As Cinder does, it refuses
// (400) a volume being restored.
func (c *InstantVolumes) Delete(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[id]
	if !ok {
		return nil
	}
	if v.Status == volumes.StatusRestoringBackup || v.Status == volumes.StatusCreating {
		return fmt.Errorf("delete volume %s: %w", id, gophercloud.ErrUnexpectedResponseCode{Actual: http.StatusBadRequest,
			Expected: []int{http.StatusAccepted}, Body: []byte("Invalid volume: Volume status must be available or error")})
	}
	delete(c.volumes, id)
	return nil
}

// Complete ends every restore in progress: available, or error for a Failing backup.
func (c *InstantVolumes) Complete() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.volumes {
		if v.Status == volumes.StatusRestoringBackup {
			c.complete(v)
		}
	}
}

// Count is the number of volumes created.
func (c *InstantVolumes) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.volumes)
}

// Volumes returns every volume, oldest first.
func (c *InstantVolumes) Volumes() []volumes.Volume {
	c.mu.Lock()
	defer c.mu.Unlock()
	vs := c.newestFirst()
	slices.Reverse(vs)
	out := make([]volumes.Volume, 0, len(vs))
	for _, v := range vs {
		out = append(out, *clone(v))
	}
	return out
}

// complete finishes a restore as Cinder does; c.mu is held.
func (c *InstantVolumes) complete(v *volumes.Volume) {
	if c.Failing[v.BackupID] {
		v.Status = volumes.StatusError
		return
	}
	v.Status = volumes.StatusAvailable
	v.Metadata = maps.Clone(c.BackedUp[v.BackupID])
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	v.Metadata[volumes.MetadataSourceBackup] = v.BackupID
}

// newestFirst lists the volumes, newest first; c.mu is held.
func (c *InstantVolumes) newestFirst() []*volumes.Volume {
	vs := slices.Collect(maps.Values(c.volumes))
	slices.SortFunc(vs, func(a, b *volumes.Volume) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return vs
}

func clone(v *volumes.Volume) *volumes.Volume {
	cp := *v
	cp.Metadata = maps.Clone(v.Metadata)
	return &cp
}

func hasAll(m, match map[string]string) bool {
	for k, want := range match {
		if got, ok := m[k]; !ok || got != want {
			return false
		}
	}
	return true
}

func hasAnyKey(m, keys map[string]string) bool {
	for k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// notFound answers as gophercloud does for Cinder's 404.
func notFound(what string) error {
	return gophercloud.ErrUnexpectedResponseCode{Actual: http.StatusNotFound, Expected: []int{http.StatusOK, http.StatusAccepted},
		Body: []byte(what + " could not be found.")}
}
