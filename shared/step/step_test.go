package step

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

var (
	pod    = graph.PodResource("shop", "web")
	vol    = graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "shop/data"}
	volume = Kind{Step: "test-volume-step", Types: []string{graph.VolumeType}, Reply: events.VolumeBackedUp}
	pods   = Kind{Step: "test-pod-step", Types: []string{graph.PodType}, Reply: events.PodRecreated}
)

func testGraph() *graph.Graph {
	return &graph.Graph{Nodes: []graph.Node{{Resource: pod, Children: []string{vol.Key()}}, {Resource: vol}}}
}

func ev(t *testing.T, data any) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType("test")
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	return e
}

// counting is Work that records every resource available and counts its calls.
type counting struct{ calls int }

func (c *counting) work(_ context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
	c.calls++
	out := map[string]bank.ResourceRecord{}
	for _, r := range j.Batch.Resources {
		out[r.Key()] = bank.ResourceRecord{Status: events.StatusAvailable}
	}
	return out, true, nil
}

func refused(t *testing.T, name string, out *event.Event, err error, want string) {
	t.Helper()
	if out != nil || !function.IsPermanent(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v %v, want a permanent error containing %q", name, out, err, want)
	}
}

func TestProtectRefusesWhatTheCheckpointDoesNotRecord(t *testing.T) {
	b := banktest.New(t, nil)
	bs := banktest.Protecting(t, b, bank.Checkpoint{ID: "cp", Parameters: events.Parameters{Volume: events.VolumeParameters{BackupMode: "full"}}}, testGraph())
	r := New(b, time.Now)
	c := &counting{}
	good := banktest.Request(bs, "volumes-0000")
	cases := map[string]struct {
		change func(*events.StepRequest)
		want   string
	}{
		"unknown checkpoint": {func(q *events.StepRequest) { q.Checkpoint = "other" }, "checkpoint other does not exist"},
		"unknown batch":      {func(q *events.StepRequest) { q.Batch = "volumes-0007" }, "has no batch volumes-0007"},
		"pod batch":          {func(q *events.StepRequest) { q.Batch = "pods-0000" }, "holds OS::Kubernetes::Pod"},
		"other volume": {func(q *events.StepRequest) {
			q.Resources = []graph.Resource{{Type: graph.VolumeType, ID: "prod", Name: "shop/data"}}
		}, "/resources/0"},
		"extra volume":   {func(q *events.StepRequest) { q.Resources = append(q.Resources, q.Resources[0]) }, "/resources"},
		"other options":  {func(q *events.StepRequest) { q.Parameters = &events.VolumeParameters{BackupMode: "incremental"} }, "/parameters"},
		"other deadline": {func(q *events.StepRequest) { q.Deadline = q.Deadline.Add(time.Hour) }, "/deadline"},
	}
	for name, tc := range cases {
		req := good
		req.Resources = append([]graph.Resource(nil), good.Resources...)
		tc.change(&req)
		out, err := r.Protect(context.Background(), ev(t, req), volume, c.work)
		refused(t, name, out, err, tc.want)
	}
	// A checkpoint that is not protecting takes no new work...
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusAvailable)
	out, err := r.Protect(context.Background(), ev(t, good), volume, c.work)
	refused(t, "available checkpoint", out, err, "is available")
	if c.calls != 0 {
		t.Fatalf("work done %d times for refused requests", c.calls)
	}
	// ...but a batch it recorded is answered from the record.
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusProtecting)
	if out, err := r.Protect(context.Background(), ev(t, good), volume, c.work); err != nil || out == nil {
		t.Fatalf("good request: %v %v", out, err)
	}
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusAvailable)
	out, err = r.Protect(context.Background(), ev(t, good), volume, c.work)
	if err != nil || out == nil || c.calls != 1 {
		t.Fatalf("late duplicate: %v %v, %d calls", out, err, c.calls)
	}
	var res events.StepResult
	if err := out.DataAs(&res); err != nil || len(res.Results) != 1 || res.Results[0].Key != vol.Key() || res.Results[0].Status != events.StatusAvailable {
		t.Fatalf("late duplicate answered %+v %v", res, err)
	}
}

func TestDeleteNeedsARecordedDeletion(t *testing.T) {
	b := banktest.New(t, nil)
	bs := banktest.Protecting(t, b, bank.Checkpoint{ID: "cp"}, testGraph())
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusAvailable)
	r := New(b, time.Now)
	c := &counting{}
	req := banktest.Request(bs, "volumes-0000")
	req.Parameters = nil
	out, err := r.Delete(context.Background(), ev(t, req), volume, c.work)
	refused(t, "no deletion", out, err, "no deletion of checkpoint cp")
	deadline := time.Now().Add(time.Hour).UTC()
	banktest.Deleting(t, b, "cp", deadline)
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusAvailable) // the deletion says deleting, the checkpoint not
	req.Deadline = deadline
	out, err = r.Delete(context.Background(), ev(t, req), volume, c.work)
	refused(t, "available checkpoint", out, err, "checkpoint cp is available")
	if c.calls != 0 {
		t.Fatalf("work done %d times for refused requests", c.calls)
	}
	banktest.SetStatus(t, b.Checkpoints(), "cp", events.StatusDeleting)
	if out, err := r.Delete(context.Background(), ev(t, req), volume, c.work); err != nil || out == nil || c.calls != 1 {
		t.Fatalf("good request: %v %v", out, err)
	}
	if _, err := b.Deletions().Record(context.Background(), "cp", "volumes-0000"); err != nil {
		t.Fatalf("the outcome is recorded in the deletion: %v", err)
	}
}

func TestRestorePodsWaitForTheirVolumes(t *testing.T) {
	b := banktest.New(t, nil)
	bs, rs := banktest.Restoring(t, b, bank.Checkpoint{ID: "cp"}, testGraph(), bank.Restore{ID: "r1", Parameters: events.RestoreParameters{Namespace: "shop-dr"}})
	r := New(b, time.Now)
	var got *Job
	work := func(_ context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
		got = j
		return map[string]bank.ResourceRecord{pod.Key(): {Status: events.StatusAvailable}}, true, nil
	}
	req := banktest.RestoreRequest(bs, rs, "pods-0000")
	out, err := r.Restore(context.Background(), ev(t, req), pods, work)
	refused(t, "volumes not recorded", out, err, "batch volumes-0000 of restore r1 is not recorded")
	rv := `{"original_volume_id":"vol-1","volume_id":"new-1","backup_id":"b"}`
	if err := b.Restores().PutRecord(context.Background(), "r1", bank.Record{Batch: "volumes-0000",
		Resources: map[string]bank.ResourceRecord{vol.Key(): {Status: events.StatusAvailable, Data: []byte(rv)}}}); err != nil {
		t.Fatal(err)
	}
	other := req
	other.Parameters.Namespace = "kube-system"
	out, err = r.Restore(context.Background(), ev(t, other), pods, work)
	refused(t, "other namespace", out, err, "/parameters")
	forged := req
	forged.Volumes = map[string]string{"vol-1": "production"}
	out, err = r.Restore(context.Background(), ev(t, forged), pods, work)
	refused(t, "other volumes", out, err, "/volumes")
	if got != nil {
		t.Fatal("work done for a refused request")
	}
	if out, err := r.Restore(context.Background(), ev(t, req), pods, work); err != nil || out == nil {
		t.Fatalf("good request: %v %v", out, err)
	}
	if got.Volumes["vol-1"] != "new-1" || got.Restore.Parameters.Namespace != "shop-dr" || got.Saved == nil {
		t.Fatalf("job %+v", got)
	}
	// A restore that ended takes no new work.
	r2, err := b.CreateRestore(context.Background(), bank.Restore{ID: "r2", Checkpoint: "cp", CreatedAt: rs.CreatedAt, Deadline: rs.Deadline})
	if err != nil {
		t.Fatal(err)
	}
	banktest.SetStatus(t, b.Restores(), "r2", events.RestoreFail)
	out, err = r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, r2, "volumes-0000")), volume, work)
	refused(t, "ended restore", out, err, "restore r2 is fail")
}

func TestRestorePodsWaitForTheObjectsTheyReference(t *testing.T) {
	b := banktest.New(t, nil)
	cm := graph.ObjectResource(graph.ConfigMapType, "shop", "cfg")
	sa := graph.ObjectResource(graph.ServiceAccountType, "shop", "app")
	g := &graph.Graph{Nodes: []graph.Node{{Resource: pod, Children: []string{cm.Key(), sa.Key()}}, {Resource: cm}, {Resource: sa}}}
	bs, rs := banktest.Restoring(t, b, bank.Checkpoint{ID: "cp"}, g, bank.Restore{ID: "r1"})
	both := Kind{Step: "test-pod-step", Types: append([]string{graph.PodType}, graph.DependencyTypes()...), Reply: events.PodRecreated}
	r := New(b, time.Now)
	var got *Job
	work := func(_ context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
		got = j
		out := map[string]bank.ResourceRecord{}
		for _, res := range j.Batch.Resources {
			out[res.Key()] = bank.ResourceRecord{Status: events.StatusAvailable}
		}
		return out, true, nil
	}
	out, err := r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "pods-0000")), both, work)
	refused(t, "objects not recorded", out, err, "batch configmaps-0000 of restore r1 is not recorded")
	// The ConfigMaps' batch is a step of its own, of the same kind.
	if out, err := r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "configmaps-0000")), both, work); err != nil || out == nil {
		t.Fatalf("configmaps: %v %v", out, err)
	}
	if got.Batch.Type != graph.ConfigMapType || got.Dependencies != nil || got.Saved == nil {
		t.Fatalf("job of the configmaps %+v", got)
	}
	out, err = r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "pods-0000")), both, work)
	refused(t, "service accounts not recorded", out, err, "batch serviceaccounts-0000 of restore r1 is not recorded")
	if err := b.Restores().PutRecord(context.Background(), "r1", bank.Record{Batch: "serviceaccounts-0000",
		Resources: map[string]bank.ResourceRecord{sa.Key(): {Status: events.StatusError, Reason: "refused"}}}); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "pods-0000")), both, work); err != nil || out == nil {
		t.Fatalf("pods: %v %v", out, err)
	}
	deps := got.Dependencies[pod.Key()]
	if len(deps) != 2 || deps[cm.Key()].Status != events.StatusAvailable || deps[sa.Key()].Reason != "refused" || len(got.Volumes) != 0 {
		t.Fatalf("dependencies of the pod %+v", got.Dependencies)
	}
	out, err = r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "secrets-0000")), both, work)
	refused(t, "a batch the checkpoint does not have", out, err, "checkpoint cp has no batch secrets-0000")
	out, err = r.Restore(context.Background(), ev(t, banktest.RestoreRequest(bs, rs, "configmaps-0000")), pods, work)
	refused(t, "a step that does not take the type", out, err, "test-pod-step works on "+graph.PodType)
}

// TestARacingDuplicateCountsNothing: when a duplicate of the request settles the batch
// while this one works, this one's record is not written over and what it would have
// counted (WhenRecorded) is not counted; it answers with the duplicate's record. The
// request that writes the record counts.
func TestARacingDuplicateCountsNothing(t *testing.T) {
	b := banktest.New(t, nil)
	bs := banktest.Protecting(t, b, bank.Checkpoint{ID: "cp"}, testGraph())
	r := New(b, time.Now)
	req := banktest.Request(bs, "volumes-0000")
	counted := 0
	racing := func(ctx context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
		j.WhenRecorded(func() { counted++ })
		// The duplicate writes its record first, with its own outcome.
		dup := bank.Record{Batch: j.Batch.Name, UpdatedAt: time.Now().UTC(),
			Resources: map[string]bank.ResourceRecord{vol.Key(): {Status: events.StatusError, Reason: "settled by the duplicate"}}}
		if err := b.Checkpoints().PutRecord(ctx, "cp", dup); err != nil {
			return nil, false, err
		}
		return map[string]bank.ResourceRecord{vol.Key(): {Status: events.StatusAvailable}}, true, nil
	}
	out, err := r.Protect(context.Background(), ev(t, req), volume, racing)
	if err != nil || out == nil {
		t.Fatalf("racing request: %v %v", out, err)
	}
	var res events.StepResult
	if err := out.DataAs(&res); err != nil || len(res.Results) != 1 || res.Results[0].Reason != "settled by the duplicate" {
		t.Fatalf("answered %+v %v, want the duplicate's record", res, err)
	}
	if counted != 0 {
		t.Fatalf("counted %d times, want 0: the duplicate settled the batch", counted)
	}
	rec, err := b.Checkpoints().Record(context.Background(), "cp", "volumes-0000")
	if err != nil || rec.Resources[vol.Key()].Reason != "settled by the duplicate" {
		t.Fatalf("record %+v %v, want the duplicate's kept", rec, err)
	}

	// The request that settles a batch counts once.
	bs2 := banktest.Protecting(t, b, bank.Checkpoint{ID: "cp2"}, testGraph())
	settles := func(_ context.Context, j *Job) (map[string]bank.ResourceRecord, bool, error) {
		j.WhenRecorded(func() { counted++ })
		return map[string]bank.ResourceRecord{vol.Key(): {Status: events.StatusAvailable}}, true, nil
	}
	if out, err := r.Protect(context.Background(), ev(t, banktest.Request(bs2, "volumes-0000")), volume, settles); err != nil || out == nil || counted != 1 {
		t.Fatalf("settling request: %v %v, counted %d", out, err, counted)
	}
}
