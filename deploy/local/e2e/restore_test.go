package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// restoreView is what the checkpoints function shows of a restore.
type restoreView struct {
	ID         string                   `json:"id"`
	Checkpoint string                   `json:"checkpoint"`
	Status     string                   `json:"status"`
	Parameters events.RestoreParameters `json:"parameters"`
	Resources  []struct {
		graph.Resource
		Status   string          `json:"status"`
		Reason   string          `json:"reason"`
		Restored json.RawMessage `json:"restored"`
	} `json:"resources"`
	Progress events.Progress `json:"progress"`
}

func (e *env) showRestore(id string) *restoreView {
	e.t.Helper()
	resp, err := e.runner.Read(context.Background(), "/api/restores/"+id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("show restore %s: %d %s", id, resp.StatusCode, b)
	}
	var v restoreView
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatal(err)
	}
	return &v
}

// protect protects the pods of a namespace and waits until the checkpoint is available;
// it returns the checkpoint and the request.
func (e *env) protect(ns string) (string, event.Event) {
	e.t.Helper()
	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	if res := e.finished(id, 4*time.Minute); res.Status != events.StatusAvailable {
		e.t.Fatalf("protect of %s: %+v", ns, res)
	}
	return id, ev
}

// restore sends a restore request (as many times as asked) and registers the removal of
// what it creates: its Cinder volumes, persistent volumes and namespaces.
func (e *env) restore(req events.RestoreRequest, times int) string {
	e.t.Helper()
	ev := newEvent(events.RestoreRequested, req)
	id := choreographer.RestoreID(ev)
	e.t.Cleanup(func() { e.removeRestoredVolumes(id) })
	stacktest.CleanupRestore(e.t, e.kube, id)
	for range times {
		e.send(ev)
	}
	return id
}

// removeRestoredVolumes deletes the Cinder volumes restored by a restore.
func (e *env) removeRestoredVolumes(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		v, err := e.volumes.FindByMetadata(ctx, map[string]string{restorevolume.MetaRestore: id})
		if err != nil || v == nil {
			return
		}
		_, _ = e.volumes.WaitForStatus(ctx, v.ID, "available", "error", "error_restoring")
		if err := e.volumes.Delete(ctx, v.ID); err != nil {
			e.t.Logf("delete restored volume %s: %v", v.ID, err)
			return
		}
		_ = e.volumes.WaitForDeleted(ctx, v.ID)
	}
}

// restoredVolumes returns, per original volume id, the volume the restore created.
func (v *restoreView) restoredVolumes(t *testing.T) map[string]checkpoint.RestoredVolume {
	t.Helper()
	out := map[string]checkpoint.RestoredVolume{}
	for _, r := range v.Resources {
		if r.Type != graph.VolumeType {
			continue
		}
		var rv checkpoint.RestoredVolume
		if err := json.Unmarshal(r.Restored, &rv); err != nil {
			t.Fatalf("restored volume of %s: %v (%s)", r.ID, err, r.Restored)
		}
		out[r.ID] = rv
	}
	return out
}

// volumeData reads the start of a Cinder volume's file on the NFS export.
func (e *env) volumeData(id string, n int) []byte {
	e.t.Helper()
	f, err := os.Open(filepath.Join(e.st.Env["PODGUARD_CINDER_EXPORT"], "volume-"+id))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// restoredPods lists the pods a restore created in a namespace, by name.
func (e *env) restoredPods(ns, restore string) map[string]corev1.Pod {
	e.t.Helper()
	pods, err := e.kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restore})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		out[p.Name] = p
	}
	return out
}

// TestRestoreAndDeleteFullCycle: two pods, one of them with two volumes (in-tree and
// CSI), are protected, restored into a new namespace (one pod renamed), restored again
// into their own namespace while the originals still run, then the checkpoint is
// deleted. Every event is delivered twice, and the user sends each request twice; once
// the first restore and the deletion have ended, every event of theirs is delivered once
// more, last first: one volume per backup per restore, one pod per restore, the same
// final state.
func TestRestoreAndDeleteFullCycle(t *testing.T) {
	rec := newRecorder(events.RestoreRequested, events.VolumeRestore, events.VolumeRestored, events.PodRecreate, events.PodRecreated,
		events.DeleteRequested, events.BackupDelete, events.BackupDeleted)
	e := newEnv(t, envOptions{wrap: rec.around(twice)})
	ns := e.st.Namespace(t, e.kube, "cycle")
	data := map[string][]byte{}
	mk := func(name string) *volumes.Volume {
		d := []byte("podguard data of " + ns + "/" + name)
		v := e.cinderVolume(ns+"-"+name, d)
		data[v.ID] = d
		return v
	}
	web, db, dblog := mk("web"), mk("db"), mk("dblog")
	e.podWithVolume(ns, "web", web, true)
	e.podWithVolumes(ns, "db", []*volumes.Volume{db, dblog}, []bool{false, true})
	cp, protectReq := e.protect(ns)
	rec.take()

	// Into a new namespace, web renamed.
	target := ns + "-into" // created by the restore
	start := time.Now()
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{
		RestoreName: "cycle", RestoreDescription: "e2e", Namespace: target, CreateNamespace: true, Names: map[string]string{ns + ":web": "web-restored"}}}, 2)
	res := e.restoreFinished(rid, 5*time.Minute)
	t.Logf("restored 2 pods and 3 volumes of 1 GiB into a new namespace in %s", time.Since(start).Round(100*time.Millisecond))
	if res.Status != events.RestoreSuccess || len(res.Failed) != 0 || res.Checkpoint != cp {
		t.Fatalf("restore finished %+v", res)
	}
	pods := e.restoredPods(target, rid)
	if len(pods) != 2 {
		t.Fatalf("restored pods %v", pods)
	}
	webPod, ok := pods["web-restored"]
	if !ok || webPod.Status.Phase != corev1.PodRunning {
		t.Fatalf("web-restored: %+v", webPod.Status)
	}
	for name, p := range pods {
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("%s is %s", name, p.Status.Phase)
		}
		if name != "web-restored" && !strings.HasPrefix(name, "podguard-restored-pod-") {
			t.Errorf("restored db pod named %s", name)
		}
		for _, vol := range p.Spec.Volumes {
			if vol.PersistentVolumeClaim == nil {
				continue
			}
			stacktest.WaitClaimBound(t, e.kube, target, vol.PersistentVolumeClaim.ClaimName, time.Minute)
		}
	}
	v := e.showRestore(rid)
	if v.Status != events.RestoreSuccess || len(v.Resources) != 5 {
		t.Fatalf("restore view %+v", v)
	}
	for _, r := range v.Resources {
		if r.Status != events.StatusAvailable || len(r.Restored) == 0 {
			t.Errorf("%s: %s %s %s", r.Key(), r.Status, r.Reason, r.Restored)
		}
	}
	restored := v.restoredVolumes(t)
	ctx := context.Background()
	for orig, d := range data {
		rv := restored[orig]
		if rv.VolumeID == "" || rv.Name != cp+"@"+orig {
			t.Fatalf("volume %s restored as %+v", orig, rv)
		}
		// One volume per backup, although every request arrived four times.
		found, err := e.volumes.FindRestored(ctx, rv.BackupID, map[string]string{restorevolume.MetaRestore: rid,
			restorevolume.MetaResource: graph.Resource{Type: graph.VolumeType, ID: orig}.Key()})
		if err != nil || found == nil || found.ID != rv.VolumeID {
			t.Fatalf("restored volume of %s: %+v %v", orig, found, err)
		}
		if got := e.volumeData(rv.VolumeID, len(d)); string(got) != string(d) {
			t.Fatalf("volume %s restored from %s holds %q, want %q", rv.VolumeID, orig, got, d)
		}
		// The restored pod's PV is on the restored volume, of the original's kind.
		pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, "podguard-"+rv.VolumeID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		csi := pv.Spec.CSI != nil && pv.Spec.CSI.VolumeHandle == rv.VolumeID
		inTree := pv.Spec.Cinder != nil && pv.Spec.Cinder.VolumeID == rv.VolumeID
		if orig == db.ID && !inTree || orig != db.ID && !csi {
			t.Errorf("PV of %s: %+v", orig, pv.Spec.PersistentVolumeSource)
		}
	}

	// Every event of the restore again, late and last first: nothing changes.
	before := e.restoreState(target, rid, data, cp)
	t.Logf("replayed the restore's events, last first: %v", e.replayReversed(rec.take()))
	if after := e.restoreState(target, rid, data, cp); after != before {
		t.Fatalf("late events changed the restore:\n before %s\n after  %s", before, after)
	}

	// Into the original namespace while the originals still run: default names, claims
	// renamed so they cannot clash.
	rid2 := e.restore(events.RestoreRequest{Checkpoint: cp}, 1)
	if res := e.restoreFinished(rid2, 5*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore into the original namespace: %+v", res)
	}
	if pods := e.restoredPods(ns, rid2); len(pods) != 2 {
		t.Fatalf("pods restored into %s: %v", ns, pods)
	}
	for _, name := range []string{"web", "db"} {
		stacktest.WaitPod(t, e.kube, ns, name, time.Second, stacktest.Running)
	}

	// Delete the checkpoint: its backups, then its metadata.
	rec.take()
	del := newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cp})
	e.send(del)
	e.send(del)
	d := e.deleted(cp, 3*time.Minute)
	if d.Status != events.StatusDeleted || len(d.Failed) != 0 {
		t.Fatalf("deleted %+v", d)
	}
	for orig := range data {
		if bs := e.liveBackups(orig); len(bs) != 0 {
			t.Errorf("backups of %s left: %+v", orig, bs)
		}
	}
	resp, err := e.runner.Read(context.Background(), "/api/checkpoints/"+cp)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("deleted checkpoint shown: %d", resp.StatusCode)
	}
	b := e.readBank()
	if ids, _, err := b.ListCheckpoints(ctx, "", 10, ""); err != nil || len(ids) != 0 {
		t.Fatalf("checkpoints after the deletion: %v %v", ids, err)
	}
	// The restores stay listed: they are a history.
	if ids, _, err := b.ListRestores(ctx, 10, ""); err != nil || len(ids) != 2 {
		t.Fatalf("restores: %v %v", ids, err)
	}
	// Every event of the deletion again, late and last first: still deleted, nothing left.
	t.Logf("replayed the deletion's events, last first: %v", e.replayReversed(rec.take()))
	if _, err := b.Checkpoint(ctx, cp); err == nil {
		t.Fatal("late deletion events brought the checkpoint back")
	}
	for orig := range data {
		if bs := e.liveBackups(orig); len(bs) != 0 {
			t.Errorf("backups of %s after late deletion events: %+v", orig, bs)
		}
	}
	// Late duplicates: the protect request does not bring the checkpoint back, and the
	// delete request announces the same outcome.
	e.post(events.FnChoreographer, protectReq)
	if _, err := b.Checkpoint(ctx, cp); err == nil {
		t.Fatal("a late protect request recreated the deleted checkpoint")
	}
	n := e.count(events.CheckpointDeleted)
	first := e.next(0, events.CheckpointDeleted, 0)
	e.post(events.FnChoreographer, del)
	again := e.next(time.Minute, events.CheckpointDeleted, n)
	var d2 events.CheckpointDeletedResult
	if err := again.DataAs(&d2); err != nil || d2.Status != events.StatusDeleted || again.ID() != first.ID() {
		t.Fatalf("late duplicate delete: %+v %v", d2, err)
	}
}

// restoreState describes what a restore made, for comparison: its status, each
// resource's status and what it was restored as, every volume Cinder has under each
// restored name, and the restored pods with their uids and phases.
func (e *env) restoreState(ns, rid string, data map[string][]byte, cp string) string {
	e.t.Helper()
	var b strings.Builder
	v := e.showRestore(rid)
	fmt.Fprintf(&b, "status=%s", v.Status)
	for _, r := range v.Resources {
		fmt.Fprintf(&b, " %s=%s:%s", r.Key(), r.Status, r.Restored)
	}
	for _, orig := range slices.Sorted(maps.Keys(data)) {
		vs, err := e.volumes.ListNamed(context.Background(), cp+"@"+orig)
		if err != nil {
			e.t.Fatal(err)
		}
		fmt.Fprintf(&b, " volumes(%s)=", orig)
		for _, vol := range vs {
			fmt.Fprintf(&b, "%s,", vol.ID)
		}
	}
	pods := e.restoredPods(ns, rid)
	for _, name := range slices.Sorted(maps.Keys(pods)) {
		fmt.Fprintf(&b, " pod(%s)=%s:%s", name, pods[name].UID, pods[name].Status.Phase)
	}
	return b.String()
}

// post delivers an event straight to a function and fails unless it is accepted.
func (e *env) post(fn string, ev event.Event) {
	e.t.Helper()
	if status, msg := e.deliver(fn, ev); status >= 300 {
		e.t.Fatalf("post %s to %s: %d %s", ev.Type(), fn, status, msg)
	}
}

// rejected waits for the dead letter of a request answered 400 and returns its reason.
func (e *env) rejected(ev event.Event) string {
	e.t.Helper()
	dl := e.await(time.Minute, "dead letter of "+ev.Type(), func(d event.Event) bool {
		return d.ID() == ev.ID() && d.Extensions()["knativeerrorcode"] != nil
	})
	if code := dl.Extensions()["knativeerrorcode"]; code != "400" && code != int32(400) {
		e.t.Fatalf("%s: dead letter code %v", ev.Type(), code)
	}
	data, _ := dl.Extensions()["knativeerrordata"].(string)
	reason, _ := base64.StdEncoding.DecodeString(data)
	return string(reason)
}

// TestRestoreFailures: a backup whose data vanished (Cinder fails the volume restore), a
// pod whose name is taken in the target namespace: the restore ends fail with a reason per
// resource, the volume Cinder left in error is listed, the other pod is restored, and the
// existing pod is not touched.
func TestRestoreFailures(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "rfail")
	good := e.cinderVolume(ns+"-good", []byte("good"))
	lost := e.cinderVolume(ns+"-lost", []byte("lost"))
	clash := e.cinderVolume(ns+"-clash", []byte("clash"))
	e.podWithVolume(ns, "good", good, true)
	e.podWithVolume(ns, "lost", lost, true)
	e.podWithVolume(ns, "clash", clash, true)
	cp, _ := e.protect(ns)

	ctx := context.Background()
	rec, err := checkpoint.Saved(ctx, e.readBank(), cp, graph.Resource{Type: graph.VolumeType, ID: lost.ID}.Key())
	if err != nil {
		t.Fatal(err)
	}
	var info checkpoint.VolumeInfo
	if err := json.Unmarshal(rec.Data, &info); err != nil {
		t.Fatal(err)
	}
	// The backup's files vanish behind Cinder's back: its restore ends in error.
	dir := filepath.Join(e.st.Env["PODGUARD_CINDER_BACKUP_DIR"], info.BackupID[:2], info.BackupID[2:4], info.BackupID)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	target := e.st.Namespace(t, e.kube, "rfail-into")
	taken := stacktest.Pod(target, "taken", map[string]string{"owner": "someone"})
	taken, err = e.kube.CoreV1().Pods(target).Create(ctx, taken, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{
		Namespace: target, Names: map[string]string{ns + ":clash": "taken"}}}, 1)
	res := e.restoreFinished(rid, 5*time.Minute)
	if res.Status != events.RestoreFail {
		t.Fatalf("restore %+v", res)
	}
	reasons := map[string]string{}
	for _, f := range res.Failed {
		reasons[f.Key] = f.Reason
		t.Logf("failed %s: %s", f.Key, f.Reason)
	}
	lostVol := graph.Resource{Type: graph.VolumeType, ID: lost.ID}.Key()
	lostPod := graph.PodResource(ns, "lost").Key()
	clashPod := graph.PodResource(ns, "clash").Key()
	if len(res.Failed) != 3 || reasons[lostVol] == "" || !strings.Contains(reasons[lostPod], lost.ID) ||
		!strings.Contains(reasons[clashPod], "taken") || !strings.Contains(reasons[clashPod], "exists") {
		t.Fatalf("failures %v", reasons)
	}
	v := e.showRestore(rid)
	status := map[string]string{}
	for _, r := range v.Resources {
		status[r.Key()] = r.Status
	}
	if status[graph.PodResource(ns, "good").Key()] != events.StatusAvailable || status[lostVol] != events.StatusError {
		t.Fatalf("statuses %v", status)
	}
	// The volume Cinder created and failed is listed: nothing is orphaned silently.
	if rv := v.restoredVolumes(t)[lost.ID]; rv.VolumeID == "" {
		t.Fatalf("the failed volume is not listed: %+v", rv)
	}
	if pods := e.restoredPods(target, rid); len(pods) != 1 {
		t.Fatalf("restored pods %v", pods)
	}
	after, err := e.kube.CoreV1().Pods(target).Get(ctx, "taken", metav1.GetOptions{})
	if err != nil || after.UID != taken.UID || after.Labels[kube.LabelRestore] != "" {
		t.Fatalf("the existing pod was touched: %+v %v", after.ObjectMeta, err)
	}
}

// TestRestoreAndDeleteBadRequests: a restore of an unknown checkpoint, of a checkpoint
// still protecting, with parameters that do not fit, and deletions that cannot be done:
// each is answered 400 and dead-lettered with the reason, and nothing is created.
func TestRestoreAndDeleteBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	b := e.readBank()
	now := time.Now().UTC()
	unknown := uuid.NewString()
	protecting, err := b.CreateCheckpoint(ctx, bank.Checkpoint{ID: uuid.NewString(), Provider: checkpoint.ProviderID, CreatedAt: now, Deadline: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typ  string
		data any
		want string
	}{
		{events.RestoreRequested, events.RestoreRequest{Checkpoint: unknown}, "checkpoint " + unknown + " does not exist"},
		{events.RestoreRequested, events.RestoreRequest{Checkpoint: protecting.ID}, "is protecting"},
		{events.RestoreRequested, map[string]any{"checkpoint": protecting.ID, "parameters": map[string]any{"namespace": "Not_A_Namespace"}}, "/parameters/namespace"},
		{events.RestoreRequested, map[string]any{"parameters": map[string]any{}}, "checkpoint"},
		{events.DeleteRequested, events.DeleteRequest{Checkpoint: unknown}, "does not exist"},
		{events.DeleteRequested, events.DeleteRequest{Checkpoint: protecting.ID}, "is protecting"},
	} {
		ev := newEvent(c.typ, c.data)
		e.send(ev)
		if reason := e.rejected(ev); !strings.Contains(reason, c.want) {
			t.Errorf("%s %v: reason %q, want %q", c.typ, c.data, reason, c.want)
		} else {
			t.Logf("400: %s", reason)
		}
	}
	if ids, _, err := b.ListRestores(ctx, 10, ""); err != nil || len(ids) != 0 {
		t.Fatalf("restores after bad requests: %v %v", ids, err)
	}
	if status, err := b.Status(ctx, protecting.ID); err != nil || status != events.StatusProtecting {
		t.Fatalf("checkpoint status %s %v", status, err)
	}
}
