package deletebackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/backups"
)

// fakeCinder answers Get and Delete as backups.Client does against Cinder: a deletion is
// accepted only for an available or errored backup without dependents, the backup is then
// deleting for a while, and gone (404) or back in error when the deletion fails.
type fakeCinder struct {
	mu      sync.Mutex
	backups map[string]*fakeBackup
	deletes map[string]int // Delete calls per backup
	// getErr, when set, answers every Get.
	getErr error
}

type fakeBackup struct {
	id, status, failReason string
	parent                 string
	// deletingGets is how many Gets answer "deleting" after the deletion was accepted.
	deletingGets int
	// deleteFails makes the deletion end in status error with this reason.
	deleteFails string
}

func newFakeCinder(bs ...*fakeBackup) *fakeCinder {
	c := &fakeCinder{backups: map[string]*fakeBackup{}, deletes: map[string]int{}}
	for _, b := range bs {
		c.backups[b.id] = b
	}
	return c
}

func cinderFault(code int, msg string) error {
	kind := map[int]string{400: "badRequest", 404: "itemNotFound", 503: "serviceUnavailable"}[code]
	body, _ := json.Marshal(map[string]any{kind: map[string]any{"code": code, "message": msg}})
	return gophercloud.ErrUnexpectedResponseCode{Actual: code, Expected: []int{200, 202}, Body: body}
}

func (c *fakeCinder) Get(_ context.Context, id string) (*backups.Backup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.getErr != nil {
		return nil, fmt.Errorf("get backup %s: %w", id, c.getErr)
	}
	b, ok := c.backups[id]
	if !ok {
		return nil, fmt.Errorf("get backup %s: %w", id, cinderFault(404, "Backup "+id+" could not be found."))
	}
	if b.status == backups.StatusDeleting {
		if b.deletingGets > 0 {
			b.deletingGets--
		} else if b.deleteFails != "" {
			b.status, b.failReason = backups.StatusError, b.deleteFails
		} else {
			delete(c.backups, id)
			return nil, fmt.Errorf("get backup %s: %w", id, cinderFault(404, "Backup "+id+" could not be found."))
		}
	}
	return &backups.Backup{ID: b.id, Status: b.status, FailReason: b.failReason, IsIncremental: b.parent != "", HasDependentBackups: c.dependents(id)}, nil
}

func (c *fakeCinder) dependents(id string) bool {
	for _, x := range c.backups {
		if x.parent == id {
			return true
		}
	}
	return false
}

func (c *fakeCinder) Delete(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deletes[id]++
	b, ok := c.backups[id]
	switch {
	case !ok, b.status == backups.StatusDeleting:
		return nil
	case b.status != backups.StatusAvailable && b.status != backups.StatusError:
		return fmt.Errorf("delete backup %s: %w", id, cinderFault(400, "Invalid backup: Backup status must be available or error"))
	case c.dependents(id):
		return fmt.Errorf("delete backup %s: %w: %w", id, backups.ErrHasDependents, cinderFault(400, "Invalid backup: Incremental backups exist for this backup."))
	}
	b.status, b.failReason = backups.StatusDeleting, ""
	return nil
}

func (c *fakeCinder) exists(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.backups[id]
	return ok
}

const (
	cp        = "cp-1"
	batchName = "volumes-0000"
)

func vol(id string) graph.Resource {
	return graph.Resource{Type: graph.VolumeType, ID: id, Name: "ns/" + id}
}

// recorded is a bank holding checkpoint cp-1 being deleted (to the deadline), whose
// graph holds the volumes named in pairs ("volume", "backup", ...), in that order, and
// whose record of the batch holds each volume's backup as back-up-volume saves it (""
// for a volume whose backup never started).
func recorded(t *testing.T, pairs ...string) *bank.Bank {
	return stored(t, banktest.New(t, nil), deadline, true, pairs...)
}

// stored is recorded on a given bank, to a given deadline, with or without the record.
func stored(t *testing.T, b *bank.Bank, until time.Time, withRecord bool, pairs ...string) *bank.Bank {
	t.Helper()
	g := &graph.Graph{}
	rec := bank.Record{Batch: batchName, Resources: map[string]bank.ResourceRecord{}}
	for i := 0; i+1 < len(pairs); i += 2 {
		v, bk := pairs[i], pairs[i+1]
		g.Nodes = append(g.Nodes, graph.Node{Resource: vol(v)})
		if bk == "" {
			rec.Resources[vol(v).Key()] = bank.ResourceRecord{Status: events.StatusError, Reason: "Cinder volume " + v + " does not exist"}
			continue
		}
		data, err := json.Marshal(checkpoint.VolumeInfo{VolumeID: v, BackupID: bk, Mode: "full", BackupStatus: backups.StatusAvailable})
		if err != nil {
			t.Fatal(err)
		}
		rec.Resources[vol(v).Key()] = bank.ResourceRecord{Status: events.StatusAvailable, Data: data}
	}
	banktest.Protecting(t, b, bank.Checkpoint{ID: cp}, g)
	if withRecord {
		if err := b.Checkpoints().PutRecord(context.Background(), cp, rec); err != nil {
			t.Fatal(err)
		}
	}
	banktest.Deleting(t, b, cp, until)
	return b
}

func request(deadline time.Time, vols ...string) event.Event {
	req := events.StepRequest{Checkpoint: cp, Batch: batchName, Deadline: deadline}
	for _, v := range vols {
		req.Resources = append(req.Resources, vol(v))
	}
	e := event.New()
	e.SetID("delete-" + cp)
	e.SetSource("test")
	e.SetType(events.BackupDelete)
	_ = e.SetData(event.ApplicationJSON, req)
	return e
}

// testContext carries a logger that writes into the test's log.
func testContext(t *testing.T) context.Context {
	return logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
}

// handle delivers the request once; it returns nil while deletions are in progress.
func handle(t *testing.T, s *Step, e event.Event) *events.StepResult {
	t.Helper()
	out, err := s.Handle(testContext(t), e)
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	if out == nil {
		return nil
	}
	if out.Type() != events.BackupDeleted {
		t.Fatalf("reply type %s, want %s", out.Type(), events.BackupDeleted)
	}
	if err := stepSchemas(t).Validate(*out); err != nil {
		t.Fatalf("reply does not match its schema: %v", err)
	}
	var r events.StepResult
	if err := out.DataAs(&r); err != nil {
		t.Fatal(err)
	}
	if r.Checkpoint != cp || r.Batch != batchName {
		t.Fatalf("reply names %s/%s", r.Checkpoint, r.Batch)
	}
	return &r
}

func settled(t *testing.T, s *Step, e event.Event) events.StepResult {
	t.Helper()
	r := handle(t, s, e)
	if r == nil {
		t.Fatal("202: still in progress, want a reply")
	}
	return *r
}

func want(t *testing.T, got events.ResourceResult, v, status, reason string) {
	t.Helper()
	if got.Key != vol(v).Key() || got.Status != status || !strings.Contains(got.Reason, reason) || (reason == "" && got.Reason != "") {
		t.Errorf("result = %+v, want key %s, status %s, reason containing %q", got, vol(v).Key(), status, reason)
	}
}

var (
	clock    = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	now      = func() time.Time { return clock }
	deadline = clock.Add(time.Hour)
	earlier  = clock.Add(-time.Minute)
)

func TestDeletesTheRecordedBackup(t *testing.T) {
	c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable})
	s := NewStep(c, recorded(t, "v1", "b1"), now)
	r := settled(t, s, request(deadline, "v1"))
	want(t, r.Results[0], "v1", events.StatusDeleted, "")
	if c.exists("b1") || c.deletes["b1"] != 1 {
		t.Fatalf("backup still there, or deleted %d times", c.deletes["b1"])
	}
}

func TestBackupAlreadyGoneIsDeleted(t *testing.T) {
	c := newFakeCinder()
	s := NewStep(c, recorded(t, "v1", "b1"), now)
	want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusDeleted, "")
	if c.deletes["b1"] != 0 {
		t.Errorf("asked Cinder to delete a backup it does not know")
	}
}

func TestStillDeletingAnswers202ThenDeletedOnRedelivery(t *testing.T) {
	c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable, deletingGets: 2})
	s := NewStep(c, recorded(t, "v1", "b1"), now)
	e := request(deadline, "v1")
	if r := handle(t, s, e); r != nil {
		t.Fatalf("first delivery: %+v, want 202 while Cinder deletes", r)
	}
	if r := handle(t, s, e); r != nil {
		t.Fatalf("second delivery: %+v, want 202 while Cinder deletes", r)
	}
	want(t, settled(t, s, e).Results[0], "v1", events.StatusDeleted, "")
	// A late duplicate is harmless.
	want(t, settled(t, s, e).Results[0], "v1", events.StatusDeleted, "")
	if c.deletes["b1"] != 1 {
		t.Errorf("Cinder asked %d times, want once (checks only read the backup)", c.deletes["b1"])
	}
}

func TestBackupWithDependentsIsAnError(t *testing.T) {
	c := newFakeCinder(&fakeBackup{id: "full", status: backups.StatusAvailable}, &fakeBackup{id: "inc", status: backups.StatusAvailable, parent: "full"})
	s := NewStep(c, recorded(t, "v1", "full"), now)
	r := settled(t, s, request(deadline, "v1"))
	want(t, r.Results[0], "v1", events.StatusError,
		"backup full of volume v1 has newer incremental backups depending on it; delete the checkpoints holding them first (newest first)")
	if !c.exists("full") || !c.exists("inc") {
		t.Fatal("a backup went missing")
	}
}

func TestFailedDeletionIsAnError(t *testing.T) {
	t.Run("error_deleting", func(t *testing.T) {
		c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusErrorDeleting, failReason: "Delete backup is aborted due to backup service is down."})
		s := NewStep(c, recorded(t, "v1", "b1"), now)
		want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusError,
			"Cinder could not delete backup b1 of volume v1 (status error_deleting): Delete backup is aborted due to backup service is down.")
		if c.deletes["b1"] != 0 {
			t.Error("asked Cinder again for a backup in error_deleting")
		}
	})
	t.Run("driver error", func(t *testing.T) {
		// Cinder's backup manager puts a backup whose deletion failed in status error.
		c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable, deleteFails: "backup directory is read-only"})
		s := NewStep(c, recorded(t, "v1", "b1"), now)
		want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusError,
			"Cinder could not delete backup b1 of volume v1 (status error): backup directory is read-only")
	})
}

func TestBackupThatFailedAtProtectTimeIsDeleted(t *testing.T) {
	c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusError, failReason: "volume detached"})
	s := NewStep(c, recorded(t, "v1", "b1"), now)
	want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusDeleted, "")
	if c.exists("b1") {
		t.Fatal("the backup in error is still there")
	}
}

func TestBusyBackupIsRefusedNotRetried(t *testing.T) {
	// A protect racing the deletion: the backup is still being created.
	c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusCreating})
	s := NewStep(c, recorded(t, "v1", "b1"), now)
	want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusError,
		"backup b1 of volume v1 is creating: Cinder deletes a backup only when it is available or in error; delete again once it is (Cinder: Invalid backup: Backup status must be available or error)")
	if !c.exists("b1") {
		t.Fatal("the backup went missing")
	}
}

func TestNothingRecordedIsDeleted(t *testing.T) {
	t.Run("no record of the batch", func(t *testing.T) {
		c := newFakeCinder()
		s := NewStep(c, stored(t, banktest.New(t, nil), deadline, false, "v1", "", "v2", ""), now)
		r := settled(t, s, request(deadline, "v1", "v2"))
		want(t, r.Results[0], "v1", events.StatusDeleted, "no backup was recorded for volume v1 in checkpoint cp-1")
		want(t, r.Results[1], "v2", events.StatusDeleted, "no backup was recorded for volume v2 in checkpoint cp-1")
	})
	t.Run("backup failed at protect time", func(t *testing.T) {
		c := newFakeCinder()
		s := NewStep(c, recorded(t, "v1", ""), now)
		want(t, settled(t, s, request(deadline, "v1")).Results[0], "v1", events.StatusDeleted,
			"no backup was recorded for volume v1 in checkpoint cp-1 (Cinder volume v1 does not exist)")
	})
}

func TestDeadline(t *testing.T) {
	t.Run("still deleting", func(t *testing.T) {
		c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable, deletingGets: 10})
		recs := recorded(t, "v1", "b1")
		if r := handle(t, NewStep(c, recs, now), request(deadline, "v1")); r != nil {
			t.Fatalf("before the deadline: %+v, want 202", r)
		}
		pastDeadline := func() time.Time { return deadline.Add(time.Second) }
		want(t, settled(t, NewStep(c, recs, pastDeadline), request(deadline, "v1")).Results[0], "v1", events.StatusError,
			"backup b1 of volume v1 still deleting at the deadline 2026-03-04T06:06:07Z")
	})
	t.Run("not started", func(t *testing.T) {
		c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable})
		s := NewStep(c, stored(t, banktest.New(t, nil), earlier, true, "v1", "b1"), now)
		want(t, settled(t, s, request(earlier, "v1")).Results[0], "v1", events.StatusError,
			"passed before backup b1 of volume v1 was deleted (status available)")
		if c.deletes["b1"] != 0 {
			t.Error("started a deletion past the deadline")
		}
	})
	t.Run("gone", func(t *testing.T) {
		s := NewStep(newFakeCinder(), stored(t, banktest.New(t, nil), earlier, true, "v1", "b1"), now)
		want(t, settled(t, s, request(earlier, "v1")).Results[0], "v1", events.StatusDeleted, "")
	})
}

func TestBatchAnswersOnceEveryVolumeIsSettled(t *testing.T) {
	c := newFakeCinder(
		&fakeBackup{id: "b-slow", status: backups.StatusAvailable, deletingGets: 1},
		&fakeBackup{id: "b-full", status: backups.StatusAvailable},
		&fakeBackup{id: "b-inc", status: backups.StatusAvailable, parent: "b-full"},
	)
	s := NewStep(c, recorded(t, "v-slow", "b-slow", "v-gone", "b-gone", "v-full", "b-full", "v-none", ""), now)
	e := request(deadline, "v-slow", "v-gone", "v-full", "v-none")
	if r := handle(t, s, e); r != nil {
		t.Fatalf("first delivery: %+v, want 202 while b-slow is deleted", r)
	}
	r := settled(t, s, e)
	if len(r.Results) != 4 {
		t.Fatalf("%d results, want 4: %+v", len(r.Results), r)
	}
	want(t, r.Results[0], "v-slow", events.StatusDeleted, "")
	want(t, r.Results[1], "v-gone", events.StatusDeleted, "")
	want(t, r.Results[2], "v-full", events.StatusError, "newer incremental backups depending on it")
	want(t, r.Results[3], "v-none", events.StatusDeleted, "no backup was recorded")
}

func TestErrors(t *testing.T) {
	recs := recorded(t, "v1", "b1")
	t.Run("Cinder down is transient", func(t *testing.T) {
		c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable})
		c.getErr = cinderFault(503, "Service Unavailable")
		_, err := NewStep(c, recs, now).Handle(testContext(t), request(deadline, "v1"))
		if err == nil || function.StatusOf(err) != http.StatusInternalServerError {
			t.Fatalf("err = %v (status %d), want a 500 the broker retries", err, function.StatusOf(err))
		}
	})
	t.Run("bank down is transient", func(t *testing.T) {
		sw := banktest.NewSwift(time.Now)
		b := stored(t, banktest.NewOn(t, sw, time.Now), deadline, true, "v1", "b1")
		sw.Down(errors.New("swift: 503"))
		_, err := NewStep(newFakeCinder(), b, now).Handle(testContext(t), request(deadline, "v1"))
		if err == nil || function.IsPermanent(err) {
			t.Fatalf("err = %v, want a transient error", err)
		}
	})
	t.Run("not a volume", func(t *testing.T) {
		e := request(deadline)
		_ = e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: cp, Batch: "pods-0000", Deadline: deadline,
			Resources: []graph.Resource{{Type: graph.PodType, ID: "p1"}}})
		_, err := NewStep(newFakeCinder(), recs, now).Handle(testContext(t), e)
		if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/batch") {
			t.Fatalf("err = %v, want a permanent error naming /batch", err)
		}
	})
	t.Run("undecodable", func(t *testing.T) {
		e := request(deadline)
		_ = e.SetData(event.ApplicationJSON, []byte(`{"resources": 3}`))
		if _, err := NewStep(newFakeCinder(), recs, now).Handle(testContext(t), e); !function.IsPermanent(err) {
			t.Fatalf("err = %v, want permanent", err)
		}
	})
}

// TestOverHTTP runs the step behind the function runtime, with the catalog's schemas, as
// the broker reaches it: 202 while deleting, 200 with the reply once settled.
func TestOverHTTP(t *testing.T) {
	c := newFakeCinder(&fakeBackup{id: "b1", status: backups.StatusAvailable, deletingGets: 1})
	srv := function.NewServer(events.FnDeleteBackup, Accepts, NewStep(c, recorded(t, "v1", "b1"), now), stepSchemas(t), function.ServerOptions{})
	post := func() *httptest.ResponseRecorder {
		body, _ := json.Marshal(events.StepRequest{Checkpoint: cp, Batch: batchName, Resources: []graph.Resource{vol("v1")}, Deadline: deadline})
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-id", "d1")
		r.Header.Set("ce-source", "test")
		r.Header.Set("ce-type", events.BackupDelete)
		r.Header.Set("content-type", "application/json")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	if w := post(); w.Code != http.StatusAccepted {
		t.Fatalf("first delivery: %d %s, want 202", w.Code, w.Body)
	}
	w := post()
	if w.Code != http.StatusOK || w.Header().Get("ce-type") != events.BackupDeleted || !strings.Contains(w.Body.String(), `"status":"deleted"`) {
		t.Fatalf("second delivery: %d %v %s", w.Code, w.Header(), w.Body)
	}
}

// schemas validates event data against the catalog's JSON Schema files of the types the
// step consumes and emits, compiled from the files themselves so that the step's contract
// is checked whichever types the catalog lists.
type schemas map[string]*jsonschema.Schema

func stepSchemas(t *testing.T) schemas {
	t.Helper()
	c := jsonschema.NewCompiler()
	for _, name := range []string{"common", events.BackupDelete, events.BackupDeleted} {
		b, err := events.Schema(name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(events.SchemaURL(name), doc); err != nil {
			t.Fatal(err)
		}
	}
	out := schemas{}
	for _, typ := range []string{events.BackupDelete, events.BackupDeleted} {
		s, err := c.Compile(events.SchemaURL(typ))
		if err != nil {
			t.Fatal(err)
		}
		out[typ] = s
	}
	return out
}

func (s schemas) Validate(e event.Event) error {
	sch, ok := s[e.Type()]
	if !ok {
		return fmt.Errorf("no schema for %s", e.Type())
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(e.Data())))
	if err != nil {
		return err
	}
	return sch.Validate(doc)
}
