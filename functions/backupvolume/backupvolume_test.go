package backupvolume

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

type memRecords struct{ m map[string]bank.Record }

func (r *memRecords) Record(_ context.Context, cp, batch string) (*bank.Record, error) {
	rec, ok := r.m[cp+batch]
	if !ok {
		return nil, fmt.Errorf("record: %w", bank.ErrNotFound)
	}
	return &rec, nil
}
func (r *memRecords) PutRecord(_ context.Context, cp string, rec bank.Record) error {
	r.m[cp+rec.Batch] = rec
	return nil
}

func backup(t *testing.T, s *Step, cp string, vols []graph.Resource, mode string) events.StepResult {
	t.Helper()
	e := event.New()
	e.SetID(cp)
	e.SetSource("test")
	e.SetType(events.VolumeBackup)
	_ = e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: cp, Batch: "volumes-0000", Resources: vols,
		Parameters: &events.VolumeParameters{BackupMode: mode}, Deadline: time.Now().Add(time.Hour)})
	out, err := s.Handle(context.Background(), e)
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
	recs := &memRecords{m: map[string]bank.Record{}}
	s := NewStep(c, recs, time.Now)
	vol := graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "ns/data"}
	info := func(cp string) checkpoint.VolumeInfo {
		var i checkpoint.VolumeInfo
		if err := json.Unmarshal(recs.m[cp+"volumes-0000"].Resources[vol.Key()].Data, &i); err != nil {
			t.Fatal(err)
		}
		return i
	}
	if r := backup(t, s, "cp1", []graph.Resource{vol}, "incremental"); r.Results[0].Status != events.StatusAvailable {
		t.Fatalf("first: %+v", r)
	}
	if i := info("cp1"); i.Mode != "full" || i.Note == "" {
		t.Fatalf("first backup of a volume must be full, and say so: %+v", i)
	}
	backup(t, s, "cp2", []graph.Resource{vol}, "incremental")
	if i := info("cp2"); i.Mode != "incremental" || i.Note != "" {
		t.Fatalf("second backup: %+v", i)
	}
	// A redelivered request finds the work done: no third backup.
	backup(t, s, "cp2", []graph.Resource{vol}, "incremental")
	if c.Count() != 2 {
		t.Fatalf("%d backups, want 2", c.Count())
	}
}

func TestMissingVolumeFailsItsResourceOnly(t *testing.T) {
	c := NewInstantCinder()
	c.Missing["gone"] = true
	s := NewStep(c, &memRecords{m: map[string]bank.Record{}}, time.Now)
	r := backup(t, s, "cp", []graph.Resource{{Type: graph.VolumeType, ID: "gone"}, {Type: graph.VolumeType, ID: "ok"}}, "full")
	if r.Results[0].Status != events.StatusError || r.Results[0].Reason != "Cinder volume gone does not exist" || r.Results[1].Status != events.StatusAvailable {
		t.Fatalf("%+v", r)
	}
}

func TestBusyVolumeIsCheckedAgain(t *testing.T) {
	c := NewInstantCinder()
	c.Busy["vol-1"] = 1 // a racing delivery's backup call is still in Cinder
	s := NewStep(c, &memRecords{m: map[string]bank.Record{}}, time.Now)
	vol := graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "ns/data"}
	e := event.New()
	e.SetID("cp")
	e.SetSource("test")
	e.SetType(events.VolumeBackup)
	_ = e.SetData(event.ApplicationJSON, events.StepRequest{Checkpoint: "cp", Batch: "volumes-0000", Resources: []graph.Resource{vol},
		Parameters: &events.VolumeParameters{}, Deadline: time.Now().Add(time.Hour)})
	if out, err := s.Handle(context.Background(), e); err != nil || out != nil || c.Count() != 0 {
		t.Fatalf("a busy volume is in progress (no result yet): %v %v, %d backups", out, err, c.Count())
	}
	if r := backup(t, s, "cp", []graph.Resource{vol}, "full"); r.Results[0].Status != events.StatusAvailable || c.Count() != 1 {
		t.Fatalf("checked again: %+v, %d backups", r.Results[0], c.Count())
	}
}
