package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/seal"
)

// twice delivers every request to a function two times, as an at-least-once broker may,
// and answers with the second response.
func twice(_ string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		first := r.Clone(r.Context())
		first.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(discard{header: http.Header{}}, first)
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
}

type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

func (e *env) readBank() *bank.Bank {
	b, err := bank.Open(context.Background(), e.st.Bank(e.bankAuth, e.bank), e.st.OpenStack())
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// keys is the keyring the runner's snapshot-metadata and recreate-pod seal with.
func (e *env) keys() *seal.Keyring {
	e.t.Helper()
	k, err := seal.Load(e.runner.BankKeys)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) show(id string) *checkpoint.View {
	e.t.Helper()
	resp, err := e.runner.Read(context.Background(), "/api/checkpoints/"+id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("show %s: %d %s", id, resp.StatusCode, b)
	}
	var v checkpoint.View
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		e.t.Fatal(err)
	}
	return &v
}

// TestProtectTwoPodsWithCinderVolumes protects two pods, one with a CSI and one with an
// in-tree Cinder volume, with one event, while every event is delivered twice.
func TestProtectTwoPodsWithCinderVolumes(t *testing.T) {
	e := newEnv(t, envOptions{wrap: twice})
	ns := e.st.Namespace(t, e.kube, "protect")
	vols := map[string]string{}
	for i, name := range []string{"web", "db"} {
		v := e.cinderVolume(ns+"-"+name, []byte("podguard data of "+name))
		e.podWithVolume(ns, name, v, i == 0)
		vols[name] = v.ID
	}
	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Name: "two pods", Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Description: "e2e", Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	start := time.Now()
	e.send(ev)
	e.send(ev) // the user's system retries too: still one checkpoint
	res := e.finished(id, 4*time.Minute)
	t.Logf("protected 2 pods with 1 GiB volumes in %s", time.Since(start).Round(100*time.Millisecond))
	if res.Status != events.StatusAvailable || res.Resources != 4 || len(res.Failed) != 0 {
		t.Fatalf("finished %+v", res)
	}

	v := e.show(id)
	if v.Status != events.StatusAvailable || v.Plan.ID != req.Plan.ID || len(v.Resources) != 4 || v.History[0].Status != events.StatusProtecting {
		t.Fatalf("view %+v", v)
	}
	for _, r := range v.Resources {
		if r.Status != events.StatusAvailable {
			t.Errorf("%s is %s", r.Key(), r.Status)
		}
	}
	b := e.readBank()
	ctx := context.Background()
	for name, volID := range vols {
		// One backup per volume, although every event arrived at least twice.
		bs := e.liveBackups(volID)
		if len(bs) != 1 || bs[0].Metadata[backupvolume.MetaCheckpoint] != id || bs[0].Status != "available" {
			t.Fatalf("backups of %s: %+v", name, bs)
		}
		rec, err := checkpoint.Saved(ctx, b, id, graph.Resource{Type: graph.VolumeType, ID: volID}.Key())
		if err != nil {
			t.Fatal(err)
		}
		var info checkpoint.VolumeInfo
		if err := json.Unmarshal(rec.Data, &info); err != nil || info.BackupID != bs[0].ID || info.Mode != "full" {
			t.Fatalf("record of %s: %+v %v", name, info, err)
		}
		pi, err := checkpoint.SavedPod(ctx, b, e.keys(), id, graph.PodResource(ns, name).Key())
		if err != nil || pi.Pod.Name != name || len(pi.Claims) != 1 || len(pi.Volumes) != 1 || pi.Pod.Spec.NodeName != "" {
			t.Fatalf("saved pod %s: %+v %v", name, pi, err)
		}
	}

	// Listed by plan, newest first.
	resp, err := e.runner.Read(context.Background(), "/api/checkpoints?plan="+req.Plan.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Checkpoints []checkpoint.Summary `json:"checkpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Checkpoints) != 1 || list.Checkpoints[0].ID != id {
		t.Fatalf("list: %+v %v", list, err)
	}
	// The same answers as events with a reply, asked of the front door.
	for _, q := range []struct {
		typ, reply string
		data       any
		want       string
	}{
		{events.CheckpointShow, events.CheckpointShown, map[string]string{"checkpoint": id}, `"status":"available"`},
		{events.CheckpointsList, events.CheckpointsListed, map[string]string{"plan": req.Plan.ID}, id},
		{events.ProviderShow, events.ProviderShown, map[string]any{}, "OS::Cinder::Volume"},
	} {
		code, reply, res := e.ask(newEvent(q.typ, q.data), "")
		if code != http.StatusOK || reply == nil || reply.Type() != q.reply || !strings.Contains(string(reply.Data()), q.want) {
			t.Fatalf("%s: %s, reply %v", q.typ, res, reply)
		}
	}
	if n := e.count(events.CheckpointFinished); n < 1 {
		t.Fatalf("%d finished events", n)
	}
}

// TestProtectFailuresEndInError: a volume that does not exist, and a Cinder backup that
// ends in error (its volume's data vanished behind Cinder's back), fail their resources
// with reasons; the other resources are protected.
func TestProtectFailuresEndInError(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "failures")
	good := e.cinderVolume(ns+"-good", []byte("good"))
	e.podWithVolume(ns, "good", good, true)
	e.podWithVolume(ns, "ghost", &volumes.Volume{ID: "00000000-0000-4000-8000-00000000dead"}, true)
	broken := e.cinderVolume(ns+"-broken", nil)
	e.podWithVolume(ns, "broken", broken, true)
	// The backup driver will find nothing to read: Cinder ends the backup in error.
	if err := os.Remove(filepath.Join(e.st.Env["PODGUARD_CINDER_EXPORT"], "volume-"+broken.ID)); err != nil {
		t.Fatal(err)
	}

	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	res := e.finished(id, 4*time.Minute)
	if res.Status != events.StatusError || res.Resources != 6 || len(res.Failed) != 2 {
		t.Fatalf("finished %+v", res)
	}
	reasons := map[string]string{}
	for _, f := range res.Failed {
		reasons[f.Key] = f.Reason
	}
	ghost := graph.Resource{Type: graph.VolumeType, ID: "00000000-0000-4000-8000-00000000dead"}.Key()
	if reasons[ghost] != "Cinder volume 00000000-0000-4000-8000-00000000dead does not exist" {
		t.Errorf("ghost volume: %q", reasons[ghost])
	}
	if r := reasons[graph.Resource{Type: graph.VolumeType, ID: broken.ID}.Key()]; r == "" {
		t.Errorf("broken volume has no reason: %v", reasons)
	} else {
		t.Logf("broken volume: %s", r)
	}
	v := e.show(id)
	status := map[string]string{}
	for _, r := range v.Resources {
		status[r.Name] = r.Status
	}
	if status[ns+":good"] != events.StatusAvailable || status[ns+"/good-data"] != events.StatusAvailable || status[ns+"/ghost-data"] != events.StatusError {
		t.Fatalf("resource statuses %v", status)
	}
}

// liveBackups lists a volume's backups that are not being deleted.
func (e *env) liveBackups(volumeID string) []backups.Backup {
	e.t.Helper()
	all, err := e.backups.List(context.Background(), volumeID)
	if err != nil {
		e.t.Fatal(err)
	}
	var live []backups.Backup
	for _, b := range all {
		if b.Status != backups.StatusDeleting && b.Status != backups.StatusDeleted {
			live = append(live, b)
		}
	}
	return live
}
