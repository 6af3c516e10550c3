package backups_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// stackClients connects to the local stack's Cinder through Keystone.
func stackClients(t *testing.T) (*backups.Client, *volumes.Client) {
	t.Helper()
	st := stacktest.Load(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sc, err := st.OpenStack().BlockStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bc, vc := backups.New(sc), volumes.New(sc)
	bc.PollInterval, vc.PollInterval = 200*time.Millisecond, 200*time.Millisecond
	return bc, vc
}

// TestBackupRestoreDeleteOnStack goes through a volume's protection, restore and deletion
// on the local stack's Cinder, and logs how long each step takes.
func TestBackupRestoreDeleteOnStack(t *testing.T) {
	bc, vc := stackClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bc.PageSize = 1 // every list goes through Cinder's next links
	run := "it-" + uuid.NewString()[:8]
	timed := func(what string, start time.Time) { t.Logf("%-40s %6.1fs", what, time.Since(start).Seconds()) }

	start := time.Now()
	vol, err := vc.Create(ctx, run, 1, map[string]string{"podguard-test": run})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteVolumeAtEnd(t, vc, vol.ID)
	if vol, err = vc.WaitForStatus(ctx, vol.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("create 1 GiB volume", start)

	key := "OS::Cinder::Volume#" + vol.ID
	fullTag := map[string]string{"podguard-checkpoint": run + "-1", "podguard-resource": key}
	incTag := map[string]string{"podguard-checkpoint": run + "-2", "podguard-resource": key}
	if b, err := bc.Find(ctx, vol.ID, fullTag); err != nil || b != nil {
		t.Fatalf("Find before any backup = %+v, %v; want nil, nil", b, err)
	}
	if p, err := bc.IncrementalParent(ctx, vol.ID); err != nil || p != nil {
		t.Fatalf("IncrementalParent before any backup = %+v, %v; want nil, nil", p, err)
	}

	// Full backup.
	start = time.Now()
	full, err := bc.Create(ctx, backups.CreateOpts{VolumeID: vol.ID, Name: run + "-full", Description: "full", Metadata: fullTag})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteBackupAtEnd(t, bc, full.ID)
	// A redelivered request finds the backup while it is being created.
	if b, err := bc.Find(ctx, vol.ID, fullTag); err != nil || b == nil || b.ID != full.ID {
		t.Fatalf("Find while creating = %+v, %v; want %s", b, err, full.ID)
	}
	if full, err = bc.WaitForStatus(ctx, full.ID, backups.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("full backup", start)
	if full.IsIncremental || full.Size != 1 || full.VolumeID != vol.ID || full.CreatedAt.IsZero() || !maps.Equal(full.Metadata, fullTag) {
		t.Errorf("full backup = %+v", full)
	}
	if b, err := bc.Find(ctx, vol.ID, fullTag); err != nil || b == nil || b.ID != full.ID || b.Status != backups.StatusAvailable {
		t.Fatalf("Find = %+v, %v; want %s available", b, err, full.ID)
	}
	if l, err := bc.LatestAvailable(ctx, vol.ID); err != nil || l == nil || l.ID != full.ID {
		t.Fatalf("LatestAvailable = %+v, %v; want %s", l, err, full.ID)
	}
	if p, err := bc.IncrementalParent(ctx, vol.ID); err != nil || p == nil || p.ID != full.ID {
		t.Fatalf("IncrementalParent = %+v, %v; want %s", p, err, full.ID)
	}

	// Incremental backup, possible because a full one exists. The volume is available
	// again once the full backup is.
	if _, err := vc.WaitForStatus(ctx, vol.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	inc, err := bc.Create(ctx, backups.CreateOpts{VolumeID: vol.ID, Name: run + "-inc", Incremental: true, Metadata: incTag})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteBackupAtEnd(t, bc, inc.ID)
	if inc, err = bc.WaitForStatus(ctx, inc.ID, backups.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("incremental backup", start)
	if !inc.IsIncremental {
		t.Errorf("incremental backup = %+v", inc)
	}
	if l, err := bc.LatestAvailable(ctx, vol.ID); err != nil || l == nil || l.ID != inc.ID {
		t.Fatalf("LatestAvailable = %+v, %v; want the incremental %s", l, err, inc.ID)
	}
	if b, err := bc.Find(ctx, vol.ID, incTag); err != nil || b == nil || b.ID != inc.ID {
		t.Fatalf("Find(incremental) = %+v, %v", b, err)
	}
	if b, err := bc.Find(ctx, vol.ID, fullTag); err != nil || b == nil || b.ID != full.ID || !b.HasDependentBackups {
		t.Fatalf("Find(full) = %+v, %v; want %s with dependents", b, err, full.ID)
	}
	if dep, err := bc.HasDependents(ctx, full.ID); err != nil || !dep {
		t.Fatalf("HasDependents(full) = %t, %v", dep, err)
	}
	if all, err := bc.List(ctx, vol.ID); err != nil || len(all) != 2 || all[0].ID != inc.ID || all[1].ID != full.ID {
		t.Fatalf("List = %+v, %v; want the incremental, then the full backup", all, err)
	}

	// Restore the incremental into a new volume, found again by its metadata.
	restoreTag := map[string]string{"podguard-restore": run, "podguard-resource": key}
	start = time.Now()
	rv, err := vc.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: run + "@" + vol.ID, BackupID: inc.ID, Metadata: restoreTag})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteVolumeAtEnd(t, vc, rv.ID)
	if rv.BackupID != inc.ID {
		t.Errorf("restored volume = %+v, want backup id %s", rv, inc.ID)
	}
	if v, err := vc.FindByMetadata(ctx, restoreTag); err != nil || v == nil || v.ID != rv.ID {
		t.Fatalf("FindByMetadata = %+v, %v; want %s", v, err, rv.ID)
	}
	if rv, err = vc.WaitForStatus(ctx, rv.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("restore into a new volume", start)
	if rv.Size != 1 || rv.Name != run+"@"+vol.ID || rv.BackupID != inc.ID {
		t.Errorf("restored volume = %+v", rv)
	}
	// Completing the restore, Cinder replaced the volume's metadata with the backed up
	// volume's, plus src_backup_id: the restore tag is gone until it is put back.
	t.Logf("restored volume's metadata: %v", rv.Metadata)
	if rv.Metadata["podguard-test"] != run || rv.Metadata[volumes.MetadataSourceBackup] != inc.ID {
		t.Errorf("restored volume's metadata = %v, want the original volume's and src_backup_id", rv.Metadata)
	}
	if v, err := vc.FindRestored(ctx, inc.ID, restoreTag); err != nil || v == nil || v.ID != rv.ID {
		t.Fatalf("FindRestored = %+v, %v; want %s", v, err, rv.ID)
	}
	if err := vc.SetMetadata(ctx, rv.ID, restoreTag); err != nil {
		t.Fatal(err)
	}
	if v, err := vc.FindByMetadata(ctx, restoreTag); err != nil || v == nil || v.ID != rv.ID || v.Metadata["podguard-test"] != run {
		t.Fatalf("FindByMetadata after SetMetadata = %+v, %v; want %s", v, err, rv.ID)
	}
	// The backup goes back to available once the restore is done.
	if _, err := bc.WaitForStatus(ctx, inc.ID, backups.StatusAvailable); err != nil {
		t.Fatal(err)
	}

	// Cinder refuses to delete a backup an incremental one depends on.
	err = bc.Delete(ctx, full.ID)
	if !errors.Is(err, backups.ErrHasDependents) || !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		t.Fatalf("deleting the full backup under its incremental: err = %v, want ErrHasDependents (400)", err)
	}
	t.Logf("refused: %v", err)

	start = time.Now()
	if err := bc.Delete(ctx, inc.ID); err != nil {
		t.Fatal(err)
	}
	if err := bc.Delete(ctx, inc.ID); err != nil {
		t.Fatalf("deleting again a backup being deleted: %v", err)
	}
	if err := bc.WaitForDeleted(ctx, inc.ID); err != nil {
		t.Fatal(err)
	}
	timed("delete incremental backup", start)
	// Cinder lowers the full backup's count of dependents only after the incremental is
	// gone: until then Delete says the dependents are going (try again), never that it
	// has dependents.
	start = time.Now()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	deadline := time.After(time.Minute)
	for going := 0; ; going++ {
		err := bc.Delete(ctx, full.ID)
		if err == nil {
			t.Logf("deleting the full backup: %d answers 'dependents going' first", going)
			break
		}
		if !errors.Is(err, backups.ErrDependentsGoing) {
			t.Fatalf("deleting the full backup once its incremental is gone: %v", err)
		}
		select {
		case <-poll.C:
		case <-deadline:
			t.Fatalf("the full backup still counts dependents a minute after its incremental was deleted: %v", err)
		}
	}
	if err := bc.WaitForDeleted(ctx, full.ID); err != nil {
		t.Fatal(err)
	}
	timed("delete full backup", start)
	if err := bc.Delete(ctx, full.ID); err != nil {
		t.Fatalf("deleting a deleted backup: %v", err)
	}
	if b, err := bc.Find(ctx, vol.ID, fullTag); err != nil || b != nil {
		t.Fatalf("Find after deletion = %+v, %v; want nil, nil", b, err)
	}

	start = time.Now()
	for _, id := range []string{rv.ID, vol.ID} {
		if err := vc.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := vc.WaitForDeleted(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	timed("delete both volumes", start)
	if v, err := vc.FindByMetadata(ctx, restoreTag); err != nil || v != nil {
		t.Fatalf("FindByMetadata after deletion = %+v, %v; want nil, nil", v, err)
	}
}

// TestIncrementalWithoutFullOnStack shows that Cinder refuses an incremental backup of a
// volume without backups, as IncrementalParent predicts.
func TestIncrementalWithoutFullOnStack(t *testing.T) {
	bc, vc := stackClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := "it-" + uuid.NewString()[:8]
	vol, err := vc.Create(ctx, run, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteVolumeAtEnd(t, vc, vol.ID)
	if _, err = vc.WaitForStatus(ctx, vol.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	b, err := bc.Create(ctx, backups.CreateOpts{VolumeID: vol.ID, Incremental: true, Metadata: map[string]string{"podguard-test": run}})
	if err == nil {
		stacktest.DeleteBackupAtEnd(t, bc, b.ID)
		t.Fatalf("an incremental backup of a volume without backups was accepted: %+v", b)
	}
	if !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		t.Fatalf("err = %v, want a 400", err)
	}
	t.Logf("refused: %v", err)
}
