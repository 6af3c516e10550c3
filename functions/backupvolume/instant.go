package backupvolume

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/backups"
)

// InstantCinder is an in-process stand-in for Cinder's backup API whose backups are
// available at once. It exists for benchmarks and runs without Cinder; Missing volumes
// answer as Cinder does when a volume does not exist.
type InstantCinder struct {
	mu      sync.Mutex
	backups map[string]*backups.Backup
	Missing map[string]bool
	// Busy counts, per volume, the next backups refused because the volume is busy, as
	// Cinder refuses one while another backup of the volume is being made.
	Busy map[string]int
}

// NewInstantCinder returns an empty instant Cinder.
func NewInstantCinder() *InstantCinder {
	return &InstantCinder{backups: map[string]*backups.Backup{}, Missing: map[string]bool{}, Busy: map[string]int{}}
}

// List returns the backups of a volume.
func (c *InstantCinder) List(_ context.Context, volumeID string) ([]backups.Backup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []backups.Backup
	for _, b := range c.backups {
		if b.VolumeID == volumeID {
			out = append(out, *b)
		}
	}
	return out, nil
}

// Delete removes a backup; a missing one counts as deleted.
func (c *InstantCinder) Delete(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.backups, id)
	return nil
}

// Create makes an available backup.
func (c *InstantCinder) Create(_ context.Context, o backups.CreateOpts) (*backups.Backup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Missing[o.VolumeID] {
		return nil, notFound(o.VolumeID)
	}
	if c.Busy[o.VolumeID] > 0 {
		c.Busy[o.VolumeID]--
		return nil, gophercloud.ErrUnexpectedResponseCode{Actual: http.StatusBadRequest, Expected: []int{http.StatusAccepted},
			Body: []byte(`{"badRequest": {"code": 400, "message": "Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"backing-up\"."}}`)}
	}
	b := &backups.Backup{ID: fmt.Sprintf("instant-%d", len(c.backups)+1), VolumeID: o.VolumeID, Name: o.Name, Status: backups.StatusAvailable,
		Size: 1, IsIncremental: o.Incremental, Metadata: maps.Clone(o.Metadata), CreatedAt: time.Now().UTC()}
	c.backups[b.ID] = b
	cp := *b
	return &cp, nil
}

// IncrementalParent returns the volume's newest backup.
func (c *InstantCinder) IncrementalParent(_ context.Context, volumeID string) (*backups.Backup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var newest *backups.Backup
	for _, b := range c.backups {
		if b.VolumeID == volumeID && (newest == nil || b.CreatedAt.After(newest.CreatedAt)) {
			newest = b
		}
	}
	return newest, nil
}

// Count is the number of backups made.
func (c *InstantCinder) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.backups)
}

// notFound answers as gophercloud does for Cinder's 404.
func notFound(id string) error {
	return gophercloud.ErrUnexpectedResponseCode{Actual: http.StatusNotFound, Expected: []int{http.StatusOK, http.StatusAccepted},
		Body: []byte(id + " not found")}
}
