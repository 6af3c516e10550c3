package choreographer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// The ConfigMaps, Secrets and ServiceAccounts pods reference are protected in batches of
// their own, by snapshot-metadata; a restore creates them alongside the volumes, and its
// pods only once both are done.

// depsGraph is one pod with a Cinder volume (unless made without), a ConfigMap and a
// ServiceAccount.
type depsGraph struct {
	g                *graph.Graph
	pod, vol, cm, sa graph.Resource
}

func newDepsGraph(withVolume bool) depsGraph {
	d := depsGraph{pod: graph.PodResource("shop", "web"), vol: graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "shop/web-data"},
		cm: graph.ObjectResource(graph.ConfigMapType, "shop", "cfg"), sa: graph.ObjectResource(graph.ServiceAccountType, "shop", "app-sa")}
	children := []string{d.cm.Key(), d.sa.Key()}
	nodes := []graph.Node{{Resource: d.cm}, {Resource: d.sa}}
	if withVolume {
		children = append([]string{d.vol.Key()}, children...)
		nodes = append([]graph.Node{{Resource: d.vol}}, nodes...)
	}
	d.g = &graph.Graph{Nodes: append([]graph.Node{{Resource: d.pod, Children: children}}, nodes...)}
	return d
}

// steps drops the progress announcements from es.
func steps(es []event.Event) []event.Event {
	var out []event.Event
	for _, e := range es {
		if e.Type() != events.RestoreProgressed && e.Type() != events.CheckpointProgressed {
			out = append(out, e)
		}
	}
	return out
}

// batchesSent maps each step request among es to its type.
func batchesSent(t *testing.T, es []event.Event) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range es {
		var req struct {
			Batch string `json:"batch"`
		}
		if err := e.DataAs(&req); err != nil {
			t.Fatal(err)
		}
		if req.Batch != "" {
			out[req.Batch] = e.Type()
		}
	}
	return out
}

func sameSent(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: sent %v, want %v", what, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: sent %v, want %v", what, got, want)
		}
	}
}

// protectDeps protects d to the end and returns the checkpoint.
func (w *world) protectDeps(d depsGraph) string {
	w.t.Helper()
	id := w.protect()
	want := map[string]string{"pods-0000": events.MetadataSnapshot, "configmaps-0000": events.MetadataSnapshot, "serviceaccounts-0000": events.MetadataSnapshot}
	if len(d.g.Nodes) == 4 {
		want["volumes-0000"] = events.VolumeBackup
	}
	sameSent(w.t, "fan-out", batchesSent(w.t, w.listed(id, d.g)), want)
	w.result(events.MetadataSnapshotted, id, "configmaps-0000", events.StatusAvailable, d.cm.Key())
	w.result(events.MetadataSnapshotted, id, "serviceaccounts-0000", events.StatusAvailable, d.sa.Key())
	var out []event.Event
	if len(d.g.Nodes) == 4 {
		w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, d.pod.Key())
		out = w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, d.vol.Key())
	} else {
		out = w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, d.pod.Key())
	}
	fin := decode[events.CheckpointFinishedResult](w.t, only(w.t, out, events.CheckpointFinished))
	if fin.Status != events.StatusAvailable || fin.Resources != len(d.g.Nodes) {
		w.t.Fatalf("finished %+v, want available with every node", fin)
	}
	return id
}

func TestProtectSendsTheObjectsPodsReferenceToSnapshotMetadata(t *testing.T) {
	w := newWorld(t)
	d := newDepsGraph(true)
	id := w.protectDeps(d)
	v, err := checkpoint.Load(context.Background(), w.bank, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{graph.ConfigMapType, graph.ServiceAccountType} {
		if c := v.Progress.Resources[typ]; c.Total != 1 || c.Done != 1 {
			t.Errorf("progress of %s: %+v", typ, c)
		}
	}
	if _, listed := v.Progress.Resources[graph.SecretType]; listed {
		t.Errorf("progress lists Secrets the checkpoint does not hold: %+v", v.Progress.Resources)
	}
}

func TestRestoreCreatesDependenciesAlongsideVolumesThenPods(t *testing.T) {
	for _, order := range []string{"volumes last", "dependencies last"} {
		t.Run(order, func(t *testing.T) {
			w := newWorld(t)
			d := newDepsGraph(true)
			cp := w.protectDeps(d)
			rid, out := w.startRestore(cp)
			sameSent(t, "restore's first phases", batchesSent(t, out), map[string]string{
				"volumes-0000": events.VolumeRestore, "configmaps-0000": events.PodRecreate, "serviceaccounts-0000": events.PodRecreate})
			deps := func() []event.Event {
				if out := steps(w.result(events.PodRecreated, rid, "configmaps-0000", events.StatusAvailable, d.cm.Key())); len(out) != 0 {
					t.Fatalf("the ConfigMaps' result sent %v with the ServiceAccounts pending", types(out))
				}
				return w.result(events.PodRecreated, rid, "serviceaccounts-0000", events.StatusAvailable, d.sa.Key())
			}
			volumes := func() []event.Event {
				w.volumeRestored(rid, d.vol, "new-1")
				return w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, d.vol.Key())
			}
			first, last := volumes, deps
			if order == "dependencies last" {
				first, last = deps, volumes
			}
			if out := steps(first()); len(out) != 0 {
				t.Fatalf("pods started before every first phase ended: %v", types(out))
			}
			if req := decode[events.RestoreStepRequest](t, only(t, last(), events.PodRecreate)); req.Batch != "pods-0000" {
				t.Fatalf("pod phase %+v", req)
			}
			// A duplicate of a dependency's result starts nothing more.
			if out := steps(w.result(events.PodRecreated, rid, "configmaps-0000", events.StatusAvailable, d.cm.Key())); len(out) != 0 {
				t.Fatalf("a duplicate result sent %v", types(out))
			}
			fin := decode[events.RestoreFinishedResult](t, only(t, w.result(events.PodRecreated, rid, "pods-0000", events.StatusAvailable, d.pod.Key()), events.RestoreFinished))
			if fin.Status != events.RestoreSuccess {
				t.Fatalf("finished %+v", fin)
			}
		})
	}
}

func TestRestoreOfPodsWithoutVolumesStartsWithTheirDependencies(t *testing.T) {
	w := newWorld(t)
	d := newDepsGraph(false)
	cp := w.protectDeps(d)
	rid, out := w.startRestore(cp)
	sameSent(t, "first phases", batchesSent(t, out), map[string]string{"configmaps-0000": events.PodRecreate, "serviceaccounts-0000": events.PodRecreate})
	// The ServiceAccounts' request is lost; the tick sends it again, once.
	w.result(events.PodRecreated, rid, "configmaps-0000", events.StatusAvailable, d.cm.Key())
	w.advance(testConfig.RedriveAfter + time.Second)
	sameSent(t, "tick", batchesSent(t, w.tick()), map[string]string{"serviceaccounts-0000": events.PodRecreate})
	if out := w.tick(); len(out) != 0 {
		t.Fatalf("a second tick at once sent %v", types(out))
	}
	only(t, w.result(events.PodRecreated, rid, "serviceaccounts-0000", events.StatusAvailable, d.sa.Key()), events.PodRecreate)
	w.restoreStatus(rid, events.RestoreInProgress)
}

func TestTickFailsARestoreStuckInItsDependencyPhase(t *testing.T) {
	w := newWorld(t)
	d := newDepsGraph(true)
	cp := w.protectDeps(d)
	rid, _ := w.startRestore(cp)
	w.volumeRestored(rid, d.vol, "new-1")
	w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, d.vol.Key())
	w.result(events.PodRecreated, rid, "configmaps-0000", events.StatusError, d.cm.Key())
	w.advance(testConfig.RestoreTimeout + 2*testConfig.RedriveAfter + time.Second)
	fin := decode[events.RestoreFinishedResult](t, only(t, w.tick(), events.RestoreFinished))
	failed := failures(t, w.bank.Restores(), rid)
	if fin.Status != events.RestoreFail || len(failed) != 3 || failed[d.cm.Key()] != "failed by the test" ||
		!strings.Contains(failed[d.sa.Key()], "deadline") || !strings.Contains(failed[d.pod.Key()], "deadline") {
		t.Fatalf("finished %+v, failures %v", fin, failed)
	}
	// The ServiceAccounts' result, late, does not start the pods.
	w.result(events.PodRecreated, rid, "serviceaccounts-0000", events.StatusAvailable, d.sa.Key())
	if out, err := w.bank.Restores().FannedOut(context.Background(), rid, phasePods); err != nil || out {
		t.Fatalf("pod phase of an ended restore fanned out: %v", err)
	}
	w.restoreStatus(rid, events.RestoreFail)
}
