package choreographer

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// Stuck work: every kind of operation whose events were lost (a function crashed, the
// broker dropped an event) is re-driven by the tick once its requests waited longer than
// RedriveAfter, and failed with a clear reason past its deadline; results that arrive
// after the end change nothing.

// protect starts a protect of the namespace shop and returns the checkpoint id.
func (w *world) protect() string {
	w.t.Helper()
	return w.protectPlan(events.Plan{ID: "plan", Scope: events.Scope{Namespaces: []string{"shop"}}})
}

// protectPlan starts a protect of a plan and returns the checkpoint id.
func (w *world) protectPlan(p events.Plan) string {
	w.t.Helper()
	req := events.ProtectRequest{Plan: p}
	e := w.event(events.ProtectRequested, "", req)
	w.handle(e)
	only(w.t, w.out.take(), events.PodsList)
	return CheckpointID(req, e)
}

// listed delivers the listing of a checkpoint and returns what it sent.
func (w *world) listed(id string, g *graph.Graph) []event.Event {
	w.t.Helper()
	w.handle(w.event(events.PodsListed, id, events.PodsListedResult{Graph: g}))
	return w.out.take()
}

// result delivers the result of a batch: every resource of it with status, which the
// step recorded first (as steps do) unless a record of the batch exists already.
func (w *world) result(typ, op, batch, status string, keys ...string) []event.Event {
	w.t.Helper()
	ops := w.bank.Checkpoints()
	switch typ {
	case events.VolumeRestored, events.PodRecreated:
		ops = w.bank.Restores()
	case events.BackupDeleted:
		ops = w.bank.Deletions()
	}
	var rs []events.ResourceResult
	rec := bank.Record{Batch: batch, UpdatedAt: w.now(), Resources: map[string]bank.ResourceRecord{}}
	for _, k := range keys {
		r := events.ResourceResult{Key: k, Status: status}
		if status == events.StatusError {
			r.Reason = "failed by the test"
		}
		rs = append(rs, r)
		rec.Resources[k] = bank.ResourceRecord{Status: r.Status, Reason: r.Reason}
	}
	ctx := context.Background()
	if _, err := ops.Record(ctx, op, batch); errors.Is(err, bank.ErrNotFound) {
		if err := ops.PutRecord(ctx, op, rec); err != nil {
			w.t.Fatal(err)
		}
	}
	var data any = events.StepResult{Checkpoint: op, Batch: batch, Results: rs}
	if typ == events.VolumeRestored || typ == events.PodRecreated {
		data = events.RestoreStepResult{Restore: op, Batch: batch, Results: rs}
	}
	w.handle(w.event(typ, op, data))
	return w.out.take()
}

// available protects one pod with one volume to the end and returns the checkpoint.
func (w *world) available() (string, graph.Resource, graph.Resource) {
	w.t.Helper()
	id, pod, vol, _ := w.protected(events.Plan{ID: "plan", Scope: events.Scope{Namespaces: []string{"shop"}}}, events.StatusAvailable)
	return id, pod, vol
}

// protected protects one pod with one volume of a plan to the end, the volume's backup
// ending with status (available or error), and returns the checkpoint and what the last
// result sent.
func (w *world) protected(p events.Plan, status string) (string, graph.Resource, graph.Resource, []event.Event) {
	w.t.Helper()
	g, pod, vol := onePodOneVolume()
	id := w.protectPlan(p)
	w.listed(id, g)
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	sent := w.result(events.VolumeBackedUp, id, "volumes-0000", status, vol.Key())
	w.status(id, status)
	return id, pod, vol, sent
}

func (w *world) status(id, want string) {
	w.t.Helper()
	if got, err := w.bank.Status(context.Background(), id); err != nil || got != want {
		w.t.Fatalf("checkpoint %s is %q (%v), want %s", id, got, err, want)
	}
}

func (w *world) restoreStatus(id, want string) {
	w.t.Helper()
	if got, err := w.bank.Restores().Status(context.Background(), id); err != nil || got != want {
		w.t.Fatalf("restore %s is %q (%v), want %s", id, got, err, want)
	}
}

// failures maps each failed resource of an operation to its reason.
func failures(t *testing.T, o interface {
	Failures(ctx context.Context, id string) ([]bank.Failure, error)
}, id string) map[string]string {
	t.Helper()
	fs, err := o.Failures(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fs {
		out[f.Key] = f.Reason
	}
	return out
}

func decode[T any](t *testing.T, e event.Event) T {
	t.Helper()
	var v T
	if err := e.DataAs(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTickAsksAgainForALostListingThenFailsIt(t *testing.T) {
	w := newWorld(t)
	id := w.protect()
	w.advance(10 * time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick before REDRIVE_AFTER sent %v", types(out))
	}
	w.advance(25 * time.Second)
	again := only(t, w.tick(), events.PodsList)
	if req := decode[events.PodsListRequest](t, again); len(req.Scope.Namespaces) != 1 || req.Scope.Namespaces[0] != "shop" {
		t.Fatalf("listing asked again for %+v", req.Scope)
	}
	w.advance(testConfig.ListTimeout)
	fin := decode[events.CheckpointFinishedResult](t, only(t, w.tick(), events.CheckpointFinished))
	if fin.Status != events.StatusError || len(fin.Failed) != 1 || fin.Failed[0].Key != "checkpoint" ||
		!strings.Contains(fin.Failed[0].Reason, "listing the plan's pods did not complete within 10m0s") {
		t.Fatalf("finished %+v", fin)
	}
	w.status(id, events.StatusError)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick after the end sent %v", types(out))
	}
}

// A listing that arrives after the checkpoint was failed for want of it starts no work:
// no step request, no graph, the checkpoint stays in error.
func TestListingAfterTheCheckpointEndedStartsNothing(t *testing.T) {
	w := newWorld(t)
	id := w.protect()
	w.advance(testConfig.ListTimeout + time.Second)
	w.tick()
	w.status(id, events.StatusError)
	g, _, _ := onePodOneVolume()
	if out := w.listed(id, g); len(out) != 0 {
		t.Fatalf("a late listing sent %v", types(out))
	}
	ctx := context.Background()
	if _, err := w.bank.Graph(ctx, id); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("graph of a checkpoint in error: %v", err)
	}
	if p, err := w.bank.PendingResources(ctx, id); err != nil || len(p) != 0 {
		t.Fatalf("pending batches %v %v", p, err)
	}
	w.status(id, events.StatusError)
}

func TestTickResendsLostStepRequestsOnceEveryRedriveAfter(t *testing.T) {
	w := newWorld(t)
	g, pod, vol := onePodOneVolume()
	id := w.protect()
	first := w.listed(id, g)
	if got := types(first); len(got) != 2 || got[0] != events.MetadataSnapshot || got[1] != events.VolumeBackup {
		t.Fatalf("fan-out %v", got)
	}
	w.advance(10 * time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick before REDRIVE_AFTER sent %v", types(out))
	}
	w.advance(21 * time.Second)
	out := w.tick()
	if got := types(out); len(got) != 2 {
		t.Fatalf("re-driven %v", got)
	}
	backup := only(t, out, events.VolumeBackup)
	if req := decode[events.StepRequest](t, backup); req.Batch != "volumes-0000" || len(req.Resources) != 1 || req.Resources[0].Key() != vol.Key() {
		t.Fatalf("re-sent request %+v", req)
	}
	if backup.ID() == only(t, first, events.VolumeBackup).ID() {
		t.Fatal("the re-sent request has the id of the first: a broker that dedupes would drop it")
	}
	// Sent again: the next tick waits another REDRIVE_AFTER.
	w.advance(time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick right after a re-send sent %v", types(out))
	}
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	w.advance(31 * time.Second)
	only(t, w.tick(), events.VolumeBackup) // the pods are done: only the volume again
	fin := w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key())
	if res := decode[events.CheckpointFinishedResult](t, only(t, fin, events.CheckpointFinished)); res.Status != events.StatusAvailable || res.Resources != 2 {
		t.Fatalf("finished %+v", res)
	}
}

// The graph was stored but the choreographer stopped before the fan-out was recorded:
// the tick fans out.
func TestTickFansOutAGraphWhoseFanOutWasCutShort(t *testing.T) {
	w := newWorld(t)
	g, _, _ := onePodOneVolume()
	id := w.protect()
	if err := w.bank.PutGraph(context.Background(), id, g); err != nil {
		t.Fatal(err)
	}
	w.advance(10 * time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick before REDRIVE_AFTER sent %v", types(out))
	}
	w.advance(21 * time.Second)
	if got := types(w.tick()); len(got) != 2 || got[0] != events.MetadataSnapshot || got[1] != events.VolumeBackup {
		t.Fatalf("fan-out by the tick %v", got)
	}
	if out, err := w.bank.FannedOut(context.Background(), id, ""); err != nil || !out {
		t.Fatalf("fan-out not recorded: %v", err)
	}
}

// Every batch is done but the choreographer stopped before recording the end: the tick
// ends the checkpoint.
func TestTickFinishesACheckpointWhoseEndWasCutShort(t *testing.T) {
	w := newWorld(t)
	g, _, _ := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	for _, b := range []string{"pods-0000", "volumes-0000"} {
		if _, err := w.bank.Done(context.Background(), id, b); err != nil {
			t.Fatal(err)
		}
	}
	w.status(id, events.StatusProtecting)
	fin := decode[events.CheckpointFinishedResult](t, only(t, w.tick(), events.CheckpointFinished))
	if fin.Status != events.StatusAvailable {
		t.Fatalf("finished %+v", fin)
	}
	w.status(id, events.StatusAvailable)
}

func TestTickFailsStepsPastTheProtectDeadline(t *testing.T) {
	w := newWorld(t)
	g, pod, vol := onePodOneVolume()
	id := w.protect()
	w.listed(id, g)
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	w.advance(testConfig.ProtectTimeout + time.Second)
	fin := decode[events.CheckpointFinishedResult](t, only(t, w.tick(), events.CheckpointFinished))
	if fin.Status != events.StatusError || len(fin.Failed) != 1 || fin.Failed[0].Key != vol.Key() ||
		!strings.Contains(fin.Failed[0].Reason, "not finished by the checkpoint's deadline") {
		t.Fatalf("finished %+v", fin)
	}
	// The backup's result, late: nothing changes.
	w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key())
	w.status(id, events.StatusError)
	if f := failures(t, w.bank, id); len(f) != 1 || !strings.Contains(f[vol.Key()], "deadline") {
		t.Fatalf("failures %v", f)
	}
}

// startRestore requests a restore of a checkpoint and returns its id.
func (w *world) startRestore(checkpointID string) (string, []event.Event) {
	w.t.Helper()
	e := w.event(events.RestoreRequested, "", events.RestoreRequest{Checkpoint: checkpointID, Parameters: events.RestoreParameters{Namespace: "shop-dr"}})
	w.handle(e)
	return RestoreID(e), w.out.take()
}

// volumeRestored records what restore-volume records for a volume restored as newID.
func (w *world) volumeRestored(restore string, vol graph.Resource, newID string) {
	w.t.Helper()
	data, _ := json.Marshal(checkpoint.RestoredVolume{OriginalID: vol.ID, VolumeID: newID, BackupID: "backup-1"})
	rec := bank.Record{Batch: "volumes-0000", UpdatedAt: w.now(), Resources: map[string]bank.ResourceRecord{
		vol.Key(): {Status: events.StatusAvailable, Data: data}}}
	if err := w.bank.Restores().PutRecord(context.Background(), restore, rec); err != nil {
		w.t.Fatal(err)
	}
}

func TestTickRedrivesBothPhasesOfARestore(t *testing.T) {
	w := newWorld(t)
	cp, pod, vol := w.available()
	rid, out := w.startRestore(cp)
	only(t, out, events.VolumeRestore)
	w.advance(10 * time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick before REDRIVE_AFTER sent %v", types(out))
	}
	w.advance(21 * time.Second)
	if req := decode[events.RestoreStepRequest](t, only(t, w.tick(), events.VolumeRestore)); req.Batch != "volumes-0000" || req.Restore != rid {
		t.Fatalf("re-sent %+v", req)
	}
	w.volumeRestored(rid, vol, "new-1")
	only(t, w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, vol.Key()), events.PodRecreate)
	// The pod.recreate is lost: the tick sends it again (recreate-pod reads the restored
	// volume from the restore's record).
	w.advance(31 * time.Second)
	req := decode[events.RestoreStepRequest](t, only(t, w.tick(), events.PodRecreate))
	if req.Batch != "pods-0000" || len(req.Volumes) != 0 || len(req.Resources) != 1 || req.Resources[0].Key() != pod.Key() {
		t.Fatalf("re-sent %+v", req)
	}
	fin := decode[events.RestoreFinishedResult](t, only(t, w.result(events.PodRecreated, rid, "pods-0000", events.StatusAvailable, pod.Key()), events.RestoreFinished))
	if fin.Status != events.RestoreSuccess {
		t.Fatalf("finished %+v", fin)
	}
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick after the end sent %v", types(out))
	}
}

// The restore was recorded but the choreographer stopped before its volume phase was
// fanned out: the tick fans it out.
func TestTickStartsARestoreWhoseFanOutWasCutShort(t *testing.T) {
	w := newWorld(t)
	cp, _, _ := w.available()
	now := w.now()
	if _, err := w.bank.CreateRestore(context.Background(), bank.Restore{ID: "r1", Checkpoint: cp, CreatedAt: now, Deadline: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w.advance(31 * time.Second)
	only(t, w.tick(), events.VolumeRestore)
}

// The last volume result was recorded but the choreographer stopped before the pod phase
// started: the tick starts it.
func TestTickStartsThePodPhaseWhenTheLastVolumeResultWasCutShort(t *testing.T) {
	w := newWorld(t)
	cp, _, vol := w.available()
	rid, _ := w.startRestore(cp)
	w.volumeRestored(rid, vol, "new-1")
	if _, err := w.bank.Restores().Done(context.Background(), rid, "volumes-0000"); err != nil {
		t.Fatal(err)
	}
	if req := decode[events.RestoreStepRequest](t, only(t, w.tick(), events.PodRecreate)); req.Batch != "pods-0000" || req.Restore != rid {
		t.Fatalf("pod phase %+v", req)
	}
}

func TestTickFailsARestoreStuckInItsVolumePhase(t *testing.T) {
	w := newWorld(t)
	cp, pod, vol := w.available()
	rid, _ := w.startRestore(cp)
	// Past the deadline, the steps are given 2×REDRIVE_AFTER to record what they did.
	w.advance(testConfig.RestoreTimeout + time.Second)
	only(t, w.tick(), events.VolumeRestore)
	w.advance(2 * testConfig.RedriveAfter)
	fin := decode[events.RestoreFinishedResult](t, only(t, w.tick(), events.RestoreFinished))
	if fin.Status != events.RestoreFail || len(fin.Failed) != 2 {
		t.Fatalf("finished %+v", fin)
	}
	for _, key := range []string{pod.Key(), vol.Key()} {
		if r := failures(t, w.bank.Restores(), rid)[key]; !strings.Contains(r, "not restored by the restore's deadline") {
			t.Fatalf("%s: %q", key, r)
		}
	}
	// The volume's result, late, must not start the pod phase of a restore that ended; at
	// most it announces the same end again (the same event).
	w.volumeRestored(rid, vol, "new-1")
	for _, e := range w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, vol.Key()) {
		if again := decode[events.RestoreFinishedResult](t, e); e.Type() != events.RestoreFinished || again.Status != events.RestoreFail {
			t.Fatalf("a late volume result sent %s %+v", e.Type(), again)
		}
	}
	if out, err := w.bank.Restores().FannedOut(context.Background(), rid, phasePods); err != nil || out {
		t.Fatalf("pod phase of an ended restore fanned out: %v", err)
	}
	w.restoreStatus(rid, events.RestoreFail)
}

func TestTickFailsARestoreStuckInItsPodPhase(t *testing.T) {
	w := newWorld(t)
	cp, pod, vol := w.available()
	rid, _ := w.startRestore(cp)
	w.volumeRestored(rid, vol, "new-1")
	w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, vol.Key())
	w.advance(testConfig.RestoreTimeout + 2*testConfig.RedriveAfter + time.Second)
	fin := decode[events.RestoreFinishedResult](t, only(t, w.tick(), events.RestoreFinished))
	if fin.Status != events.RestoreFail || len(fin.Failed) != 1 || fin.Failed[0].Key != pod.Key() || !strings.Contains(fin.Failed[0].Reason, "deadline") {
		t.Fatalf("finished %+v", fin)
	}
	// The pod's result, late: the restore stays failed.
	w.result(events.PodRecreated, rid, "pods-0000", events.StatusAvailable, pod.Key())
	w.restoreStatus(rid, events.RestoreFail)
}

// startDeletion requests the deletion of a checkpoint.
func (w *world) startDeletion(id string) []event.Event {
	w.t.Helper()
	w.handle(w.event(events.DeleteRequested, "", events.DeleteRequest{Checkpoint: id}))
	return w.out.take()
}

func TestTickRedrivesADeletion(t *testing.T) {
	w := newWorld(t)
	cp, _, vol := w.available()
	only(t, w.startDeletion(cp), events.BackupDelete)
	w.status(cp, events.StatusDeleting)
	w.advance(10 * time.Second)
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("tick before REDRIVE_AFTER sent %v", types(out))
	}
	w.advance(21 * time.Second)
	if req := decode[events.StepRequest](t, only(t, w.tick(), events.BackupDelete)); req.Batch != "volumes-0000" || req.Resources[0].Key() != vol.Key() {
		t.Fatalf("re-sent %+v", req)
	}
	fin := decode[events.CheckpointDeletedResult](t, only(t, w.result(events.BackupDeleted, cp, "volumes-0000", events.StatusDeleted, vol.Key()), events.CheckpointDeleted))
	if fin.Status != events.StatusDeleted {
		t.Fatalf("deleted %+v", fin)
	}
	if _, err := w.bank.Checkpoint(context.Background(), cp); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("metadata of the deleted checkpoint: %v", err)
	}
}

// The deletion was recorded but the choreographer stopped before fanning it out: the
// tick fans it out.
func TestTickFansOutADeletionWhoseFanOutWasCutShort(t *testing.T) {
	w := newWorld(t)
	cp, _, _ := w.available()
	ctx := context.Background()
	now := w.now()
	if err := w.bank.Deletions().SetStatusAt(ctx, cp, events.StatusDeleting, now); err != nil {
		t.Fatal(err)
	}
	if err := w.bank.Deletions().Activate(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if err := w.bank.SetStatusAt(ctx, cp, events.StatusDeleting, now); err != nil {
		t.Fatal(err)
	}
	w.advance(31 * time.Second)
	only(t, w.tick(), events.BackupDelete)
}

// Every backup is deleted but the choreographer stopped before ending the deletion: the
// tick ends it.
func TestTickEndsADeletionWhoseEndWasCutShort(t *testing.T) {
	w := newWorld(t)
	cp, _, _ := w.available()
	w.startDeletion(cp)
	if _, err := w.bank.Deletions().Done(context.Background(), cp, "volumes-0000"); err != nil {
		t.Fatal(err)
	}
	if fin := decode[events.CheckpointDeletedResult](t, only(t, w.tick(), events.CheckpointDeleted)); fin.Status != events.StatusDeleted {
		t.Fatalf("deleted %+v", fin)
	}
}

func TestTickFailsADeletionPastItsDeadline(t *testing.T) {
	w := newWorld(t)
	cp, _, vol := w.available()
	w.startDeletion(cp)
	w.advance(testConfig.DeleteTimeout + 2*testConfig.RedriveAfter + time.Second)
	fin := decode[events.CheckpointDeletedResult](t, only(t, w.tick(), events.CheckpointDeleted))
	if fin.Status != events.StatusErrorDeleting || len(fin.Failed) != 1 || fin.Failed[0].Key != vol.Key() ||
		!strings.Contains(fin.Failed[0].Reason, "backup not deleted by the deadline") {
		t.Fatalf("deleted %+v", fin)
	}
	w.status(cp, events.StatusErrorDeleting) // the metadata is kept, to try again
}

// The request stopped after recording the deletion and before marking the checkpoint
// deleting: the tick carries on with the deletion and marks the checkpoint, so that it
// is not restored while its backups go, and ends error-deleting when a backup could not
// be deleted.
func TestTickMarksTheCheckpointOfADeletionCutShort(t *testing.T) {
	w := newWorld(t)
	cp, _, vol := w.available()
	ctx := context.Background()
	if err := w.bank.Deletions().SetStatusAt(ctx, cp, events.StatusDeleting, w.now()); err != nil {
		t.Fatal(err)
	}
	if err := w.bank.Deletions().Activate(ctx, cp); err != nil {
		t.Fatal(err)
	}
	w.advance(31 * time.Second)
	only(t, w.tick(), events.BackupDelete)
	w.status(cp, events.StatusDeleting)
	w.result(events.BackupDeleted, cp, "volumes-0000", events.StatusError, vol.Key())
	w.status(cp, events.StatusErrorDeleting)
}
