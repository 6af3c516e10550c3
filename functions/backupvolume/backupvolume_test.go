package backupvolume

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

// protecting stores a checkpoint being protected whose graph holds vols, backed up in mode.
func protecting(t *testing.T, b *bank.Bank, id string, mode string, vols ...graph.Resource) *bank.Batches {
	t.Helper()
	g := &graph.Graph{}
	for _, v := range vols {
		g.Nodes = append(g.Nodes, graph.Node{Resource: v})
	}
	return banktest.Protecting(t, b, bank.Checkpoint{ID: id, Parameters: events.Parameters{Volume: events.VolumeParameters{BackupMode: mode}}}, g)
}

func request(t *testing.T, data any) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("req")
	e.SetSource("test")
	e.SetType(events.VolumeBackup)
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	return e
}

func backup(t *testing.T, s *Step, bs *bank.Batches) events.StepResult {
	t.Helper()
	out, err := s.Handle(context.Background(), request(t, banktest.Request(bs, "volumes-0000")))
	if err != nil || out == nil {
		t.Fatalf("handle: %v %v", out, err)
	}
	var r events.StepResult
	if err := out.DataAs(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestIncrementalFallsBackToFullAndSaysSo(t *testing.T) {
	c := NewInstantCinder()
	b := banktest.New(t, nil)
	s := NewStep(c, b, time.Now)
	vol := graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "ns/data"}
	info := func(cp string) checkpoint.VolumeInfo {
		rec, err := b.Checkpoints().Record(context.Background(), cp, "volumes-0000")
		if err != nil {
			t.Fatal(err)
		}
		var i checkpoint.VolumeInfo
		if err := json.Unmarshal(rec.Resources[vol.Key()].Data, &i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	if r := backup(t, s, protecting(t, b, "cp1", "incremental", vol)); r.Results[0].Status != events.StatusAvailable {
		t.Fatalf("first: %+v", r)
	}
	if i := info("cp1"); i.Mode != "full" || i.Note == "" {
		t.Fatalf("first backup of a volume must be full, and say so: %+v", i)
	}
	cp2 := protecting(t, b, "cp2", "incremental", vol)
	backup(t, s, cp2)
	if i := info("cp2"); i.Mode != "incremental" || i.Note != "" {
		t.Fatalf("second backup: %+v", i)
	}
	// A redelivered request finds the work done: no third backup.
	backup(t, s, cp2)
	if c.Count() != 2 {
		t.Fatalf("%d backups, want 2", c.Count())
	}
}

func TestMissingVolumeFailsItsResourceOnly(t *testing.T) {
	c := NewInstantCinder()
	c.Missing["gone"] = true
	b := banktest.New(t, nil)
	s := NewStep(c, b, time.Now)
	r := backup(t, s, protecting(t, b, "cp", "full", graph.Resource{Type: graph.VolumeType, ID: "gone"}, graph.Resource{Type: graph.VolumeType, ID: "ok"}))
	if r.Results[0].Status != events.StatusError || r.Results[0].Reason != "Cinder volume gone does not exist" || r.Results[1].Status != events.StatusAvailable {
		t.Fatalf("%+v", r)
	}
}

func TestBusyVolumeIsCheckedAgain(t *testing.T) {
	c := NewInstantCinder()
	c.Busy["vol-1"] = 1 // a racing delivery's backup call is still in Cinder
	b := banktest.New(t, nil)
	s := NewStep(c, b, time.Now)
	bs := protecting(t, b, "cp", "full", graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "ns/data"})
	if out, err := s.Handle(context.Background(), request(t, banktest.Request(bs, "volumes-0000"))); err != nil || out != nil || c.Count() != 0 {
		t.Fatalf("a busy volume is in progress (no result yet): %v %v, %d backups", out, err, c.Count())
	}
	if r := backup(t, s, bs); r.Results[0].Status != events.StatusAvailable || c.Count() != 1 {
		t.Fatalf("checked again: %+v, %d backups", r.Results[0], c.Count())
	}
}

// The step backs up only what the checkpoint records, with its options: a request naming
// another volume, or other options, starts no backup.
func TestForgedRequestStartsNoBackup(t *testing.T) {
	c := NewInstantCinder()
	b := banktest.New(t, nil)
	s := NewStep(c, b, time.Now)
	bs := protecting(t, b, "cp", "full", graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "ns/data"})
	other := banktest.Request(bs, "volumes-0000")
	other.Resources = []graph.Resource{{Type: graph.VolumeType, ID: "production", Name: "ns/data"}}
	incremental := banktest.Request(bs, "volumes-0000")
	incremental.Parameters = &events.VolumeParameters{BackupMode: "incremental", Container: "elsewhere"}
	for name, req := range map[string]events.StepRequest{"other volume": other, "other options": incremental} {
		if _, err := s.Handle(context.Background(), request(t, req)); !function.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	if c.Count() != 0 {
		t.Fatalf("%d backups started", c.Count())
	}
}
