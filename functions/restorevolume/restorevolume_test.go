package restorevolume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/volumes"
)

const (
	cpID      = "cp-1"
	restoreID = "r-1"
	batchName = "volumes-0000"
)

// fixture is a step on an instant Cinder and an in-memory bank, with a restore r-1 in
// progress of an available checkpoint whose graph holds the volumes, and whose record
// holds one available backup per volume ("backup-<volume id>").
type fixture struct {
	t      *testing.T
	cinder *InstantVolumes
	swift  *banktest.Swift
	bank   *bank.Bank
	bs     *bank.Batches
	r      *bank.Restore
	now    time.Time
	step   *Step
}

func newFixture(t *testing.T, vols ...graph.Resource) *fixture {
	f := build(t, vols)
	rec := bank.Record{Batch: batchName, Resources: map[string]bank.ResourceRecord{}}
	for _, v := range vols {
		rec.Resources[v.Key()] = savedBackup(t, v.ID, backupOf(v.ID))
	}
	f.save(rec)
	return f
}

// build is the fixture without the checkpoint's record of the batch.
func build(t *testing.T, vols []graph.Resource) *fixture {
	f := &fixture{t: t, cinder: NewInstantVolumes(), now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f.swift = banktest.NewSwift(time.Now)
	f.bank = banktest.NewOn(t, f.swift, time.Now)
	g := &graph.Graph{}
	for _, v := range vols {
		g.Nodes = append(g.Nodes, graph.Node{Resource: v})
	}
	f.bs, f.r = banktest.Restoring(t, f.bank, bank.Checkpoint{ID: cpID, CreatedAt: f.now}, g, bank.Restore{ID: restoreID, CreatedAt: f.now})
	f.step = NewStep(f.cinder, f.bank, func() time.Time { return f.now })
	return f
}

// save writes the checkpoint's record of the batch.
func (f *fixture) save(rec bank.Record) {
	f.t.Helper()
	if err := f.bank.Checkpoints().PutRecord(context.Background(), cpID, rec); err != nil {
		f.t.Fatal(err)
	}
}

// record is the restore's record of the batch; nil when there is none.
func (f *fixture) record() *bank.Record {
	f.t.Helper()
	rec, err := f.bank.Restores().Record(context.Background(), restoreID, batchName)
	if errors.Is(err, bank.ErrNotFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

func backupOf(volumeID string) string { return "backup-" + volumeID }

func savedBackup(t *testing.T, volumeID, backupID string) bank.ResourceRecord {
	t.Helper()
	data, err := json.Marshal(checkpoint.VolumeInfo{VolumeID: volumeID, BackupID: backupID, Mode: "full", BackupStatus: "available"})
	if err != nil {
		t.Fatal(err)
	}
	return bank.ResourceRecord{Status: events.StatusAvailable, Data: data}
}

func volume(id string) graph.Resource {
	return graph.Resource{Type: graph.VolumeType, ID: id, Name: "ns/claim-" + id}
}

func (f *fixture) request(vols []graph.Resource) events.RestoreStepRequest {
	req := banktest.RestoreRequest(f.bs, f.r, batchName)
	req.Resources = vols
	return req
}

func restoreEvent(t *testing.T, req events.RestoreStepRequest) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(function.DerivedID(events.FlowRestore, req.Restore, req.Batch, events.VolumeRestore))
	e.SetSource("test")
	e.SetType(events.VolumeRestore)
	if err := e.SetData(event.ApplicationJSON, req); err != nil {
		t.Fatal(err)
	}
	validate(t, e)
	return e
}

// deliver sends the request to the step; it returns the result, or nil for a 202.
func (f *fixture) deliver(req events.RestoreStepRequest) *events.RestoreStepResult {
	f.t.Helper()
	out, err := f.step.Handle(context.Background(), restoreEvent(f.t, req))
	if err != nil {
		f.t.Fatalf("handle: %v", err)
	}
	if out == nil {
		return nil
	}
	if out.Type() != events.VolumeRestored {
		f.t.Fatalf("reply type %s, want %s", out.Type(), events.VolumeRestored)
	}
	validate(f.t, *out)
	var r events.RestoreStepResult
	if err := out.DataAs(&r); err != nil {
		f.t.Fatal(err)
	}
	return &r
}

// restored is what the restore recorded for a volume.
func (f *fixture) restored(key string) (bank.ResourceRecord, checkpoint.RestoredVolume) {
	f.t.Helper()
	rec := f.record()
	if rec == nil {
		f.t.Fatalf("no restore record for batch %s", batchName)
	}
	rr, ok := rec.Resources[key]
	if !ok {
		f.t.Fatalf("restore record %+v has no %s", rec, key)
	}
	var rv checkpoint.RestoredVolume
	if err := json.Unmarshal(rr.Data, &rv); err != nil {
		f.t.Fatalf("data of %s: %v", key, err)
	}
	return rr, rv
}

// validate checks an event's data against its type's schema: through the catalog's
// validator when the type is in the catalog, else against the schema file itself.
func validate(t *testing.T, e event.Event) {
	t.Helper()
	if slices.ContainsFunc(events.Catalog(), func(ty events.Type) bool { return ty.Name == e.Type() }) {
		v, err := events.NewValidator()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); err != nil {
			t.Fatalf("%s: %v", e.Type(), err)
		}
		return
	}
	c := jsonschema.NewCompiler()
	for _, name := range []string{"common", e.Type()} {
		b, err := events.Schema(name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(events.SchemaURL(name), doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Compile(events.SchemaURL(e.Type()))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Data()))
	if err != nil {
		t.Fatalf("%s data: %v", e.Type(), err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("%s data does not match its schema: %v\n%s", e.Type(), err, e.Data())
	}
}

func TestRestoresABatch(t *testing.T) {
	vols := []graph.Resource{volume("v1"), volume("v2"), volume("v3")}
	f := newFixture(t, vols...)
	f.cinder.BackedUp[backupOf("v1")] = map[string]string{"app": "db"}
	req := f.request(vols)

	r := f.deliver(req)
	if r == nil {
		t.Fatal("instant volumes answered 202, want a result")
	}
	if r.Restore != restoreID || r.Batch != batchName || len(r.Results) != len(vols) {
		t.Fatalf("result = %+v", r)
	}
	if f.cinder.Count() != len(vols) {
		t.Fatalf("%d volumes created, want %d", f.cinder.Count(), len(vols))
	}
	newIDs := map[string]bool{}
	for i, v := range vols {
		if got := r.Results[i]; got.Key != v.Key() || got.Status != events.StatusAvailable || got.Reason != "" {
			t.Errorf("result %d = %+v, want %s available", i, got, v.Key())
		}
		rr, rv := f.restored(v.Key())
		want := checkpoint.RestoredVolume{OriginalID: v.ID, VolumeID: rv.VolumeID, BackupID: backupOf(v.ID), Name: cpID + "@" + v.ID}
		if rr.Status != events.StatusAvailable || rv != want || rv.VolumeID == "" {
			t.Errorf("record of %s = %s %+v, want available %+v", v.ID, rr.Status, rv, want)
		}
		newIDs[rv.VolumeID] = true
	}
	if len(newIDs) != len(vols) {
		t.Errorf("restored volume ids %v: want one new volume per original", newIDs)
	}
	for _, v := range f.cinder.Volumes() {
		orig := strings.TrimPrefix(v.Name, cpID+"@")
		if !newIDs[v.ID] || v.Status != volumes.StatusAvailable || v.BackupID != backupOf(orig) {
			t.Errorf("volume %+v", v)
		}
		// Cinder replaced the metadata; the step tagged the volume again.
		if v.Metadata[MetaRestore] != restoreID || v.Metadata[MetaResource] != graph.VolumeType+"#"+orig || v.Metadata[volumes.MetadataSourceBackup] != v.BackupID {
			t.Errorf("metadata of %s = %v", v.ID, v.Metadata)
		}
		if orig == "v1" && v.Metadata["app"] != "db" {
			t.Errorf("metadata of %s = %v, want what Cinder restored kept", v.ID, v.Metadata)
		}
	}

	// A redelivered request answers the same and creates nothing.
	writes := f.swift.Writes()
	if again := f.deliver(req); !equal(again, r) {
		t.Fatalf("redelivery answered %+v, want %+v", again, r)
	}
	if f.cinder.Count() != len(vols) || f.swift.Writes() != writes {
		t.Fatalf("redelivery: %d volumes, %d bank writes; want %d and none", f.cinder.Count(), f.swift.Writes()-writes, len(vols))
	}

	// A delivery racing the first, before its record was written, finds the volumes.
	if err := f.swift.ObjectDelete(context.Background(), f.bank.Container(), f.bank.Layout().Record(bank.RestoreOp(restoreID), batchName)); err != nil {
		t.Fatal(err)
	}
	if again := f.deliver(req); !equal(again, r) {
		t.Fatalf("delivery without the record answered %+v, want %+v", again, r)
	}
	for _, v := range vols {
		if _, rv := f.restored(v.Key()); !newIDs[rv.VolumeID] {
			t.Errorf("delivery without the record mapped %s to %s, not to the volume restored first", v.ID, rv.VolumeID)
		}
	}
	if f.cinder.Count() != len(vols) {
		t.Fatalf("delivery without the record: %d volumes, want %d", f.cinder.Count(), len(vols))
	}
}

func equal(a, b *events.RestoreStepResult) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return a != nil && b != nil && bytes.Equal(ja, jb)
}

func TestInProgressAnswers202ThenResult(t *testing.T) {
	vols := []graph.Resource{volume("fast"), volume("slow")}
	f := newFixture(t, vols...)
	f.cinder.Slow[backupOf("slow")] = true
	req := f.request(vols)

	for i := range 2 {
		if r := f.deliver(req); r != nil {
			t.Fatalf("delivery %d with a volume in progress answered %+v, want 202", i+1, r)
		}
		if f.cinder.Count() != 2 {
			t.Fatalf("delivery %d: %d volumes, want 2", i+1, f.cinder.Count())
		}
		if rec := f.record(); rec != nil {
			t.Fatalf("delivery %d wrote a record while a volume is in progress: %+v", i+1, rec)
		}
	}
	f.cinder.Complete() // Cinder replaces the metadata: the volume is found by its backup
	r := f.deliver(req)
	if r == nil || r.Results[0].Status != events.StatusAvailable || r.Results[1].Status != events.StatusAvailable {
		t.Fatalf("after the restore completed: %+v, want both available", r)
	}
	if f.cinder.Count() != 2 {
		t.Fatalf("%d volumes, want 2", f.cinder.Count())
	}
	_, rv := f.restored(volume("slow").Key())
	for _, v := range f.cinder.Volumes() {
		if v.ID == rv.VolumeID && v.Metadata[MetaRestore] != restoreID {
			t.Errorf("metadata of %s = %v: not tagged again", v.ID, v.Metadata)
		}
	}
}

func TestVolumeWithoutBackupInCheckpointFails(t *testing.T) {
	good, failedBackup, absent, noID := volume("good"), volume("failed"), volume("absent"), volume("noid")
	f := build(t, []graph.Resource{good, failedBackup, absent, noID})
	data, _ := json.Marshal(checkpoint.VolumeInfo{VolumeID: noID.ID, Mode: "full"})
	f.save(bank.Record{Batch: batchName, Resources: map[string]bank.ResourceRecord{
		good.Key():         savedBackup(t, good.ID, backupOf(good.ID)),
		failedBackup.Key(): {Status: events.StatusError, Reason: "backup failed"},
		noID.Key():         {Status: events.StatusAvailable, Data: data},
	}})

	r := f.deliver(f.request([]graph.Resource{good, failedBackup, absent, noID}))
	if r == nil || r.Results[0].Status != events.StatusAvailable {
		t.Fatalf("result = %+v", r)
	}
	for i, v := range []graph.Resource{failedBackup, absent, noID} {
		want := fmt.Sprintf("checkpoint %s has no available backup of volume %s", cpID, v.ID)
		if got := r.Results[i+1]; got.Status != events.StatusError || got.Reason != want {
			t.Errorf("result of %s = %+v, want error %q", v.ID, got, want)
		}
		rr, rv := f.restored(v.Key())
		if rr.Status != events.StatusError || rr.Reason == "" || rv.OriginalID != v.ID || rv.VolumeID != "" {
			t.Errorf("record of %s = %+v %+v", v.ID, rr, rv)
		}
	}
	if f.cinder.Count() != 1 {
		t.Errorf("%d volumes created, want 1", f.cinder.Count())
	}

	// Without any record of the batch in the checkpoint, every volume fails with the reason.
	f = build(t, []graph.Resource{good})
	r = f.deliver(f.request([]graph.Resource{good}))
	if r == nil || r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "no available backup of volume good") {
		t.Fatalf("without a checkpoint record: %+v", r)
	}
}

func TestBackupGoneFromCinderFails(t *testing.T) {
	gone, ok := volume("gone"), volume("ok")
	f := newFixture(t, gone, ok)
	f.cinder.Missing[backupOf("gone")] = true
	r := f.deliver(f.request([]graph.Resource{gone, ok}))
	want := fmt.Sprintf("backup %s of volume gone no longer exists", backupOf("gone"))
	if r == nil || r.Results[0].Status != events.StatusError || r.Results[0].Reason != want || r.Results[1].Status != events.StatusAvailable {
		t.Fatalf("result = %+v, want gone failed with %q and ok available", r, want)
	}
	rr, rv := f.restored(gone.Key())
	if rr.Reason != want || rv.OriginalID != "gone" || rv.BackupID != backupOf("gone") || rv.VolumeID != "" {
		t.Errorf("record = %+v %+v", rr, rv)
	}
}

func TestCinderFailingTheRestoreKeepsTheNewVolume(t *testing.T) {
	bad := volume("bad")
	f := newFixture(t, bad)
	f.cinder.Failing[backupOf("bad")] = true
	r := f.deliver(f.request([]graph.Resource{bad}))
	if r == nil || r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "(status error)") {
		t.Fatalf("result = %+v", r)
	}
	vs := f.cinder.Volumes()
	if len(vs) != 1 || vs[0].Status != volumes.StatusError {
		t.Fatalf("volumes = %+v, want one in error", vs)
	}
	rr, rv := f.restored(bad.Key())
	// The failed volume stays listed, so that it can be cleaned up.
	if rr.Status != events.StatusError || rv.VolumeID != vs[0].ID || !strings.Contains(rr.Reason, vs[0].ID) {
		t.Errorf("record = %+v %+v, want the failed volume %s listed", rr, rv, vs[0].ID)
	}
}

func TestDeadline(t *testing.T) {
	t.Run("before the volume was created", func(t *testing.T) {
		v := volume("late")
		f := newFixture(t, v)
		req := f.request([]graph.Resource{v})
		f.now = req.Deadline.Add(time.Second)
		r := f.deliver(req)
		if r == nil || r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "deadline passed before the volume was created") {
			t.Fatalf("result = %+v", r)
		}
		if f.cinder.Count() != 0 {
			t.Errorf("%d volumes created past the deadline", f.cinder.Count())
		}
	})
	t.Run("while the volume is restoring", func(t *testing.T) {
		v := volume("slow")
		f := newFixture(t, v)
		f.cinder.Slow[backupOf("slow")] = true
		req := f.request([]graph.Resource{v})
		if r := f.deliver(req); r != nil {
			t.Fatalf("first delivery: %+v, want 202", r)
		}
		f.now = req.Deadline.Add(time.Minute)
		r := f.deliver(req)
		if r == nil || r.Results[0].Status != events.StatusError || !strings.Contains(r.Results[0].Reason, "still restoring-backup at the restore's deadline") {
			t.Fatalf("result = %+v", r)
		}
		if _, rv := f.restored(v.Key()); rv.VolumeID == "" {
			t.Errorf("record = %+v, want the volume in progress listed", rv)
		}
	})
}

func TestBadRequestsArePermanent(t *testing.T) {
	f := newFixture(t, volume("v"))
	req := f.request([]graph.Resource{{Type: graph.PodType, ID: "p", Name: "ns:p"}})
	_, err := f.step.Handle(context.Background(), restoreEvent(t, req))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/resources/0") {
		t.Fatalf("a pod in a volume batch: err = %v, want a permanent error naming the field", err)
	}
	e := event.New()
	e.SetID("x")
	e.SetSource("test")
	e.SetType(events.VolumeRestore)
	_ = e.SetData(event.ApplicationJSON, []byte(`{"resources":"nope"}`))
	if _, err := f.step.Handle(context.Background(), e); !function.IsPermanent(err) {
		t.Fatalf("undecodable data: err = %v, want permanent", err)
	}
}

func TestBankTroubleIsRetried(t *testing.T) {
	v := volume("v")
	f := newFixture(t, v)
	f.swift.Down(errors.New("swift is down"))
	_, err := f.step.Handle(context.Background(), restoreEvent(t, f.request([]graph.Resource{v})))
	if err == nil || function.IsPermanent(err) || function.StatusOf(err) < 500 {
		t.Fatalf("err = %v, want a transient error", err)
	}
	if f.cinder.Count() != 0 {
		t.Errorf("%d volumes created without reading the restore's record", f.cinder.Count())
	}
}

// Two deliveries of a request raced: each looked before the other's volume existed, and
// Cinder accepted both restores of the backup. The step keeps the oldest volume, waits
// while the other is being restored, then deletes it; a volume of another restore of the
// same checkpoint (same name) is left alone.
func TestRacingDeliveriesKeepOneVolume(t *testing.T) {
	v := volume("v1")
	f := newFixture(t, v)
	f.cinder.Slow[backupOf(v.ID)] = true
	req := f.request([]graph.Resource{v})
	if r := f.deliver(req); r != nil {
		t.Fatalf("first delivery answered %+v, want 202", r)
	}
	first := f.cinder.Volumes()[0]
	// The racing delivery's volume, and another restore's.
	ctx := context.Background()
	dup, err := f.cinder.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: first.Name, BackupID: backupOf(v.ID),
		Description: first.Description, Metadata: first.Metadata})
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.cinder.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{Name: first.Name, BackupID: backupOf(v.ID),
		Description: description("r-other"), Metadata: map[string]string{MetaRestore: "r-other", MetaResource: v.Key()}})
	if err != nil {
		t.Fatal(err)
	}

	if r := f.deliver(req); r != nil {
		t.Fatalf("delivery while the duplicate is being restored answered %+v, want 202", r)
	}
	if n := f.cinder.Count(); n != 3 {
		t.Fatalf("%d volumes: a volume being restored cannot be deleted yet", n)
	}
	f.cinder.Complete() // Cinder replaces the metadata of all three
	r := f.deliver(req)
	if r == nil || r.Results[0].Status != events.StatusAvailable {
		t.Fatalf("after the restores completed: %+v", r)
	}
	if _, rv := f.restored(v.Key()); rv.VolumeID != first.ID {
		t.Fatalf("recorded volume %s, want the oldest %s", rv.VolumeID, first.ID)
	}
	left := map[string]volumes.Volume{}
	for _, x := range f.cinder.Volumes() {
		left[x.ID] = x
	}
	if _, ok := left[dup.ID]; ok || len(left) != 2 {
		t.Fatalf("volumes left %v: want %s and %s, not the duplicate %s", left, first.ID, other.ID, dup.ID)
	}
	if left[first.ID].Metadata[MetaRestore] != restoreID {
		t.Fatalf("kept volume not tagged again: %v", left[first.ID].Metadata)
	}
	if _, ok := left[other.ID]; !ok {
		t.Fatal("the other restore's volume was deleted")
	}
}
