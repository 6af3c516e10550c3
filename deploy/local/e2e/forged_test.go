package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// world is what a forged event must not change: every object of the bank (name and
// hash), the backups and restored volumes of the test's Cinder volumes, and, in the
// cluster, the namespaces the events name with their pods and claims, and the persistent
// volumes of the test's Cinder volumes.
type world struct {
	Bank       map[string]string
	Cinder     map[string]string
	Namespaces map[string]string
	PVs        []string
}

func (e *env) world(checkpoint string, vols []string, namespaces []string) world {
	e.t.Helper()
	ctx := context.Background()
	w := world{Bank: map[string]string{}, Cinder: map[string]string{}, Namespaces: map[string]string{}}
	conn, err := e.st.Bank(e.bankAuth, e.bank).Connection(e.st.OpenStack())
	if err != nil {
		e.t.Fatal(err)
	}
	objs, err := conn.ObjectsAll(ctx, e.bank, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, o := range objs {
		w.Bank[o.Name] = o.Hash
	}
	for _, id := range vols {
		v, err := e.volumes.Get(ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		w.Cinder["volume "+id] = v.Status
		for _, b := range e.liveBackups(id) {
			w.Cinder["backup "+b.ID] = b.Status
		}
		named, err := e.volumes.ListNamed(ctx, checkpoint+"@"+id)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, r := range named {
			w.Cinder["restored "+r.ID] = r.Status
		}
	}
	for _, ns := range namespaces {
		if _, err := e.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			w.Namespaces[ns] = "absent"
			continue
		} else if err != nil {
			e.t.Fatal(err)
		}
		pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		claims, err := e.kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		var names []string
		for _, p := range pods.Items {
			names = append(names, "pod "+p.Name+" "+p.ResourceVersion)
		}
		for _, c := range claims.Items {
			names = append(names, "claim "+c.Name+" "+c.ResourceVersion)
		}
		slices.Sort(names)
		w.Namespaces[ns] = strings.Join(names, ", ")
	}
	pvs, err := e.kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, id := range vols {
		ours[id] = true
	}
	for k := range w.Cinder {
		if id, ok := strings.CutPrefix(k, "restored "); ok {
			ours[id] = true
		}
	}
	for _, pv := range pvs.Items {
		handle := ""
		switch {
		case pv.Spec.CSI != nil:
			handle = pv.Spec.CSI.VolumeHandle
		case pv.Spec.Cinder != nil:
			handle = pv.Spec.Cinder.VolumeID
		}
		if ours[handle] {
			w.PVs = append(w.PVs, pv.Name+" "+pv.ResourceVersion)
		}
	}
	slices.Sort(w.PVs)
	return w
}

func (w world) diff(after world) string {
	var out []string
	for _, part := range []struct {
		name          string
		before, after map[string]string
	}{{"bank", w.Bank, after.Bank}, {"Cinder", w.Cinder, after.Cinder}, {"namespaces", w.Namespaces, after.Namespaces}} {
		for _, k := range slices.Sorted(maps.Keys(part.before)) {
			if a, ok := part.after[k]; !ok {
				out = append(out, fmt.Sprintf("%s: %s gone", part.name, k))
			} else if a != part.before[k] {
				out = append(out, fmt.Sprintf("%s: %s %q -> %q", part.name, k, part.before[k], a))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(part.after)) {
			if _, ok := part.before[k]; !ok {
				out = append(out, fmt.Sprintf("%s: %s new", part.name, k))
			}
		}
	}
	if !slices.Equal(w.PVs, after.PVs) {
		out = append(out, fmt.Sprintf("persistent volumes %v -> %v", w.PVs, after.PVs))
	}
	return strings.Join(out, "\n")
}

// TestForgedEventsChangeNothing: any pod of the cluster can post to the broker. Step
// requests and step results that disagree with the bank (resources outside the batch,
// another volume or namespace, an operation that does not exist or is not in the status
// the step needs, a deleting step for an available checkpoint) are refused with the
// reason, and the bank, Cinder and Kubernetes are as they were. A replayed step request
// is answered from its record and changes nothing either.
func TestForgedEventsChangeNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "forged")
	v := e.cinderVolume(ns+"-data", []byte("data"))
	victim := e.cinderVolume(ns+"-victim", []byte("production"))
	e.podWithVolume(ns, "web", v, true)
	cp, _ := e.protect(ns)
	pod := graph.PodResource(ns, "web")
	vol := graph.Resource{Type: graph.VolumeType, ID: v.ID, Name: ns + "/web-data"}
	other := graph.Resource{Type: graph.VolumeType, ID: victim.ID, Name: ns + "/web-data"}
	system := graph.PodResource("kube-system", "kube-apiserver")

	// A real restore, into a namespace of its own, to forge its steps' events.
	dst := ns + "-dst"
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: dst, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 4*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("restore: %+v", res)
	}
	t.Cleanup(func() { _ = e.kube.CoreV1().Namespaces().Delete(context.Background(), dst, metav1.DeleteOptions{}) })

	bs := e.readBank()
	c, err := bs.Checkpoint(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bs.Restore(context.Background(), rid)
	if err != nil {
		t.Fatal(err)
	}
	step := func(batch string, rs ...graph.Resource) events.StepRequest {
		return events.StepRequest{Checkpoint: cp, Batch: batch, Resources: rs, Deadline: c.Deadline}
	}
	restoreStep := func(batch string, p events.RestoreParameters, rs ...graph.Resource) events.RestoreStepRequest {
		return events.RestoreStepRequest{Restore: rid, Checkpoint: cp, Batch: batch, Resources: rs, Parameters: p, Deadline: r.Deadline}
	}
	toSystem := r.Parameters
	toSystem.Namespace = "kube-system"
	result := func(op, batch, key string) events.StepResult {
		return events.StepResult{Checkpoint: op, Batch: batch, Results: []events.ResourceResult{{Key: key, Status: events.StatusAvailable}}}
	}
	forged := []struct {
		name, typ string
		data      any
		reason    string
	}{
		{"backup of a volume outside the batch", events.VolumeBackup, step("volumes-0000", other), "is not in batch volumes-0000"},
		{"backup with other options", events.VolumeBackup, func() events.StepRequest {
			s := step("volumes-0000", vol)
			s.Parameters = &events.VolumeParameters{BackupMode: "incremental", Container: "elsewhere"}
			return s
		}(), "/parameters"},
		{"backup for a checkpoint that does not exist", events.VolumeBackup, events.StepRequest{Checkpoint: "no-such-checkpoint", Batch: "volumes-0000", Resources: []graph.Resource{other}, Deadline: c.Deadline}, "does not exist"},
		{"snapshot of a kube-system pod", events.MetadataSnapshot, step("pods-0000", system), "is not in batch pods-0000"},
		{"delete of the backups of an available checkpoint", events.BackupDelete, step("volumes-0000", vol), "no deletion of checkpoint " + cp},
		{"restore of another volume", events.VolumeRestore, restoreStep("volumes-0000", r.Parameters, other), "is not in batch volumes-0000"},
		{"restore for a restore that does not exist", events.VolumeRestore, func() events.RestoreStepRequest {
			s := restoreStep("volumes-0000", r.Parameters, vol)
			s.Restore = "no-such-restore"
			return s
		}(), "restore no-such-restore does not exist"},
		{"recreate into kube-system", events.PodRecreate, restoreStep("pods-0000", toSystem, pod), "/parameters"},
		{"recreate on another volume", events.PodRecreate, func() events.RestoreStepRequest {
			s := restoreStep("pods-0000", r.Parameters, pod)
			s.Volumes = map[string]string{v.ID: victim.ID}
			return s
		}(), "/volumes"},
		{"recreate of a restore of another checkpoint", events.PodRecreate, func() events.RestoreStepRequest {
			s := restoreStep("pods-0000", r.Parameters, pod)
			s.Checkpoint = "another-checkpoint"
			return s
		}(), "restores checkpoint " + cp},
		{"result of a checkpoint that does not exist", events.VolumeBackedUp, result("no-such-checkpoint", "volumes-0000", vol.Key()), "does not exist"},
		{"result of a batch that does not exist", events.VolumeBackedUp, result(cp, "volumes-0099", vol.Key()), "has no record of batch volumes-0099"},
		{"result of a deletion that was never asked", events.BackupDeleted, result(cp, "volumes-0000", vol.Key()), "deletion of checkpoint " + cp + " does not exist"},
		{"result of a restore that does not exist", events.PodRecreated, events.RestoreStepResult{Restore: "no-such-restore", Batch: "pods-0000",
			Results: []events.ResourceResult{{Key: pod.Key(), Status: events.StatusAvailable}}}, "restore no-such-restore does not exist"},
	}

	namespaces := []string{ns, dst, "kube-system"}
	before := e.world(cp, []string{v.ID, victim.ID}, namespaces)
	sent := make([]event.Event, len(forged))
	for i, f := range forged {
		sent[i] = newEvent(f.typ, f.data)
		e.send(sent[i])
	}
	for i, f := range forged {
		if reason := e.rejected(sent[i]); !strings.Contains(reason, f.reason) {
			t.Errorf("%s: refused with %q, want a reason containing %q", f.name, reason, f.reason)
		} else {
			t.Logf("%s: %s", f.name, reason)
		}
	}
	// A replay of the checkpoint's own backup request is answered from its record; the
	// checkpoint's end is announced again, and nothing else happens.
	finished := e.count(events.CheckpointFinished)
	e.send(newEvent(events.VolumeBackup, func() events.StepRequest {
		s := step("volumes-0000", vol)
		p := c.Parameters.Volume
		s.Parameters = &p
		return s
	}()))
	e.next(time.Minute, events.CheckpointFinished, finished)
	if d := before.diff(e.world(cp, []string{v.ID, victim.ID}, namespaces)); d != "" {
		t.Fatalf("forged events changed:\n%s", d)
	}
	if res := e.show(cp); res.Status != events.StatusAvailable {
		t.Fatalf("checkpoint is %s after forged events", res.Status)
	}
}
