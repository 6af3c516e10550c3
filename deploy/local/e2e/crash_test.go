package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/gophercloud/gophercloud/v2"
	cindervolumes "github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestRunnerKilledMidWork runs podguard-local as its own process on the real stack (real
// Cinder volumes and backups) and kills it with SIGKILL in the middle of a protect, of a
// restore and of a deletion: each time once Cinder is working for the operation and
// before the operation ends, losing what the broker held and what the functions were
// doing. A new process on the same bank takes over: its tick re-drives the pending work,
// and each operation ends as if nothing had happened, with one backup per volume, one
// restored volume per backup, one pod, claim and PV per original, and no backup left
// after the deletion.
func TestRunnerKilledMidWork(t *testing.T) {
	began := time.Now()
	st := stacktest.Load(t)
	bin := buildLocal(t)
	e := stackEnv(t, st)
	reader := e.readBank()
	ctx := context.Background()
	// Every process: the tick every second (the runner's -tick), requests re-sent after
	// 2 s, deadlines far away.
	// Every process seals and opens with the same keyring, kept across the kills.
	keysDir := t.TempDir()
	keys, err := seal.Create(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	crashConfig := []string{"REDRIVE_AFTER=2s", "PROTECT_TIMEOUT=10m", "RESTORE_TIMEOUT=10m", "DELETE_TIMEOUT=10m", "BANK_KEYS_DIR=" + keysDir}

	ns := st.Namespace(t, e.kube, "crash")
	var vols []string
	data := map[string][]byte{}
	for _, name := range []string{"a", "b"} {
		d := []byte("podguard crash test " + ns + "/" + name)
		v := e.cinderVolume(ns+"-"+name, d)
		e.podWithVolume(ns, name, v, name == "a")
		vols = append(vols, v.ID)
		data[v.ID] = d
	}
	t.Logf("2 pods with 1 GiB Cinder volumes (CSI and in-tree) ready in %s", time.Since(began).Round(100*time.Millisecond))

	// Protect: killed once Cinder is backing up a volume of the checkpoint.
	start := time.Now()
	req := events.ProtectRequest{Plan: events.Plan{ID: "crash-" + ns, Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	l := launchLocal(t, st, bin, e.bank, nil, crashConfig...)
	l.send(t, ev)
	until(t, 2*time.Minute, "a backup of the checkpoint started", func() (bool, error) {
		return len(e.taggedBackups(id, vols...)) > 0, nil
	})
	e.killMidway(l, "protect", func() (string, error) { return reader.Status(ctx, id) }, events.StatusProtecting, func() string {
		bs := e.taggedBackups(id, vols...)
		pending, _ := reader.PendingResources(ctx, id)
		return fmt.Sprintf("%d backups started (%s), %d batches pending", len(bs), backupStatuses(bs), len(pending))
	})
	l = launchLocal(t, st, bin, e.bank, nil, crashConfig...)
	restarted := time.Now()
	if s := awaitStatus(t, 3*time.Minute, func() (string, error) { return reader.Status(ctx, id) }, events.StatusAvailable, events.StatusError); s != events.StatusAvailable {
		f, _ := reader.Failures(ctx, id)
		t.Fatalf("checkpoint ended %s: %+v", s, f)
	}
	t.Logf("protect of 2 pods killed and resumed: available %s after the request, %s after the restart", time.Since(start).Round(100*time.Millisecond), time.Since(restarted).Round(100*time.Millisecond))
	g, err := reader.Graph(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if pods, nvols := g.Counts(); pods != 2 || nvols != 2 {
		t.Fatalf("the checkpoint holds %d pods and %d volumes", pods, nvols)
	}
	backupOf := map[string]string{}
	for _, v := range vols {
		// One backup per volume tagged with the checkpoint: none duplicated, none failed.
		bs := e.taggedBackups(id, v)
		if len(bs) != 1 || bs[0].Status != backups.StatusAvailable {
			t.Fatalf("backups of volume %s tagged with the checkpoint: %+v", v, bs)
		}
		rec, err := checkpoint.Saved(ctx, reader, id, graph.Resource{Type: graph.VolumeType, ID: v}.Key())
		if err != nil {
			t.Fatal(err)
		}
		var info checkpoint.VolumeInfo
		if err := json.Unmarshal(rec.Data, &info); rec.Status != events.StatusAvailable || err != nil || info.BackupID != bs[0].ID {
			t.Fatalf("record of volume %s: %s %+v %v, backup %s", v, rec.Status, info, err, bs[0].ID)
		}
		backupOf[v] = info.BackupID
	}
	for _, name := range []string{"a", "b"} {
		pi, err := checkpoint.SavedPod(ctx, reader, keys, id, graph.PodResource(ns, name).Key())
		if err != nil || pi.Pod.Name != name || len(pi.Claims) != 1 {
			t.Fatalf("saved pod %s: %+v %v", name, pi, err)
		}
	}

	// Restore into a new namespace: killed once Cinder is restoring a volume.
	start = time.Now()
	target := ns + "-restored"
	rev := newEvent(events.RestoreRequested, events.RestoreRequest{Checkpoint: id, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}})
	rid := choreographer.RestoreID(rev)
	restoredName := func(orig string) string { return id + "@" + orig }
	t.Cleanup(func() {
		for _, v := range vols {
			e.deleteVolumesNamed(restoredName(v))
		}
	})
	stacktest.CleanupRestore(t, e.kube, rid)
	l.send(t, rev)
	until(t, 2*time.Minute, "a volume of the restore created", func() (bool, error) {
		for _, v := range vols {
			if len(e.volumesNamed(restoredName(v))) > 0 {
				return true, nil
			}
		}
		return false, nil
	})
	e.killMidway(l, "restore", func() (string, error) { return reader.Restores().Status(ctx, rid) }, events.RestoreInProgress, func() string {
		n := 0
		for _, v := range vols {
			n += len(e.volumesNamed(restoredName(v)))
		}
		pending, _ := reader.Restores().PendingResources(ctx, rid)
		return fmt.Sprintf("%d volumes being restored, %d batches pending", n, len(pending))
	})
	l = launchLocal(t, st, bin, e.bank, nil, crashConfig...)
	restarted = time.Now()
	if s := awaitStatus(t, 3*time.Minute, func() (string, error) { return reader.Restores().Status(ctx, rid) }, events.RestoreSuccess, events.RestoreFail); s != events.RestoreSuccess {
		f, _ := reader.Restores().Failures(ctx, rid)
		t.Fatalf("restore ended %s: %+v", s, f)
	}
	t.Logf("restore of 2 pods killed and resumed: success %s after the request, %s after the restart", time.Since(start).Round(100*time.Millisecond), time.Since(restarted).Round(100*time.Millisecond))
	recorded := restoredVolumes(t, reader, rid)
	for _, v := range vols {
		// One restored volume per backup.
		got := e.volumesNamed(restoredName(v))
		if len(got) != 1 || got[0].Status != volumes.StatusAvailable || got[0].Metadata[restorevolume.MetaRestore] != rid {
			t.Fatalf("volumes restored from the backup of %s: %+v", v, got)
		}
		if rv := recorded[v]; rv.VolumeID != got[0].ID || rv.BackupID != backupOf[v] {
			t.Fatalf("restore record of %s: %+v, volume %s", v, rv, got[0].ID)
		}
		if d := e.volumeData(got[0].ID, len(data[v])); string(d) != string(data[v]) {
			t.Fatalf("volume %s restored from %s holds %q, want %q", got[0].ID, v, d, data[v])
		}
	}
	if n := stacktest.CountRestored(t, e.kube, rid); n != (stacktest.Restored{Namespaces: 1, Volumes: 2, Claims: 2, Pods: 2}) {
		t.Fatalf("objects of the restore: %+v", n)
	}
	pods, err := e.kube.CoreV1().Pods(target).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + rid})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning {
			t.Fatalf("restored pod %s is %s", p.Name, p.Status.Phase)
		}
	}

	// Delete the checkpoint: killed once Cinder is deleting a backup.
	start = time.Now()
	l.send(t, newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: id}))
	until(t, 2*time.Minute, "a backup of the checkpoint being deleted", func() (bool, error) {
		return len(e.goingBackups(backupOf)) > 0, nil
	})
	e.killMidway(l, "deletion", func() (string, error) { return reader.Deletions().Status(ctx, id) }, events.StatusDeleting, func() string {
		return fmt.Sprintf("%d of %d backups being deleted or gone", len(e.goingBackups(backupOf)), len(backupOf))
	})
	l = launchLocal(t, st, bin, e.bank, nil, crashConfig...)
	restarted = time.Now()
	if s := awaitStatus(t, 3*time.Minute, func() (string, error) { return reader.Deletions().Status(ctx, id) }, events.StatusDeleted, events.StatusErrorDeleting); s != events.StatusDeleted {
		f, _ := reader.Deletions().Failures(ctx, id)
		t.Fatalf("deletion ended %s: %+v", s, f)
	}
	t.Logf("deletion killed and resumed: deleted %s after the request, %s after the restart", time.Since(start).Round(100*time.Millisecond), time.Since(restarted).Round(100*time.Millisecond))
	for _, v := range vols {
		if bs := e.liveBackups(v); len(bs) != 0 {
			t.Fatalf("backups of volume %s left: %+v", v, bs)
		}
	}
	if _, err := reader.Checkpoint(ctx, id); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("the deleted checkpoint's index: %v", err)
	}
	l.stop(t)
	t.Logf("whole test %s", time.Since(began).Round(100*time.Millisecond))
}

// crashEnv is an environment on the stack without a runner in the test's process (the
// runner runs as its own process), with its own bank container reached with tempauth,
// removed at the end.
type crashEnv struct {
	*env
	cinder *gophercloud.ServiceClient
}

func stackEnv(t *testing.T, st *stacktest.Stack) *crashEnv {
	t.Helper()
	e := &env{t: t, st: st, kube: st.Kube(t), bankAuth: "tempauth", observed: map[string][]event.Event{}}
	e.bank = fmt.Sprintf("podguard-crash-%d", time.Now().UnixNano()%1e9)
	st.RemoveContainerAtEnd(t, e.bankAuth, e.bank)
	sc, err := st.OpenStack().BlockStorage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.volumes, e.backups = volumes.New(sc), backups.New(sc)
	return &crashEnv{env: e, cinder: sc}
}

// killMidway kills the runner, checks that the operation is still in progress (else the
// kill proves nothing), and logs what was in flight.
func (e *crashEnv) killMidway(l *local, what string, status func() (string, error), running string, inFlight func() string) {
	e.t.Helper()
	l.kill(e.t)
	s, err := status()
	if err != nil {
		e.t.Fatal(err)
	}
	if s != running {
		e.t.Fatalf("the %s was %s before the runner was killed", what, s)
	}
	e.t.Logf("runner killed during the %s: %s", what, inFlight())
}

// taggedBackups lists the backups of the volumes tagged with a checkpoint, except those
// being deleted (a duplicate a step removes).
func (e *crashEnv) taggedBackups(checkpoint string, vols ...string) []backups.Backup {
	e.t.Helper()
	var out []backups.Backup
	for _, v := range vols {
		for _, b := range e.liveBackups(v) {
			if b.Metadata[backupvolume.MetaCheckpoint] == checkpoint {
				out = append(out, b)
			}
		}
	}
	return out
}

// goingBackups lists the backups (volume -> backup) being deleted or already gone.
func (e *crashEnv) goingBackups(backupOf map[string]string) []string {
	e.t.Helper()
	var out []string
	for _, id := range backupOf {
		b, err := e.backups.Get(context.Background(), id)
		switch {
		case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
			out = append(out, id)
		case err != nil:
			e.t.Fatal(err)
		case b.Status == backups.StatusDeleting:
			out = append(out, id)
		}
	}
	return out
}

func backupStatuses(bs []backups.Backup) string {
	var s []string
	for _, b := range bs {
		s = append(s, b.Status)
	}
	return strings.Join(s, ", ")
}

// volumesNamed lists the Cinder volumes with a name, whatever their metadata: a restored
// volume is named "<checkpoint>@<original volume>", so a duplicate cannot hide.
func (e *crashEnv) volumesNamed(name string) []volumes.Volume {
	e.t.Helper()
	pages, err := cindervolumes.List(e.cinder, cindervolumes.ListOpts{Name: name}).AllPages(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	vs, err := cindervolumes.ExtractVolumes(pages)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []volumes.Volume
	for _, v := range vs {
		if v.Status != volumes.StatusDeleting {
			out = append(out, volumes.Volume{ID: v.ID, Name: v.Name, Status: v.Status, Metadata: v.Metadata})
		}
	}
	return out
}

// deleteVolumesNamed deletes the volumes with a name once they can be deleted.
func (e *crashEnv) deleteVolumesNamed(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, v := range e.volumesNamed(name) {
		_, _ = e.volumes.WaitForStatus(ctx, v.ID, volumes.StatusAvailable, volumes.StatusError, volumes.StatusErrorRestoring)
		if err := e.volumes.Delete(ctx, v.ID); err != nil {
			e.t.Logf("cleanup: %v", err)
			continue
		}
		_ = e.volumes.WaitForDeleted(ctx, v.ID)
	}
}

// restoredVolumes reads, from a restore's records, the volume restored for each original.
func restoredVolumes(t *testing.T, b *bank.Bank, restore string) map[string]checkpoint.RestoredVolume {
	t.Helper()
	recs, err := b.Restores().Records(context.Background(), restore)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]checkpoint.RestoredVolume{}
	for _, rec := range recs {
		for key, rr := range rec.Resources {
			if !strings.HasPrefix(key, graph.VolumeType+"#") {
				continue
			}
			var rv checkpoint.RestoredVolume
			if err := json.Unmarshal(rr.Data, &rv); err != nil {
				t.Fatalf("record of %s: %v", key, err)
			}
			out[rv.OriginalID] = rv
		}
	}
	return out
}

// until polls cond every 100 ms until it holds, and fails the test after timeout.
func until(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}

// awaitStatus polls an operation's status until it is one of done, and returns it.
func awaitStatus(t testing.TB, timeout time.Duration, status func() (string, error), done ...string) string {
	t.Helper()
	var got string
	until(t, timeout, "status "+strings.Join(done, " or "), func() (bool, error) {
		s, err := status()
		if err != nil && !errors.Is(err, bank.ErrNotFound) {
			return false, err
		}
		got = s
		for _, d := range done {
			if s == d {
				return true, nil
			}
		}
		return false, nil
	})
	return got
}
