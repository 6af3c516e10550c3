package e2e

import (
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// dropFirst loses the first delivery of event types to functions: it answers 202
// without handing the event to the function, as if the event had been dropped on the
// floor after the broker let go of it (a crash of the function, a lost reply).
type dropFirst struct {
	mu      sync.Mutex
	pending map[[2]string]bool // {function, type} still to drop
	dropped map[[2]string]time.Time
}

func newDropFirst(drops ...[2]string) *dropFirst {
	d := &dropFirst{pending: map[[2]string]bool{}, dropped: map[[2]string]time.Time{}}
	for _, k := range drops {
		d.pending[k] = true
	}
	return d
}

func (d *dropFirst) wrap(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := [2]string{name, r.Header.Get("ce-type")}
		d.mu.Lock()
		drop := d.pending[k]
		if drop {
			delete(d.pending, k)
			d.dropped[k] = time.Now()
		}
		d.mu.Unlock()
		if drop {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// left lists what was not dropped yet.
func (d *dropFirst) left() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for k := range d.pending {
		out = append(out, k[0]+" "+k[1])
	}
	sort.Strings(out)
	return out
}

// TestLostEventsAreRedrivenByTheTick: a protect, a restore of its checkpoint and its
// deletion, while the first delivery of every request and result of each flow is lost:
// the listing request and its result, the step requests of both kinds of batch and a
// result, the volume and pod requests of the restore and their results, the backup
// deletion request and its result. Nothing but the tick (every second, REDRIVE_AFTER 2 s)
// sends them again; each flow ends as it would have, with one backup per volume, one
// restored volume per backup and one pod per original. (The volume steps use the
// instant Cinder doubles: the subject is the loss of events.)
func TestLostEventsAreRedrivenByTheTick(t *testing.T) {
	d := newDropFirst(
		[2]string{events.FnListPods, events.PodsList},
		[2]string{events.FnChoreographer, events.PodsListed},
		[2]string{events.FnSnapshotMetadata, events.MetadataSnapshot},
		[2]string{events.FnBackupVolume, events.VolumeBackup},
		[2]string{events.FnChoreographer, events.VolumeBackedUp},
		[2]string{events.FnRestoreVolume, events.VolumeRestore},
		[2]string{events.FnChoreographer, events.VolumeRestored},
		[2]string{events.FnRecreatePod, events.PodRecreate},
		[2]string{events.FnChoreographer, events.PodRecreated},
		[2]string{events.FnDeleteBackup, events.BackupDelete},
		[2]string{events.FnChoreographer, events.BackupDeleted},
	)
	cinder, vols := backupvolume.NewInstantCinder(), restorevolume.NewInstantVolumes()
	e := newEnv(t, envOptions{wrap: d.wrap, cinder: cinder, volumes: vols})
	ns := e.st.Namespace(t, e.kube, "lost")
	for _, name := range []string{"a", "b"} {
		e.podWithVolume(ns, name, &volumes.Volume{ID: "lost-" + ns + "-" + name}, true)
	}

	start := time.Now()
	req := events.ProtectRequest{Plan: events.Plan{ID: "lost-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	cp := choreographer.CheckpointID(req, ev)
	e.send(ev)
	if res := e.finished(cp, 2*time.Minute); res.Status != events.StatusAvailable || res.Resources != 4 {
		t.Fatalf("protect finished %+v", res)
	}
	t.Logf("protect with 5 events lost: available in %s", time.Since(start).Round(100*time.Millisecond))
	if n := cinder.Count(); n != 2 {
		t.Fatalf("%d backups for 2 volumes", n)
	}

	start = time.Now()
	target := ns + "-restored"
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 2*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore finished %+v", res)
	}
	t.Logf("restore with 4 events lost: success in %s", time.Since(start).Round(100*time.Millisecond))
	if n := vols.Count(); n != 2 {
		t.Fatalf("%d volumes restored from 2 backups", n)
	}
	if n := stacktest.CountRestored(t, e.kube, rid); n != (stacktest.Restored{Namespaces: 1, Volumes: 2, Claims: 2, Pods: 2}) {
		t.Fatalf("objects of the restore: %+v", n)
	}
	for name, p := range e.restoredPods(target, rid) {
		if !stacktest.Running(&p) {
			t.Fatalf("restored pod %s is %s", name, p.Status.Phase)
		}
	}

	start = time.Now()
	e.send(newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cp}))
	if res := e.deleted(cp, 2*time.Minute); res.Status != events.StatusDeleted {
		t.Fatalf("deletion %+v", res)
	}
	t.Logf("deletion with 2 events lost: deleted in %s", time.Since(start).Round(100*time.Millisecond))
	if left := d.left(); len(left) != 0 {
		t.Fatalf("never delivered, so never lost: %v", left)
	}
}
