package restorevolume

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	cindervolumes "github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestRestoreVolumeOnStack restores a real backup into a new volume with the step, on the
// local stack's Cinder and Swift: the request is delivered again, as the tick does, until
// the step answers.
func TestRestoreVolumeOnStack(t *testing.T) {
	st := stacktest.Load(t)
	// About 20 s on an idle stack; a backup and a restore can take a minute each when
	// others load Cinder.
	ctx, cancel := context.WithTimeout(logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar()), 150*time.Second)
	defer cancel()
	sc, err := st.OpenStack().BlockStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vc, bc := volumes.New(sc), backups.New(sc)
	vc.PollInterval, bc.PollInterval = 200*time.Millisecond, 200*time.Millisecond
	run := "it-" + uuid.NewString()[:8]
	timed := func(what string, start time.Time) { t.Logf("%-32s %5.1fs", what, time.Since(start).Seconds()) }

	// A volume and its backup, as a checkpoint left them.
	start := time.Now()
	orig, err := vc.Create(ctx, run, 1, map[string]string{"podguard-test": run})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteVolumeAtEnd(t, vc, orig.ID)
	if _, err := vc.WaitForStatus(ctx, orig.ID, volumes.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("create 1 GiB volume", start)
	start = time.Now()
	bk, err := bc.Create(ctx, backups.CreateOpts{VolumeID: orig.ID, Name: run, Metadata: map[string]string{"podguard-test": run}})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.DeleteBackupAtEnd(t, bc, bk.ID)
	if bk, err = bc.WaitForStatus(ctx, bk.ID, backups.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	timed("back it up", start)

	// The checkpoint's record of the backup, and the restore, in a bank of their own.
	container := "podguard-test-" + run
	b, err := bank.Open(ctx, st.Bank("keystone", container), st.OpenStack())
	if err != nil {
		t.Fatal(err)
	}
	st.RemoveContainerAtEnd(t, "keystone", container)
	cp := uuid.NewString()
	res := graph.Resource{Type: graph.VolumeType, ID: orig.ID, Name: "ns/data"}
	bs, r := banktest.Restoring(t, b, bank.Checkpoint{ID: cp}, &graph.Graph{Nodes: []graph.Node{{Resource: res}}}, bank.Restore{ID: uuid.NewString()})
	restore := r.ID
	info, _ := json.Marshal(checkpoint.VolumeInfo{VolumeID: orig.ID, BackupID: bk.ID, Mode: "full", SizeGiB: 1,
		BackupStatus: backups.StatusAvailable, StartedAt: time.Now().UTC()})
	if err := b.Checkpoints().PutRecord(ctx, cp, bank.Record{Batch: batchName, UpdatedAt: time.Now().UTC(),
		Resources: map[string]bank.ResourceRecord{res.Key(): {Status: events.StatusAvailable, Data: info}}}); err != nil {
		t.Fatal(err)
	}

	// Deliver the request until the step answers; between deliveries, wait for the volume.
	step := NewStep(vc, b, time.Now)
	req := banktest.RestoreRequest(bs, r, batchName)
	tag := map[string]string{MetaRestore: restore, MetaResource: res.Key()}
	start = time.Now()
	var (
		result     *events.RestoreStepResult
		deliveries int
		cleaned    = map[string]bool{}
	)
	for result == nil {
		if ctx.Err() != nil {
			t.Fatalf("no answer after %d deliveries: %v", deliveries, ctx.Err())
		}
		deliveries++
		out, err := step.Handle(ctx, restoreEvent(t, req))
		if err != nil {
			t.Fatalf("delivery %d: %v", deliveries, err)
		}
		v, err := vc.FindRestored(ctx, bk.ID, tag)
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			t.Fatalf("delivery %d: no volume restored from %s", deliveries, bk.ID)
		}
		if !cleaned[v.ID] {
			cleaned[v.ID] = true
			stacktest.DeleteVolumeAtEnd(t, vc, v.ID)
		}
		if out != nil {
			validate(t, *out)
			result = &events.RestoreStepResult{}
			if err := out.DataAs(result); err != nil {
				t.Fatal(err)
			}
			break
		}
		var failed *volumes.FailedError
		if _, err := vc.WaitForStatus(ctx, v.ID, volumes.StatusAvailable); err != nil && !errors.As(err, &failed) {
			t.Fatal(err)
		}
	}
	timed("restore (step)", start)
	t.Logf("answered after %d deliveries", deliveries)
	if len(result.Results) != 1 || result.Results[0].Key != res.Key() || result.Results[0].Status != events.StatusAvailable {
		t.Fatalf("result = %+v", result)
	}

	rec, err := b.Restores().Record(ctx, restore, batchName)
	if err != nil {
		t.Fatal(err)
	}
	var rv checkpoint.RestoredVolume
	if err := json.Unmarshal(rec.Resources[res.Key()].Data, &rv); err != nil {
		t.Fatal(err)
	}
	name := cp + "@" + orig.ID
	if rv.OriginalID != orig.ID || rv.BackupID != bk.ID || rv.Name != name || rv.VolumeID == "" || rv.VolumeID == orig.ID {
		t.Fatalf("recorded %+v", rv)
	}
	nv, err := vc.Get(ctx, rv.VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if nv.Name != name || nv.Status != volumes.StatusAvailable || nv.Size != 1 {
		t.Errorf("restored volume = %+v", nv)
	}
	// Tagged with the restore and the resource; what Cinder restored from the original stays.
	if nv.Metadata[MetaRestore] != restore || nv.Metadata[MetaResource] != res.Key() ||
		nv.Metadata["podguard-test"] != run || nv.Metadata[volumes.MetadataSourceBackup] != bk.ID {
		t.Errorf("restored volume's metadata = %v", nv.Metadata)
	}

	// A redelivery that finds no record (one racing the first) finds the volume again.
	if err := b.Restores().Reset(ctx, restore); err != nil {
		t.Fatal(err)
	}
	out, err := step.Handle(ctx, restoreEvent(t, req))
	if err != nil || out == nil {
		t.Fatalf("redelivery without the record: %v, %v", out, err)
	}
	var again events.RestoreStepResult
	if err := out.DataAs(&again); err != nil || !equal(&again, result) {
		t.Fatalf("redelivery answered %+v (%v), want %+v", again, err, result)
	}
	pages, err := cindervolumes.List(sc, cindervolumes.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	named, err := cindervolumes.ExtractVolumes(pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range named {
		if !cleaned[v.ID] {
			stacktest.DeleteVolumeAtEnd(t, vc, v.ID)
		}
	}
	if len(named) != 1 || named[0].ID != rv.VolumeID {
		t.Fatalf("%d volumes named %s, want only %s", len(named), name, rv.VolumeID)
	}
}
