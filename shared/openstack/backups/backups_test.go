package backups_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/backups"
)

func tag(checkpoint, resource string) map[string]string {
	return map[string]string{"podguard-checkpoint": checkpoint, "podguard-resource": resource}
}

func TestNewSetsMicroversionOnACopy(t *testing.T) {
	f := newFakeCinder(t)
	sc := f.srv.ServiceClient()
	c := backups.New(sc)
	if sc.Microversion != "" {
		t.Errorf("New changed the caller's client: microversion %q", sc.Microversion)
	}
	// The fake answers 406 unless the microversion header is sent.
	if _, err := c.List(context.Background(), "v1"); err != nil {
		t.Fatalf("List: %v", err)
	}
	if _, err := sc.Get(context.Background(), sc.ServiceURL("backups", "detail"), nil, nil); !gophercloud.ResponseCodeIs(err, http.StatusNotAcceptable) {
		t.Errorf("without the microversion the fake should answer 406, got %v", err)
	}
}

func TestFindReadsEveryPage(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	want := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable, Metadata: tag("cp1", "vol#v1")})
	for range 4 { // newer backups of the same volume push the wanted one to the third page
		f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable, Metadata: tag("cp0", "vol#v1")})
	}
	f.add(fakeBackup{VolumeID: "v2", Status: backups.StatusAvailable, Metadata: tag("cp1", "vol#v1")})

	got, err := f.client().Find(ctx, "v1", tag("cp1", "vol#v1"))
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.ID != want.ID || got.VolumeID != "v1" || got.Metadata["podguard-checkpoint"] != "cp1" {
		t.Fatalf("Find = %+v, want backup %s", got, want.ID)
	}
	if f.lists != 3 {
		t.Errorf("Find read %d pages, want 3 (5 backups, pages of 2)", f.lists)
	}

	// A smaller page size of the client's own is honoured too.
	c := f.client()
	c.PageSize = 1
	f.lists = 0
	if got, err := c.Find(ctx, "v1", tag("cp1", "vol#v1")); err != nil || got == nil || got.ID != want.ID {
		t.Fatalf("Find with page size 1 = %+v, %v", got, err)
	}
	if f.lists != 5 {
		t.Errorf("Find read %d pages of 1, want 5", f.lists)
	}
}

func TestFindMatchesAllOfTheMetadata(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable, Metadata: map[string]string{"podguard-checkpoint": "cp1"}})
	f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusDeleting, Metadata: tag("cp1", "vol#v1")})
	c := f.client()

	got, err := c.Find(ctx, "v1", tag("cp1", "vol#v1"))
	if err != nil || got != nil {
		t.Fatalf("Find = %+v, %v; want nil, nil (partial match and a backup being deleted)", got, err)
	}
	errored := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusError, FailReason: "disk full", Metadata: tag("cp1", "vol#v1")})
	got, err = c.Find(ctx, "v1", tag("cp1", "vol#v1"))
	if err != nil || got == nil || got.ID != errored.ID || got.FailReason != "disk full" {
		t.Fatalf("Find = %+v, %v; want the backup in error %s, with its reason", got, err, errored.ID)
	}
	retried := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusCreating, Metadata: tag("cp1", "vol#v1")})
	got, err = c.Find(ctx, "v1", tag("cp1", "vol#v1"))
	if err != nil || got == nil || got.ID != retried.ID {
		t.Fatalf("Find = %+v, %v; want the newest match %s", got, err, retried.ID)
	}

	if _, err := c.Find(ctx, "v1", nil); err == nil {
		t.Error("Find with no metadata should fail: it would match any backup")
	}
	if _, err := c.Find(ctx, "", tag("cp1", "x")); err == nil {
		t.Error("Find with no volume should fail: it would list every backup")
	}
}

func TestFindRefusesBackupsWithoutMetadata(t *testing.T) {
	f := newFakeCinder(t)
	f.noMetadata = true
	f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable})
	_, err := f.client().Find(context.Background(), "v1", tag("cp1", "vol#v1"))
	if err == nil || !strings.Contains(err.Error(), backups.Microversion) {
		t.Fatalf("Find on an endpoint that drops metadata: err = %v, want an error naming the microversion", err)
	}
}

func TestCreate(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	meta := tag("cp1", "OS::Cinder::Volume#v1")
	b, err := c.Create(ctx, backups.CreateOpts{VolumeID: "v1", Name: "n", Description: "d", Container: "c1", Force: true, Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID == "" || b.Status != backups.StatusCreating || b.VolumeID != "v1" || b.Name != "n" || b.IsIncremental || b.Metadata["podguard-resource"] != meta["podguard-resource"] {
		t.Errorf("Create = %+v", b)
	}
	meta["podguard-resource"] = "changed"
	if b.Metadata["podguard-resource"] == "changed" {
		t.Error("the returned backup shares the caller's metadata map")
	}
	want := map[string]any{"volume_id": "v1", "name": "n", "description": "d", "container": "c1", "force": true}
	for k, v := range want {
		if f.lastCreate[k] != v {
			t.Errorf("create request %s = %v, want %v (body %v)", k, f.lastCreate[k], v, f.lastCreate)
		}
	}
	if _, ok := f.lastCreate["incremental"]; ok {
		t.Errorf("a full backup sent incremental: %v", f.lastCreate)
	}

	got, err := c.Find(ctx, "v1", tag("cp1", "OS::Cinder::Volume#v1"))
	if err != nil || got == nil || got.ID != b.ID {
		t.Fatalf("Find after Create = %+v, %v", got, err)
	}
}

func TestIncremental(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()

	_, err := c.Create(ctx, backups.CreateOpts{VolumeID: "v1", Incremental: true})
	if !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "v1") {
		t.Fatalf("incremental without a full backup: err = %v, want a 400 naming the volume", err)
	}
	if p, err := c.IncrementalParent(ctx, "v1"); err != nil || p != nil {
		t.Fatalf("IncrementalParent with no backup = %+v, %v", p, err)
	}

	full := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable})
	if p, err := c.IncrementalParent(ctx, "v1"); err != nil || p == nil || p.ID != full.ID {
		t.Fatalf("IncrementalParent = %+v, %v; want %s", p, err, full.ID)
	}
	inc, err := c.Create(ctx, backups.CreateOpts{VolumeID: "v1", Incremental: true})
	if err != nil || !inc.IsIncremental || f.lastCreate["incremental"] != true {
		t.Fatalf("incremental Create = %+v, %v (body %v)", inc, err, f.lastCreate)
	}
	// The newest backup is still being created: an incremental is not possible now,
	// though an older backup is available.
	if p, err := c.IncrementalParent(ctx, "v1"); err != nil || p != nil {
		t.Fatalf("IncrementalParent while the newest is creating = %+v, %v; want nil", p, err)
	}
	if l, err := c.LatestAvailable(ctx, "v1"); err != nil || l == nil || l.ID != full.ID {
		t.Fatalf("LatestAvailable = %+v, %v; want %s", l, err, full.ID)
	}
	f.find(inc.ID).Status = backups.StatusAvailable
	if l, err := c.LatestAvailable(ctx, "v1"); err != nil || l == nil || l.ID != inc.ID || !l.IsIncremental {
		t.Fatalf("LatestAvailable = %+v, %v; want the incremental %s", l, err, inc.ID)
	}
	if l, err := c.LatestAvailable(ctx, "v2"); err != nil || l != nil {
		t.Fatalf("LatestAvailable of a volume without backups = %+v, %v", l, err)
	}
	if dep, err := c.HasDependents(ctx, full.ID); err != nil || !dep {
		t.Fatalf("HasDependents(full) = %t, %v; want true", dep, err)
	}
}

func TestDelete(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()

	if err := c.Delete(ctx, "missing"); err != nil {
		t.Fatalf("deleting a missing backup: %v, want success", err)
	}

	full := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable})
	inc := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusAvailable, Incremental: true, Parent: full.ID})
	err := c.Delete(ctx, full.ID)
	if !errors.Is(err, backups.ErrHasDependents) || !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || !strings.Contains(err.Error(), full.ID) {
		t.Fatalf("deleting a backup with a dependent: err = %v, want ErrHasDependents and a 400 naming it", err)
	}

	if err := c.Delete(ctx, inc.ID); err != nil {
		t.Fatal(err)
	}
	// A redelivered delete finds it being deleted: success too.
	if err := c.Delete(ctx, inc.ID); err != nil {
		t.Fatalf("deleting a backup being deleted: %v", err)
	}
	// Until the incremental is gone, Cinder still counts it: its parent's deletion is to
	// be tried again, not a settled refusal.
	if err := c.Delete(ctx, full.ID); !errors.Is(err, backups.ErrDependentsGoing) || errors.Is(err, backups.ErrHasDependents) {
		t.Fatalf("deleting the full backup while its incremental is being deleted: %v, want ErrDependentsGoing", err)
	}
	if err := c.WaitForDeleted(ctx, inc.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, full.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForDeleted(ctx, full.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, full.ID); err != nil {
		t.Fatalf("deleting a deleted backup: %v", err)
	}

	busy := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusCreating})
	if err := c.Delete(ctx, busy.ID); !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || errors.Is(err, backups.ErrHasDependents) {
		t.Fatalf("deleting a backup being created: err = %v, want a plain 400", err)
	}
	if err := c.WaitForDeleted(ctx, busy.ID); err == nil || !strings.Contains(err.Error(), backups.StatusCreating) {
		t.Fatalf("waiting for the deletion of a backup nobody deletes: err = %v", err)
	}
}

func TestWaitForStatus(t *testing.T) {
	f := newFakeCinder(t)
	ctx := context.Background()
	c := f.client()
	b := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusCreating})
	f.onGet = func(x *fakeBackup) {
		if x.Gets == 3 {
			x.Status = backups.StatusAvailable
		}
	}
	got, err := c.WaitForStatus(ctx, b.ID, backups.StatusAvailable)
	if err != nil || got.Status != backups.StatusAvailable {
		t.Fatalf("WaitForStatus = %+v, %v", got, err)
	}
	if b.Gets != 3 {
		t.Errorf("read the backup %d times, want 3", b.Gets)
	}
	// Already there: one read.
	if _, err := c.WaitForStatus(ctx, b.ID, backups.StatusError, backups.StatusAvailable); err != nil || b.Gets != 4 {
		t.Fatalf("WaitForStatus on a backup already available: %v after %d reads", err, b.Gets)
	}
	if _, err := c.WaitForStatus(ctx, b.ID); err == nil {
		t.Error("WaitForStatus without statuses should fail")
	}
}

func TestWaitForStatusFailsFastOnError(t *testing.T) {
	f := newFakeCinder(t)
	c := f.client()
	c.PollInterval = time.Hour // a second poll would hang the test
	b := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusError, FailReason: "backup driver: no space left on device"})
	_, err := c.WaitForStatus(context.Background(), b.ID, backups.StatusAvailable)
	var se *backups.FailedError
	if !errors.As(err, &se) || se.Status != backups.StatusError || se.Reason != b.FailReason || se.ID != b.ID {
		t.Fatalf("err = %v, want a *FailedError with the fail reason", err)
	}
	if !strings.Contains(err.Error(), b.ID) || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("error %q should name the backup and the reason", err)
	}
	// Waiting for error itself is fine.
	if got, err := c.WaitForStatus(context.Background(), b.ID, backups.StatusError); err != nil || got.FailReason != b.FailReason {
		t.Fatalf("WaitForStatus(error) = %+v, %v", got, err)
	}
}

func TestWaitForStatusMissing(t *testing.T) {
	f := newFakeCinder(t)
	_, err := f.client().WaitForStatus(context.Background(), "gone", backups.StatusAvailable)
	if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("err = %v, want a 404 naming the backup", err)
	}
}

func TestWaitForStatusHonoursContext(t *testing.T) {
	f := newFakeCinder(t)
	c := f.client()
	b := f.add(fakeBackup{VolumeID: "v1", Status: backups.StatusCreating})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.onGet = func(x *fakeBackup) {
		if x.Gets == 3 {
			cancel()
		}
	}
	_, err := c.WaitForStatus(ctx, b.ID, backups.StatusAvailable)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if b.Gets != 3 {
		t.Errorf("read the backup %d times after the cancel at the third", b.Gets)
	}

	// A deadline that passes between two reads ends the wait at once, however long the
	// interval, and the error says where the backup was.
	c.PollInterval = time.Hour
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(50*time.Millisecond))
	defer dcancel()
	done := make(chan error, 1)
	go func() { _, err := c.WaitForStatus(dctx, b.ID, backups.StatusAvailable); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still creating") {
			t.Fatalf("err = %v, want context.DeadlineExceeded and the last status", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitForStatus ignored the deadline")
	}

	// An ended context stops the wait before any read.
	gets := b.Gets
	if _, err := c.WaitForStatus(ctx, b.ID, backups.StatusAvailable); !errors.Is(err, context.Canceled) || b.Gets != gets {
		t.Fatalf("err = %v after %d reads, want context.Canceled and none", err, b.Gets-gets)
	}
}
