package stacktest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
)

// DeleteVolumeAtEnd deletes a Cinder volume when the test ends, once it is deletable
// (not creating or restoring); one already gone is fine.
func DeleteVolumeAtEnd(t testing.TB, vc *volumes.Client, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := vc.WaitForStatus(ctx, id, volumes.StatusAvailable, volumes.StatusError, volumes.StatusErrorRestoring); err != nil &&
			!gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			t.Logf("cleanup: %v", err)
		}
		if err := vc.Delete(ctx, id); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if err := vc.WaitForDeleted(ctx, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// DeleteBackupAtEnd deletes a Cinder backup when the test ends, once it is deletable (a
// restore holds it in restoring), unless the test deleted it. Cleanups run last first, so
// an incremental backup registered after its parent goes first.
func DeleteBackupAtEnd(t testing.TB, bc *backups.Client, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		b, err := bc.WaitForStatus(ctx, id, backups.StatusAvailable, backups.StatusError, backups.StatusDeleting)
		if err != nil {
			if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
				t.Logf("cleanup: %v", err)
			}
			return
		}
		if b.Status != backups.StatusDeleting {
			if err := bc.Delete(ctx, id); err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
		}
		if err := bc.WaitForDeleted(ctx, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// RemoveContainerAtEnd empties and deletes a bank container (reached with the given auth)
// when the test ends.
func (s *Stack) RemoveContainerAtEnd(t testing.TB, auth, container string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := removeContainer(ctx, s.Bank(auth, container), s); err != nil {
			t.Logf("remove bank container %s: %v", container, err)
		}
	})
}
