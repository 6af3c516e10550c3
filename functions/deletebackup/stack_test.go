package deletebackup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/deletebackup"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestDeleteOnStack deletes the backups of five checkpoints of one volume on the local
// stack's Cinder, in two chains: a full backup and two incremental ones, each based on
// the previous; then a full backup and an incremental one. Deleting an older checkpoint
// of a chain first is refused for the volume, with the reason, and deletes nothing; a
// backup being created is refused too; deleting each chain newest first deletes all.
func TestDeleteOnStack(t *testing.T) {
	st := stacktest.Load(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctx = logging.WithLogger(ctx, zaptest.NewLogger(t).Sugar())
	sc, err := st.OpenStack().BlockStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bc, vc := backups.New(sc), volumes.New(sc)
	bc.PollInterval, vc.PollInterval = 200*time.Millisecond, 200*time.Millisecond
	run := "dbk-" + uuid.NewString()[:8]
	timed := func(what string, start time.Time) { t.Logf("%-44s %5.1fs", what, time.Since(start).Seconds()) }

	container := "podguard-it-" + run
	bk, err := bank.Open(ctx, st.Bank("tempauth", container), st.OpenStack())
	if err != nil {
		t.Fatal(err)
	}
	st.RemoveContainerAtEnd(t, "tempauth", container)

	start := time.Now()
	v, err := vc.Create(ctx, run, 1, map[string]string{"podguard-test": run})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteVolumeAtEnd(t, vc, v.ID)
	if _, err := vc.WaitForStatus(ctx, v.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("create a 1 GiB volume", start)
	res := graph.Resource{Type: graph.VolumeType, ID: v.ID, Name: "ns/" + run}
	const batchName = "volumes-0000"

	// Checkpoints of the volume, as back-up-volume leaves them: a backup tagged with the
	// checkpoint and resource, and the checkpoint's record of the batch.
	startBackup := func(cp string, incremental bool) *backups.Backup {
		t.Helper()
		start = time.Now()
		b, err := bc.Create(ctx, backups.CreateOpts{VolumeID: v.ID, Name: "podguard-" + cp, Incremental: incremental,
			Metadata: map[string]string{backupvolume.MetaCheckpoint: cp, backupvolume.MetaResource: res.Key()}})
		if err != nil {
			t.Fatal(err)
		}
		stacktest.DeleteBackupAtEnd(t, bc, b.ID)
		return b
	}
	stored := map[string]bool{}
	record := func(cp string, b *backups.Backup) {
		t.Helper()
		if !stored[cp] {
			stored[cp] = true
			banktest.Protecting(t, bk, bank.Checkpoint{ID: cp}, &graph.Graph{Nodes: []graph.Node{{Resource: res}}})
		}
		mode, status := map[bool]string{false: "full", true: "incremental"}[b.IsIncremental], events.StatusAvailable
		if b.Status != backups.StatusAvailable {
			status = events.StatusError // still creating at the checkpoint's deadline
		}
		data, err := json.Marshal(checkpoint.VolumeInfo{VolumeID: v.ID, BackupID: b.ID, Mode: mode, SizeGiB: b.Size, BackupStatus: b.Status, StartedAt: b.CreatedAt})
		if err != nil {
			t.Fatal(err)
		}
		if err := bk.Checkpoints().PutRecord(ctx, cp, bank.Record{Batch: batchName, UpdatedAt: time.Now().UTC(),
			Resources: map[string]bank.ResourceRecord{res.Key(): {Status: status, Data: data}}}); err != nil {
			t.Fatal(err)
		}
	}
	available := func(b *backups.Backup) *backups.Backup {
		t.Helper()
		b, err := bc.WaitForStatus(ctx, b.ID, backups.StatusAvailable)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vc.WaitForStatus(ctx, v.ID, volumes.StatusAvailable); err != nil {
			t.Fatal(err)
		}
		timed(map[bool]string{false: "full", true: "incremental"}[b.IsIncremental]+" backup "+b.ID, start)
		return b
	}
	protect := func(cp string, incremental bool) *backups.Backup {
		t.Helper()
		b := available(startBackup(cp, incremental))
		if b.IsIncremental != incremental {
			t.Fatalf("backup %s: incremental %t, want %t", b.ID, b.IsIncremental, incremental)
		}
		record(cp, b)
		return b
	}

	step := deletebackup.NewStep(bc, bk, time.Now)
	deadline := time.Now().Add(10 * time.Minute).UTC()
	request := func(cp string) event.Event {
		e := event.New()
		e.SetID("delete-" + cp + "-" + batchName)
		e.SetSource("test")
		e.SetType(events.BackupDelete)
		if err := e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: cp, Batch: batchName,
			Resources: []graph.Resource{res}, Deadline: deadline}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	// deleteCheckpoint starts an attempt at deleting the checkpoint (the choreographer
	// records it, forgetting an attempt before), and delivers the request again, as the
	// tick does, until the step replies; it returns the volume's result.
	deleteCheckpoint := func(cp string) events.ResourceResult {
		t.Helper()
		if err := bk.Deletions().Reset(ctx, cp); err != nil {
			t.Fatal(err)
		}
		banktest.Deleting(t, bk, cp, deadline)
		start, e := time.Now(), request(cp)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			out, err := step.Handle(ctx, e)
			if err != nil {
				t.Fatalf("delivery %d of the deletion of %s: %v", n, cp, err)
			}
			if out != nil {
				var r events.StepResult
				if err := out.DataAs(&r); err != nil {
					t.Fatal(err)
				}
				if out.Type() != events.BackupDeleted || r.Checkpoint != cp || r.Batch != batchName || len(r.Results) != 1 || r.Results[0].Key != res.Key() {
					t.Fatalf("reply %s %+v", out.Type(), r)
				}
				timed(fmt.Sprintf("delete checkpoint %s (%d deliveries)", cp, n), start)
				t.Logf("  -> %s %s", r.Results[0].Status, r.Results[0].Reason)
				return r.Results[0]
			}
			select {
			case <-ctx.Done():
				t.Fatalf("deletion of %s not settled after %d deliveries: %v", cp, n, ctx.Err())
			case <-tick.C:
			}
		}
	}
	status := func(id string) string {
		t.Helper()
		b, err := bc.Get(ctx, id)
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return "gone"
		}
		if err != nil {
			t.Fatal(err)
		}
		return b.Status
	}

	deleted := func(cp, backup string) {
		t.Helper()
		if r := deleteCheckpoint(cp); r.Status != events.StatusDeleted || r.Reason != "" {
			t.Fatalf("deleting checkpoint %s: %+v", cp, r)
		}
		if s := status(backup); s != "gone" {
			t.Fatalf("backup %s of checkpoint %s is %s after its deletion", backup, cp, s)
		}
	}
	refused := func(cp, backup string) {
		t.Helper()
		r := deleteCheckpoint(cp)
		want := "backup " + backup + " of volume " + v.ID + " has newer incremental backups depending on it; delete the checkpoints holding them first (newest first)"
		if r.Status != events.StatusError || r.Reason != want {
			t.Fatalf("deleting checkpoint %s before a newer one: %+v, want error %q", cp, r, want)
		}
		if s := status(backup); s != backups.StatusAvailable {
			t.Fatalf("after the refusal, backup %s is %s, want available", backup, s)
		}
	}

	// Chain A: a full backup and two incremental ones, each based on the previous.
	cp1, cp2, cp3 := run+"-1", run+"-2", run+"-3"
	full1 := protect(cp1, false)
	inc1 := protect(cp2, true)
	inc2 := protect(cp3, true)

	// An older checkpoint first: Cinder refuses, for the oldest and for the one in the
	// middle of the chain alike, and nothing is deleted.
	refused(cp1, full1.ID)
	refused(cp2, inc1.ID)

	// Chain B starts with a full backup. While it is being created (a protect racing the
	// deletion) it cannot be deleted: the volume's result is an error with Cinder's answer,
	// not a retry. (Should the backup be available before the request is handled, it is
	// simply deleted, and made again.)
	cp4, cp5 := run+"-4", run+"-5"
	full2 := startBackup(cp4, false)
	record(cp4, full2)
	if r := deleteCheckpoint(cp4); r.Status == events.StatusError {
		want := "backup " + full2.ID + " of volume " + v.ID + " is creating: Cinder deletes a backup only when it is available or in error; delete again once it is (Cinder: Invalid backup: Backup status must be available or error)"
		if r.Reason != want {
			t.Fatalf("deleting a backup being created: %q, want %q", r.Reason, want)
		}
		full2 = available(full2)
	} else {
		t.Logf("backup %s was available before its deletion was asked: %+v", full2.ID, r)
		full2 = protect(cp4, false)
	}
	record(cp4, full2)
	inc3 := protect(cp5, true)

	// Chain A deletes newest first, whatever chain B holds: an incremental backup is based
	// on the newest backup, which was chain B's full one.
	deleted(cp3, inc2.ID)
	deleted(cp2, inc1.ID)
	deleted(cp1, full1.ID)
	// Chain B: the same rule.
	refused(cp4, full2.ID)
	deleted(cp5, inc3.ID)
	deleted(cp4, full2.ID)

	// A late duplicate is answered at once, from Cinder's 404.
	out, err := step.Handle(ctx, request(cp1))
	if err != nil || out == nil {
		t.Fatalf("late duplicate: %v, %v; want a reply at once", out, err)
	}
	var dup events.StepResult
	if err := out.DataAs(&dup); err != nil || dup.Results[0].Status != events.StatusDeleted {
		t.Fatalf("late duplicate: %+v, %v", dup, err)
	}
}
