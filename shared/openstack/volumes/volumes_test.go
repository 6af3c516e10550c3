package volumes_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/volumes"
)

func tag(restore, resource string) map[string]string {
	return map[string]string{"podguard-restore": restore, "podguard-resource": resource}
}

func TestNewSetsMicroversionOnACopy(t *testing.T) {
	f := newFakeCinder(t)
	sc := f.srv.ServiceClient()
	c := volumes.New(sc)
	if sc.Microversion != "" {
		t.Errorf("New changed the caller's client: microversion %q", sc.Microversion)
	}
	if _, err := c.FindByMetadata(context.Background(), tag("r", "x")); err != nil {
		t.Fatalf("FindByMetadata: %v", err)
	}
	if _, err := sc.Get(context.Background(), sc.ServiceURL("volumes", "detail"), nil, nil); !gophercloud.ResponseCodeIs(err, http.StatusNotAcceptable) {
		t.Errorf("without the microversion the fake should answer 406, got %v", err)
	}
}

func TestFindByMetadata(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	// Keys and values as podguard writes them, and quotes that a naive literal breaks on.
	match := tag("r1", "OS::Cinder::Volume#6f1c'9\"x")
	want := f.add(fakeVolume{Name: "restored", Status: volumes.StatusAvailable, BackupID: "b1", Metadata: maps.Clone(match)})
	for range 4 {
		m := maps.Clone(match)
		m["extra"] = "x"
		f.add(fakeVolume{Status: volumes.StatusDeleting, Metadata: m})
	}
	f.add(fakeVolume{Status: volumes.StatusAvailable, Metadata: tag("r2", match["podguard-resource"])})

	got, err := f.client().FindByMetadata(ctx, match)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.ID != want.ID || got.Name != "restored" || got.Size != 1 || !maps.Equal(got.Metadata, match) {
		t.Fatalf("FindByMetadata = %+v, want volume %s", got, want.ID)
	}
	if f.lists != 3 {
		t.Errorf("read %d pages, want 3 (5 matching volumes, pages of 2)", f.lists)
	}
	if len(f.filters) == 0 || !maps.Equal(f.filters[0], match) {
		t.Errorf("Cinder saw the metadata filter %v, want %v", f.filters, match)
	}

	if got, err := f.client().FindByMetadata(ctx, tag("r3", "none")); err != nil || got != nil {
		t.Fatalf("FindByMetadata with no match = %+v, %v; want nil, nil", got, err)
	}
	if _, err := f.client().FindByMetadata(ctx, nil); err == nil {
		t.Error("FindByMetadata with no metadata should fail: it would match any volume")
	}

	// The newest of several matches wins; volumes being deleted never do.
	newer := f.add(fakeVolume{Status: volumes.StatusCreating, Metadata: maps.Clone(match)})
	f.add(fakeVolume{Status: volumes.StatusErrorDeleting, Metadata: maps.Clone(match)})
	c := f.client()
	c.PageSize = 1
	if got, err := c.FindByMetadata(ctx, match); err != nil || got == nil || got.ID != newer.ID {
		t.Fatalf("FindByMetadata = %+v, %v; want the newest match %s", got, err, newer.ID)
	}
}

func TestCreateFromBackup(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	meta := tag("r1", "OS::Cinder::Volume#v0")
	v, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "cp@v0", Description: "d", BackupID: "b1", Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if v.ID == "" || v.Status != volumes.StatusCreating || v.BackupID != "b1" || v.Name != "cp@v0" || !maps.Equal(v.Metadata, meta) {
		t.Errorf("CreateFromBackup = %+v", v)
	}
	if f.lastCreate["backup_id"] != "b1" || f.lastCreate["description"] != "d" {
		t.Errorf("create request = %v", f.lastCreate)
	}
	for _, k := range []string{"size", "volume_type", "availability_zone"} {
		if _, ok := f.lastCreate[k]; ok {
			t.Errorf("create request sent %s: %v (zero means Cinder's choice)", k, f.lastCreate)
		}
	}
	got, err := c.FindByMetadata(ctx, meta)
	if err != nil || got == nil || got.ID != v.ID {
		t.Fatalf("FindByMetadata after CreateFromBackup = %+v, %v", got, err)
	}

	if _, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "x", BackupID: "b1", Size: 3, VolumeType: "fast", AvailabilityZone: "az2"}); err != nil {
		t.Fatal(err)
	}
	if f.lastCreate["size"] != 3.0 || f.lastCreate["volume_type"] != "fast" || f.lastCreate["availability_zone"] != "az2" {
		t.Errorf("create request = %v", f.lastCreate)
	}
	if _, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "x"}); err == nil {
		t.Error("CreateFromBackup without a backup should fail")
	}
}

func TestCreate(t *testing.T) {
	f := newFakeCinder(t)
	c := f.client()
	v, err := c.Create(context.Background(), "plain", 2, map[string]string{"podguard-test": "1"})
	if err != nil || v.Size != 2 || v.Name != "plain" || v.Metadata["podguard-test"] != "1" || v.BackupID != "" {
		t.Fatalf("Create = %+v, %v", v, err)
	}
	if _, err := c.Create(context.Background(), "nosize", 0, nil); !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "nosize") {
		t.Fatalf("Create without a size: err = %v, want a 400 naming the volume", err)
	}
}

func TestDelete(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	if err := c.Delete(ctx, "missing"); err != nil {
		t.Fatalf("deleting a missing volume: %v, want success", err)
	}
	v := f.add(fakeVolume{Status: volumes.StatusAvailable})
	if err := c.Delete(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, v.ID); err != nil {
		t.Fatalf("deleting a volume being deleted: %v, want success", err)
	}
	if err := c.WaitForDeleted(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, v.ID); err != nil {
		t.Fatalf("deleting a deleted volume: %v", err)
	}
	busy := f.add(fakeVolume{Status: volumes.StatusBackingUp})
	if err := c.Delete(ctx, busy.ID); !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || !strings.Contains(err.Error(), busy.ID) {
		t.Fatalf("deleting a volume being backed up: err = %v, want a 400 naming it", err)
	}
	if err := c.WaitForDeleted(ctx, busy.ID); err == nil || !strings.Contains(err.Error(), volumes.StatusBackingUp) {
		t.Fatalf("waiting for the deletion of a volume nobody deletes: err = %v", err)
	}
}

func TestWaitForStatus(t *testing.T) {
	f := newFakeCinder(t)
	c := f.client()
	v := f.add(fakeVolume{Status: volumes.StatusCreating})
	f.onGet = func(x *fakeVolume) {
		switch x.Gets {
		case 2:
			x.Status = volumes.StatusRestoringBackup
		case 4:
			x.Status = volumes.StatusAvailable
		}
	}
	got, err := c.WaitForStatus(context.Background(), v.ID, volumes.StatusAvailable, volumes.StatusInUse)
	if err != nil || got.Status != volumes.StatusAvailable || v.Gets != 4 {
		t.Fatalf("WaitForStatus = %+v, %v after %d reads", got, err, v.Gets)
	}
	if _, err := c.WaitForStatus(context.Background(), v.ID); err == nil {
		t.Error("WaitForStatus without statuses should fail")
	}
}

func TestWaitForStatusFailsFast(t *testing.T) {
	for _, status := range []string{volumes.StatusError, volumes.StatusErrorRestoring} {
		t.Run(status, func(t *testing.T) {
			f := newFakeCinder(t)
			c := f.client()
			c.PollInterval = time.Hour // a second poll would hang the test
			v := f.add(fakeVolume{Status: status})
			f.messages[v.ID] = []map[string]any{
				{"user_message": "create volume from backup: older", "created_at": "2026-01-02T03:04:05.000000"},
				{"user_message": "restore backup: the backup service failed", "created_at": "2026-01-02T03:04:09.000000"},
			}
			_, err := c.WaitForStatus(context.Background(), v.ID, volumes.StatusAvailable)
			var fe *volumes.FailedError
			if !errors.As(err, &fe) || fe.ID != v.ID || fe.Status != status || fe.Reason != "restore backup: the backup service failed" {
				t.Fatalf("err = %v, want a *FailedError with the newest message", err)
			}
			if !strings.Contains(err.Error(), v.ID) || !strings.Contains(err.Error(), status) {
				t.Errorf("error %q should name the volume and its status", err)
			}
		})
	}
	// Without messages the error still names the status; waiting for the error is fine.
	f := newFakeCinder(t)
	c := f.client()
	v := f.add(fakeVolume{Status: volumes.StatusError})
	var fe *volumes.FailedError
	if _, err := c.WaitForStatus(context.Background(), v.ID, volumes.StatusAvailable); !errors.As(err, &fe) || fe.Reason != "" {
		t.Fatalf("err = %v", err)
	}
	if got, err := c.WaitForStatus(context.Background(), v.ID, volumes.StatusError); err != nil || got.Status != volumes.StatusError {
		t.Fatalf("WaitForStatus(error) = %+v, %v", got, err)
	}
}

func TestWaitForStatusMissing(t *testing.T) {
	f := newFakeCinder(t)
	_, err := f.client().WaitForStatus(context.Background(), "gone", volumes.StatusAvailable)
	if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("err = %v, want a 404 naming the volume", err)
	}
}

func TestWaitForStatusHonoursContext(t *testing.T) {
	f := newFakeCinder(t)
	c := f.client()
	v := f.add(fakeVolume{Status: volumes.StatusCreating})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.onGet = func(x *fakeVolume) {
		if x.Gets == 3 {
			cancel()
		}
	}
	if _, err := c.WaitForStatus(ctx, v.ID, volumes.StatusAvailable); !errors.Is(err, context.Canceled) || v.Gets != 3 {
		t.Fatalf("err = %v after %d reads, want context.Canceled after 3", err, v.Gets)
	}

	c.PollInterval = time.Hour
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(50*time.Millisecond))
	defer dcancel()
	done := make(chan error, 1)
	go func() { _, err := c.WaitForStatus(dctx, v.ID, volumes.StatusAvailable); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still creating") {
			t.Fatalf("err = %v, want context.DeadlineExceeded and the last status", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitForStatus ignored the deadline")
	}
}

func TestFindRestoredAfterCinderReplacedTheMetadata(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	f.backedUp["b1"] = map[string]string{"app": "db"}
	tag1 := tag("r1", "OS::Cinder::Volume#v0")

	v, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "cp@v0", BackupID: "b1", Metadata: tag1})
	if err != nil {
		t.Fatal(err)
	}
	// While the restore runs, the volume carries its tag.
	if got, err := c.FindRestored(ctx, "b1", tag1); err != nil || got == nil || got.ID != v.ID {
		t.Fatalf("FindRestored while restoring = %+v, %v; want %s", got, err, v.ID)
	}

	f.mu.Lock()
	f.finishRestore(f.find(v.ID))
	f.mu.Unlock()
	if got, err := c.FindByMetadata(ctx, tag1); err != nil || got != nil {
		t.Fatalf("FindByMetadata after the restore = %+v, %v; want nil: Cinder replaced the metadata", got, err)
	}
	got, err := c.FindRestored(ctx, "b1", tag1)
	if err != nil || got == nil || got.ID != v.ID || got.BackupID != "b1" || got.Metadata["app"] != "db" {
		t.Fatalf("FindRestored after the restore = %+v, %v; want %s restored from b1", got, err, v.ID)
	}

	// Putting the tag back keeps what Cinder restored.
	if err := c.SetMetadata(ctx, v.ID, tag1); err != nil {
		t.Fatal(err)
	}
	got, err = c.FindByMetadata(ctx, tag1)
	if err != nil || got == nil || got.ID != v.ID || got.Metadata["app"] != "db" || got.BackupID != "b1" {
		t.Fatalf("FindByMetadata after SetMetadata = %+v, %v", got, err)
	}

	// Another restore of the same backup does not adopt a volume tagged for the first.
	tag2 := tag("r2", "OS::Cinder::Volume#v0")
	if got, err := c.FindRestored(ctx, "b1", tag2); err != nil || got != nil {
		t.Fatalf("FindRestored(r2) = %+v, %v; want nil: the volume belongs to r1", got, err)
	}
	if got, err := c.FindRestored(ctx, "b2", tag1); err != nil || got == nil || got.ID != v.ID {
		t.Fatalf("FindRestored by tag = %+v, %v; the tag alone is enough", got, err)
	}
	if _, err := c.FindRestored(ctx, "", tag1); err == nil {
		t.Error("FindRestored without a backup should fail")
	}
	if err := c.SetMetadata(ctx, "missing", tag1); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("SetMetadata of a missing volume: err = %v, want a 404 naming it", err)
	}
}

// Racing creates of one restored volume: ListNamed finds every volume of the name,
// tagged or not, oldest first, and leaves out those being deleted.
func TestListNamed(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	first, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "cp@v0", BackupID: "b1", Metadata: tag("r1", "OS::Cinder::Volume#v0")})
	if err != nil {
		t.Fatal(err)
	}
	f.add(fakeVolume{Name: "cp@v1", Status: volumes.StatusAvailable})
	second, err := c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: "cp@v0", BackupID: "b1", Metadata: tag("r1", "OS::Cinder::Volume#v0")})
	if err != nil {
		t.Fatal(err)
	}
	gone := f.add(fakeVolume{Name: "cp@v0", Status: volumes.StatusDeleting})
	f.mu.Lock()
	f.finishRestore(f.find(second.ID)) // its tag is gone
	f.mu.Unlock()

	got, err := c.ListNamed(ctx, "cp@v0")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != first.ID || got[1].ID != second.ID {
		t.Fatalf("ListNamed = %+v, want %s then %s (not %s, being deleted)", got, first.ID, second.ID, gone.ID)
	}
	if f.lists < 2 {
		t.Fatalf("%d list requests: the fake pages by 2, so the listing must have paged", f.lists)
	}
	if _, err := c.ListNamed(ctx, ""); err == nil {
		t.Error("ListNamed without a name should fail")
	}
}
