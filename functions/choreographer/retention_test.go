package choreographer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

var retentionNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// cp is a checkpoint of a plan made age ago, with the backups of its volumes ("v1:full").
func cp(id, status string, age time.Duration, backups ...string) planCheckpoint {
	c := planCheckpoint{ID: id, Status: status, CreatedAt: retentionNow.Add(-age)}
	for _, b := range backups {
		v, mode, _ := strings.Cut(b, ":")
		if c.Backups == nil {
			c.Backups = map[string]string{}
		}
		c.Backups[v] = mode
		c.Incremental = c.Incremental || mode == "incremental"
	}
	return c
}

const day = 24 * time.Hour

func TestDecide(t *testing.T) {
	avail := events.StatusAvailable
	restoring := func(c planCheckpoint) planCheckpoint { c.Restoring = true; return c }
	protectingIncremental := cp("p", events.StatusProtecting, 0)
	protectingIncremental.Incremental = true
	for _, c := range []struct {
		name   string
		policy events.Retention
		cps    []planCheckpoint
		want   string // decision of each checkpoint, newest first: "id=decision ..."
		reason map[string]string
	}{
		{name: "max_backups only", policy: events.Retention{MaxBackups: 2},
			cps:    []planCheckpoint{cp("e", avail, 1*time.Hour), cp("d", avail, 2*time.Hour), cp("c", avail, 3*time.Hour), cp("b", avail, 4*time.Hour), cp("a", avail, 400*day)},
			want:   "e=kept d=kept c=deleted b=deleted a=deleted",
			reason: map[string]string{"d": "newest available checkpoint 2 of max_backups 2", "c": "beyond the newest 2 available checkpoints (max_backups)"}},
		{name: "retention_duration only", policy: events.Retention{RetentionDuration: 7},
			cps:    []planCheckpoint{cp("d", avail, 1*day), cp("c", avail, 7*day-time.Minute), cp("b", avail, 7*day+time.Minute), cp("a", avail, 30*day)},
			want:   "d=kept c=kept b=deleted a=deleted",
			reason: map[string]string{"c": "younger than retention_duration 7 days", "b": "older than 7 days (retention_duration)"}},
		{name: "both: the count rule deletes", policy: events.Retention{MaxBackups: 3, RetentionDuration: 7},
			cps:    []planCheckpoint{cp("e", avail, 1*day), cp("d", avail, 2*day), cp("c", avail, 3*day), cp("b", avail, 4*day), cp("a", avail, 10*day)},
			want:   "e=kept d=kept c=kept b=deleted a=deleted",
			reason: map[string]string{"b": "beyond the newest 3", "a": "beyond the newest 3 available checkpoints (max_backups) and older than 7 days"}},
		{name: "both: the newest max_backups stay whatever their age", policy: events.Retention{MaxBackups: 5, RetentionDuration: 3},
			cps:    []planCheckpoint{cp("e", avail, 1*day), cp("d", avail, 2*day), cp("c", avail, 3*day-time.Hour), cp("b", avail, 4*day), cp("a", avail, 10*day)},
			want:   "e=kept d=kept c=kept b=kept a=kept",
			reason: map[string]string{"b": "newest available checkpoint 4, kept whatever its age (the newest 5 available checkpoints always stay)"}},
		{name: "retention_duration only: the newest available stays whatever its age", policy: events.Retention{RetentionDuration: 7},
			cps:    []planCheckpoint{cp("e2", events.StatusError, 1*day), cp("e1", events.StatusError, 2*day), cp("b", avail, 10*day), cp("a", avail, 20*day)},
			want:   "e2=ignored e1=ignored b=kept a=deleted",
			reason: map[string]string{"b": "kept whatever its age (the newest 1 available checkpoints always stay)", "a": "older than 7 days"}},
		{name: "protects failing: error checkpoints do not count toward max_backups", policy: events.Retention{MaxBackups: 2},
			cps: []planCheckpoint{cp("e3", events.StatusError, 1*time.Hour), cp("e2", events.StatusError, 2*time.Hour), cp("e1", events.StatusError, 3*time.Hour),
				cp("b", avail, 4*time.Hour), cp("a", avail, 5*time.Hour), cp("old", avail, 6*time.Hour)},
			want: "e3=ignored e2=ignored e1=ignored b=kept a=kept old=deleted"},
		{name: "no limit", policy: events.Retention{},
			cps:  []planCheckpoint{cp("b", avail, 1*day), cp("a", avail, 1000*day)},
			want: "b=kept a=kept"},
		{name: "full, incr, incr with max_backups 1 keeps the chain", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("i2", avail, 1*time.Hour, "v:incremental"), cp("i1", avail, 2*time.Hour, "v:incremental"), cp("f", avail, 3*time.Hour, "v:full")},
			want: "i2=kept i1=kept f=kept",
			reason: map[string]string{"i1": "kept while checkpoint i2, which depends on its backups, stays",
				"f": "kept while checkpoint i1, which depends on its backups, stays"}},
		{name: "a new full backup: the chain goes newest first", policy: events.Retention{MaxBackups: 1},
			cps:    []planCheckpoint{cp("f2", avail, 0, "v:full"), cp("i2", avail, 1*time.Hour, "v:incremental"), cp("i1", avail, 2*time.Hour, "v:incremental"), cp("f", avail, 3*time.Hour, "v:full")},
			want:   "f2=kept i2=deleted i1=deferred f=deferred",
			reason: map[string]string{"i1": "deleted after checkpoint i2", "f": "deleted after checkpoint i1"}},
		{name: "the next link goes while the newer one is being deleted... not before", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("f2", avail, 0, "v:full"), cp("i2", events.StatusDeleting, 1*time.Hour, "v:incremental"), cp("i1", avail, 2*time.Hour, "v:incremental"), cp("f", avail, 3*time.Hour, "v:full")},
			want: "f2=kept i2=ignored i1=deferred f=deferred"},
		{name: "once the newer link is deleted, the next goes", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("f2", avail, 0, "v:full"), cp("i1", avail, 2*time.Hour, "v:incremental"), cp("f", avail, 3*time.Hour, "v:full")},
			want: "f2=kept i1=deleted f=deferred"},
		{name: "a newer incremental that failed to delete keeps its chain", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("f2", avail, 0, "v:full"), cp("i2", events.StatusErrorDeleting, 1*time.Hour, "v:incremental"), cp("i1", avail, 2*time.Hour, "v:incremental"), cp("f", avail, 3*time.Hour, "v:full")},
			want: "f2=kept i2=ignored i1=kept f=kept"},
		{name: "chains are per volume", policy: events.Retention{MaxBackups: 1},
			cps: []planCheckpoint{cp("c", avail, 0, "v1:incremental", "v2:full"), cp("b", avail, 1*time.Hour, "v1:full", "v2:incremental"),
				cp("a", avail, 2*time.Hour, "v1:incremental", "v2:full")},
			want: "c=kept b=kept a=kept", reason: map[string]string{"b": "checkpoint c, which depends", "a": "checkpoint b, which depends"}},
		{name: "a volume not backed up by the newer checkpoint does not chain", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("b", avail, 0, "v2:incremental"), cp("a", avail, 1*time.Hour, "v1:full")},
			want: "b=kept a=deleted"},
		{name: "a checkpoint read by a running restore is kept", policy: events.Retention{MaxBackups: 1},
			cps:    []planCheckpoint{cp("c", avail, 0), restoring(cp("b", avail, 1*time.Hour)), cp("a", avail, 2*time.Hour)},
			want:   "c=kept b=kept a=deleted",
			reason: map[string]string{"b": "a restore in progress reads it"}},
		{name: "... and deleted on a later run", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("c", avail, 0), cp("b", avail, 1*time.Hour)},
			want: "c=kept b=deleted"},
		{name: "non-available checkpoints are neither counted nor deleted", policy: events.Retention{MaxBackups: 2, RetentionDuration: 1},
			cps: []planCheckpoint{cp("p", events.StatusProtecting, 0), cp("e", events.StatusError, 1*time.Hour), cp("b", avail, 2*time.Hour),
				cp("x", events.StatusDeleting, 3*time.Hour), cp("y", events.StatusErrorDeleting, 50*day), cp("a", avail, 4*time.Hour),
				cp("z", events.StatusDeleted, 60*day), cp("o", avail, 5*time.Hour), cp("old", events.StatusError, 90*day)},
			want:   "p=ignored e=ignored b=kept x=ignored y=ignored a=kept z=ignored o=deleted old=ignored",
			reason: map[string]string{"y": "error-deleting: only available checkpoints are counted and deleted"}},
		{name: "an error checkpoint's incremental backup keeps its parent", policy: events.Retention{MaxBackups: 1},
			cps:  []planCheckpoint{cp("b", avail, 0, "v:full"), cp("e", events.StatusError, 1*time.Hour, "v:incremental"), cp("a", avail, 2*time.Hour, "v:full")},
			want: "b=kept e=ignored a=kept"},
		{name: "a checkpoint being protected incrementally holds the newest backup of each volume", policy: events.Retention{RetentionDuration: 1},
			cps:  []planCheckpoint{protectingIncremental, cp("b", avail, 2*day, "v1:full"), cp("a", avail, 3*day, "v1:full", "v2:full")},
			want: "p=ignored b=kept a=kept"},
		{name: "a checkpoint being protected with full backups holds nothing", policy: events.Retention{RetentionDuration: 1},
			cps:  []planCheckpoint{cp("p", events.StatusProtecting, 0), cp("b", avail, 2*day, "v1:full"), cp("a", avail, 3*day, "v1:full", "v2:full")},
			want: "p=ignored b=kept a=deleted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs := decide(c.cps, c.policy, retentionNow)
			var got []string
			for _, v := range vs {
				got = append(got, v.Checkpoint+"="+v.Decision)
			}
			if strings.Join(got, " ") != c.want {
				t.Fatalf("decisions\n got %s\nwant %s\n%+v", strings.Join(got, " "), c.want, vs)
			}
			for _, v := range vs {
				if want, ok := c.reason[v.Checkpoint]; ok && !strings.Contains(v.Reason, want) {
					t.Errorf("%s: reason %q, want %q", v.Checkpoint, v.Reason, want)
				}
				if v.Reason == "" {
					t.Errorf("%s: no reason", v.Checkpoint)
				}
			}
		})
	}
}

// retentionBank is the bank of one plan for retain: checkpoints, statuses, volume records,
// restores; it counts what is read.
type retentionBank struct {
	store
	mu          sync.Mutex
	ids         []string // newest first
	index       map[string]*bank.Checkpoint
	status      map[string]string
	records     map[string][]bank.Record
	restores    map[string]*bank.Restore
	deletions   map[string]*bank.Deletion
	schedules   map[string]*bank.ScheduleRecord
	indexReads  int
	lists       int
	recordReads []string
}

// ListCheckpoints answers pages of at most two checkpoints, whatever the limit.
func (b *retentionBank) ListCheckpoints(_ context.Context, plan string, limit int, marker string) ([]string, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lists++
	limit = min(limit, 2)
	start := 0
	if marker != "" {
		start = slices.Index(b.ids, marker) + 1
	}
	end := min(start+limit, len(b.ids))
	next := ""
	if end < len(b.ids) {
		next = b.ids[end-1]
	}
	return b.ids[start:end], next, nil
}

func (b *retentionBank) Checkpoint(_ context.Context, id string) (*bank.Checkpoint, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.indexReads++
	if cp, ok := b.index[id]; ok {
		return cp, nil
	}
	return nil, fmt.Errorf("checkpoint %s: %w", id, bank.ErrNotFound)
}

func (b *retentionBank) Status(_ context.Context, id string) (string, error) {
	return b.status[id], nil
}

func (b *retentionBank) RecordsOf(_ context.Context, id, prefix string) ([]bank.Record, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if prefix != "volumes-" {
		return nil, fmt.Errorf("records of %s with prefix %q", id, prefix)
	}
	b.recordReads = append(b.recordReads, id)
	return b.records[id], nil
}

func (b *retentionBank) Restore(_ context.Context, id string) (*bank.Restore, error) {
	if r, ok := b.restores[id]; ok {
		return r, nil
	}
	return nil, bank.ErrNotFound
}

func (b *retentionBank) PutDeletion(_ context.Context, d bank.Deletion) error {
	b.deletions[d.Checkpoint] = &d
	return nil
}

func (b *retentionBank) Deletion(_ context.Context, id string) (*bank.Deletion, error) {
	if d, ok := b.deletions[id]; ok {
		return d, nil
	}
	return nil, bank.ErrNotFound
}

// PlanSchedules answers the schedules that store a plan, as the bank's index does.
func (b *retentionBank) PlanSchedules(_ context.Context, plan string) ([]string, error) {
	var ids []string
	for id, sc := range b.schedules {
		if sc.Plan.ID == plan {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (b *retentionBank) Schedule(_ context.Context, id string) (*bank.ScheduleRecord, error) {
	if sc, ok := b.schedules[id]; ok {
		return sc, nil
	}
	return nil, bank.ErrNotFound
}

// storePlan stores plan "shop" in a schedule, with a retention policy.
func (b *retentionBank) storePlan(schedule string, retention *events.Retention) {
	b.schedules[schedule] = &bank.ScheduleRecord{Schedule: events.Schedule{ID: schedule, Plan: events.Plan{ID: "shop", Retention: retention}}}
}

// add puts a checkpoint of plan "shop", made age ago, at the oldest end of the plan; it
// records retention as its plan's policy (which retention never reads).
func (b *retentionBank) add(id, status string, age time.Duration, mode string, retention *events.Retention, volumes ...string) {
	b.ids = append(b.ids, id)
	b.index[id] = &bank.Checkpoint{ID: id, Plan: bank.PlanRef{ID: "shop", Retention: retention}, CreatedAt: retentionNow.Add(-age),
		Parameters: events.Parameters{Volume: events.VolumeParameters{BackupMode: mode}}}
	b.status[id] = status
	rec := bank.Record{Batch: "volumes-0000", Resources: map[string]bank.ResourceRecord{}}
	for _, v := range volumes {
		vol, m, _ := strings.Cut(v, ":")
		data, _ := json.Marshal(checkpoint.VolumeInfo{VolumeID: vol, BackupID: "backup-" + id + "-" + vol, Mode: m, BackupStatus: "available"})
		rec.Resources[graph.VolumeType+"#"+vol] = bank.ResourceRecord{Status: events.StatusAvailable, Data: data}
	}
	b.records[id] = []bank.Record{rec}
}

// restoreOps are the restores in progress.
type restoreOps struct {
	ops
	status map[string]string
}

func (o *restoreOps) Active(context.Context) ([]string, error) {
	var ids []string
	for id := range o.status {
		ids = append(ids, id)
	}
	return ids, nil
}

func (o *restoreOps) Status(_ context.Context, id string) (string, error) { return o.status[id], nil }

// deleted returns the checkpoints whose deletion was requested, in order, and checks
// each request's id.
func (s *sent) deleted(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, e := range s.events {
		var req events.DeleteRequest
		if e.Type() != events.DeleteRequested || e.DataAs(&req) != nil {
			t.Fatalf("unexpected event %s", e)
		}
		if e.ID() != function.DerivedID("retention", req.Checkpoint) {
			t.Errorf("delete of %s has id %s", req.Checkpoint, e.ID())
		}
		out = append(out, req.Checkpoint)
	}
	return out
}

func newRetentionStep(t *testing.T) (*Step, *retentionBank, *restoreOps, *sent, context.Context) {
	b := &retentionBank{index: map[string]*bank.Checkpoint{}, status: map[string]string{}, records: map[string][]bank.Record{},
		restores: map[string]*bank.Restore{}, deletions: map[string]*bank.Deletion{}, schedules: map[string]*bank.ScheduleRecord{}}
	r := &restoreOps{status: map[string]string{}}
	out := &sent{}
	s := NewStep(b, r, nil, out, Config{FanOutWorkers: 4}, func() time.Time { return retentionNow })
	return s, b, r, out, logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
}

func TestRetainRequestsDeletions(t *testing.T) {
	s, b, restores, out, ctx := newRetentionStep(t)
	keep2 := &events.Retention{MaxBackups: 2}
	// The policy in force is the stored plan's, max_backups 2, whatever the checkpoints
	// recorded (the newest one says max_backups 1).
	b.storePlan("shop-daily", keep2)
	b.add("f", events.StatusAvailable, 1*time.Hour, "full", &events.Retention{MaxBackups: 1}, "v")
	b.add("e", events.StatusAvailable, 2*time.Hour, "full", nil, "v")
	b.add("d", events.StatusAvailable, 3*time.Hour, "full", &events.Retention{MaxBackups: 10}, "v")
	b.add("c", events.StatusError, 4*time.Hour, "full", keep2)
	b.add("b", events.StatusAvailable, 5*time.Hour, "full", keep2, "v")
	b.add("a", events.StatusAvailable, 6*time.Hour, "full", keep2, "v")
	restores.status["r1"] = events.RestoreInProgress
	b.restores["r1"] = &bank.Restore{ID: "r1", Checkpoint: "b"}
	restores.status["r0"] = events.RestoreSuccess
	b.restores["r0"] = &bank.Restore{ID: "r0", Checkpoint: "a"}

	if err := s.retain(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if got := out.deleted(t); !slices.Equal(got, []string{"d", "a"}) {
		t.Fatalf("deleted %v, want d and a (b is being restored)", got)
	}
	// Every page of the plan was listed, every index read once.
	if b.lists != 3 || b.indexReads != 6 {
		t.Errorf("pages listed %d, index reads %d", b.lists, b.indexReads)
	}
	// Full backups only: no record is read.
	if len(b.recordReads) != 0 {
		t.Errorf("records read: %v", b.recordReads)
	}

	// The restore ends: b goes on the next run; the deletions requested before are
	// requested again with the same ids, which the delete flow takes as duplicates.
	restores.status["r1"] = events.RestoreSuccess
	out.events = nil
	if err := s.retainAfterRestore(ctx, b.restores["r1"]); err != nil {
		t.Fatal(err)
	}
	if got := out.deleted(t); !slices.Equal(got, []string{"d", "b", "a"}) {
		t.Fatalf("deleted %v", got)
	}
}

func TestRetainWalksAChainOneLinkPerRun(t *testing.T) {
	s, b, _, out, ctx := newRetentionStep(t)
	keep1 := &events.Retention{MaxBackups: 1}
	b.storePlan("shop-daily", keep1)
	b.add("f2", events.StatusAvailable, 1*time.Hour, "full", keep1, "v:full")
	b.add("i2", events.StatusAvailable, 2*time.Hour, "incremental", keep1, "v:incremental")
	b.add("i1", events.StatusAvailable, 3*time.Hour, "incremental", keep1, "v:incremental")
	b.add("f1", events.StatusAvailable, 4*time.Hour, "incremental", keep1, "v:full")
	b.add("old", events.StatusAvailable, 5*time.Hour, "full", keep1, "w:full")
	// Each run, then the delete flow: the checkpoints requested are deleting, then gone
	// when their deletion ends (and retention runs again).
	for i, run := range []struct {
		want []string
		gone bool
	}{{[]string{"i2", "old"}, false}, {nil, true}, {[]string{"i1"}, true}, {[]string{"f1"}, true}, {nil, false}} {
		out.events, b.recordReads = nil, nil
		if err := s.retain(ctx, "shop"); err != nil {
			t.Fatal(err)
		}
		got := out.deleted(t)
		if !slices.Equal(got, run.want) {
			t.Fatalf("deleted %v, want %v", got, run.want)
		}
		// Records are read from the newest incremental checkpoint down, never above it.
		slices.Sort(b.recordReads)
		if i == 0 && !slices.Equal(b.recordReads, []string{"f1", "i1", "i2", "old"}) || slices.Contains(b.recordReads, "f2") {
			t.Errorf("records read: %v", b.recordReads)
		}
		for _, id := range got {
			b.status[id] = events.StatusDeleting
		}
		if run.gone {
			b.ids = slices.DeleteFunc(b.ids, func(id string) bool { return b.status[id] == events.StatusDeleting })
		}
	}
	if !slices.Equal(b.ids, []string{"f2"}) {
		t.Fatalf("left %v", b.ids)
	}
}

// A plan no schedule stores has no policy in force, whatever its checkpoints recorded
// from their requests; nor has a plan whose schedules disagree. Neither reads a
// checkpoint.
func TestRetainWithoutAStoredPolicyReadsNoCheckpoint(t *testing.T) {
	s, b, _, out, ctx := newRetentionStep(t)
	b.add("b", events.StatusAvailable, 1*time.Hour, "full", &events.Retention{MaxBackups: 1}, "v")
	b.add("a", events.StatusAvailable, 400*day, "full", &events.Retention{MaxBackups: 1}, "v")
	b.add("z", events.StatusAvailable, 500*day, "full", &events.Retention{MaxBackups: 1}, "v")
	for _, schedules := range []map[string]*events.Retention{
		{},
		{"shop-daily": nil},
		{"shop-daily": {MaxBackups: 1}, "shop-weekly": {MaxBackups: 2}},
	} {
		clear(b.schedules)
		for id, r := range schedules {
			b.storePlan(id, r)
		}
		if err := s.retain(ctx, "shop"); err != nil {
			t.Fatal(err)
		}
		if len(out.events) != 0 || b.indexReads != 0 || b.lists != 0 || len(b.recordReads) != 0 {
			t.Fatalf("schedules %v: events %d, index reads %d, pages listed %d, record reads %v", schedules, len(out.events), b.indexReads, b.lists, b.recordReads)
		}
	}
	if err := s.retain(ctx, ""); err != nil || len(out.events) != 0 {
		t.Fatalf("no plan: %v %d", err, len(out.events))
	}
}

func TestRetainAfterDeletionFindsThePlanOfTheDeletion(t *testing.T) {
	s, b, _, out, ctx := newRetentionStep(t)
	keep1 := &events.Retention{MaxBackups: 1}
	b.storePlan("shop-daily", keep1)
	b.add("b", events.StatusAvailable, 1*time.Hour, "full", keep1, "v")
	b.add("a", events.StatusAvailable, 2*time.Hour, "full", keep1, "v")
	if err := s.noteDeletion(ctx, &bank.Checkpoint{ID: "gone", Plan: bank.PlanRef{ID: "shop", Retention: keep1}}, time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.retainAfterDeletion(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if got := out.deleted(t); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("deleted %v", got)
	}
	// The deletion of a checkpoint of no plan runs nothing.
	out.events = nil
	if err := s.noteDeletion(ctx, &bank.Checkpoint{ID: "loose"}, time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.retainAfterDeletion(ctx, "loose"); err != nil || len(out.events) != 0 {
		t.Fatalf("%v %d", err, len(out.events))
	}
}

func TestRetentionNeedsAPlanID(t *testing.T) {
	s, _, _, out, ctx := newRetentionStep(t)
	e := event.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType(events.ProtectRequested)
	_ = e.SetData(event.ApplicationJSON, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{AllNamespaces: true},
		Retention: &events.Retention{MaxBackups: 3}}})
	_, err := s.Handle(ctx, e)
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/plan/retention") || !strings.Contains(err.Error(), "/plan/id") {
		t.Fatalf("error %v, want a permanent one naming /plan/retention and /plan/id", err)
	}
	if len(out.events) != 0 {
		t.Fatalf("emitted %d events", len(out.events))
	}
}

// storeSchedule saves a schedule of plan p through schedule.set, yearly (no occurrence
// falls within a test), and fails the test if it is refused.
func (w *world) storeSchedule(id string, p events.Plan) {
	w.t.Helper()
	w.handle(w.event(events.ScheduleSet, "", events.Schedule{ID: id, Plan: p, Trigger: events.Trigger{Pattern: "FREQ=YEARLY"}}))
}

// deletionsOf returns the checkpoints whose deletion es request, in order.
func deletionsOf(t *testing.T, es []event.Event) []string {
	t.Helper()
	var out []string
	for _, e := range byType(es, events.DeleteRequested) {
		out = append(out, decode[events.DeleteRequest](t, e).Checkpoint)
	}
	return out
}

// planIDs lists the checkpoints of a plan, newest first.
func (w *world) planIDs(plan string) []string {
	w.t.Helper()
	ids, _, err := w.bank.ListCheckpoints(context.Background(), plan, 100, "")
	if err != nil {
		w.t.Fatal(err)
	}
	return ids
}

var shopPlan = events.Plan{ID: "shop", Scope: events.Scope{Namespaces: []string{"shop"}}, Retention: &events.Retention{MaxBackups: 2}}

// A plan stored with max_backups 2 whose protects start failing keeps its two newest
// available checkpoints: a protect that ends in error deletes nothing, and error
// checkpoints do not count toward max_backups when the next one is available.
func TestRetentionKeepsTheNewestAvailableWhileProtectsFail(t *testing.T) {
	w := newWorld(t)
	w.storeSchedule("shop-nightly", shopPlan)
	var good []string
	for i := range 3 {
		id, _, _, sent := w.protected(shopPlan, events.StatusAvailable)
		good = append(good, id)
		want := []string(nil)
		if i == 2 {
			want = good[:1]
		}
		if got := deletionsOf(t, sent); !slices.Equal(got, want) {
			t.Fatalf("available checkpoint %d: deletions %v, want %v", i+1, got, want)
		}
		for _, e := range byType(sent, events.DeleteRequested) {
			w.handle(e) // the delete flow starts: the oldest is deleting
		}
		w.out.take()
	}
	w.status(good[0], events.StatusDeleting)
	var failed []string
	for range 3 {
		id, _, _, sent := w.protected(shopPlan, events.StatusError)
		failed = append(failed, id)
		if got := deletionsOf(t, sent); len(got) != 0 {
			t.Fatalf("a protect that failed requested deletions %v", got)
		}
	}
	for _, id := range good[1:] {
		w.status(id, events.StatusAvailable)
	}
	// The next available one makes the oldest available one go; the three in error
	// are neither counted nor deleted.
	id, _, _, sent := w.protected(shopPlan, events.StatusAvailable)
	if got := deletionsOf(t, sent); !slices.Equal(got, good[1:2]) {
		t.Fatalf("deletions %v once checkpoint %s is available, want %v", got, id, good[1:2])
	}
	if ids := w.planIDs("shop"); len(ids) != 7 || ids[0] != id || !slices.Equal(ids[1:4], []string{failed[2], failed[1], failed[0]}) {
		t.Fatalf("checkpoints of the plan %v", ids)
	}
	// The plan is saved with max_backups 1: a protect that fails still deletes nothing
	// (a retention run now would delete the older of the two available ones).
	keep1 := shopPlan
	keep1.Retention = &events.Retention{MaxBackups: 1}
	w.storeSchedule("shop-nightly", keep1)
	if _, _, _, sent := w.protected(keep1, events.StatusError); len(deletionsOf(t, sent)) != 0 {
		t.Fatalf("a protect that failed requested deletions %v", deletionsOf(t, sent))
	}
}

// A protect request that reuses a stored plan's id with another retention or scope is
// refused with the stored one, and changes nothing; one that says nothing of retention is the
// plan's, and records the stored policy.
func TestForgedRetentionOfAStoredPlanRemovesNothing(t *testing.T) {
	w := newWorld(t)
	w.storeSchedule("shop-nightly", shopPlan)
	for range 2 {
		w.protected(shopPlan, events.StatusAvailable)
	}
	before := w.planIDs("shop")
	forged := shopPlan
	forged.Retention = &events.Retention{MaxBackups: 1}
	ctx := logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
	_, err := w.step.Handle(ctx, w.event(events.ProtectRequested, "", events.ProtectRequest{Plan: forged}))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/plan/retention: plan shop is stored by schedule shop-nightly with retention {max_backups: 2, retention_duration: 0}, not {max_backups: 1") {
		t.Fatalf("forged retention: %v, want a permanent error with the stored policy", err)
	}
	if sent := w.out.take(); len(sent) != 0 || !slices.Equal(w.planIDs("shop"), before) {
		t.Fatalf("a refused request sent %v; checkpoints %v, before %v", types(sent), w.planIDs("shop"), before)
	}
	// Another scope under the plan's id: its checkpoints would count among the plan's.
	elsewhere := shopPlan
	elsewhere.Scope = events.Scope{Namespaces: []string{"shop", "scratch"}}
	_, err = w.step.Handle(ctx, w.event(events.ProtectRequested, "", events.ProtectRequest{Plan: elsewhere}))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/plan/scope: plan shop is stored by schedule shop-nightly with scope {namespaces [shop]}, not {namespaces [shop scratch]}") {
		t.Fatalf("forged scope: %v, want a permanent error with the stored scope", err)
	}
	if sent := w.out.take(); len(sent) != 0 || !slices.Equal(w.planIDs("shop"), before) {
		t.Fatalf("a refused request sent %v; checkpoints %v, before %v", types(sent), w.planIDs("shop"), before)
	}
	silent := shopPlan
	silent.Retention = nil
	id, _, _, sent := w.protected(silent, events.StatusAvailable)
	if got := deletionsOf(t, sent); !slices.Equal(got, before[1:]) {
		t.Fatalf("deletions %v, want the oldest of %v", got, before)
	}
	cp, err := w.bank.Checkpoint(context.Background(), id)
	if err != nil || cp.Plan.Retention == nil || *cp.Plan.Retention != *shopPlan.Retention {
		t.Fatalf("checkpoint's plan %+v %v, want the stored policy", cp.Plan, err)
	}
}

// A plan no schedule stores gets no deletions from what its requests say.
func TestRetentionOfAPlanNoScheduleStoresDeletesNothing(t *testing.T) {
	w := newWorld(t)
	adhoc := events.Plan{ID: "adhoc", Scope: events.Scope{Namespaces: []string{"shop"}}, Retention: &events.Retention{MaxBackups: 1}}
	for range 3 {
		id, _, _, sent := w.protected(adhoc, events.StatusAvailable)
		if got := deletionsOf(t, sent); len(got) != 0 {
			t.Fatalf("deletions %v", got)
		}
		if cp, err := w.bank.Checkpoint(context.Background(), id); err != nil || cp.Plan.Retention != nil {
			t.Fatalf("checkpoint's plan %+v %v: no policy is in force", cp.Plan, err)
		}
	}
}

// Schedules that store one plan share its retention; each is indexed under its plan
// while it stores it, and the tick indexes a schedule again before each occurrence.
func TestSchedulesOfOnePlanShareItsRetention(t *testing.T) {
	w := newWorld(t)
	ctx := logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
	indexed := func(plan string, want ...string) {
		t.Helper()
		if got, err := w.bank.PlanSchedules(ctx, plan); err != nil || !slices.Equal(got, want) {
			t.Fatalf("schedules of plan %s: %v %v, want %v", plan, got, err, want)
		}
	}
	w.storeSchedule("shop-nightly", shopPlan)
	other := shopPlan
	other.Retention = &events.Retention{MaxBackups: 3}
	_, err := w.step.Handle(ctx, w.event(events.ScheduleSet, "", events.Schedule{ID: "shop-weekly", Plan: other, Trigger: events.Trigger{Pattern: "FREQ=WEEKLY"}}))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "plan shop is stored by schedule shop-nightly with retention {max_backups: 2") {
		t.Fatalf("a second schedule of the plan with another retention: %v", err)
	}
	indexed("shop", "shop-nightly")
	wider := shopPlan
	wider.Scope = events.Scope{AllNamespaces: true}
	_, err = w.step.Handle(ctx, w.event(events.ScheduleSet, "", events.Schedule{ID: "shop-weekly", Plan: wider, Trigger: events.Trigger{Pattern: "FREQ=WEEKLY"}}))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/plan/scope: plan shop is stored by schedule shop-nightly with scope {namespaces [shop]}, not {allNamespaces}") {
		t.Fatalf("a second schedule of the plan with another scope: %v", err)
	}
	indexed("shop", "shop-nightly")
	w.storeSchedule("shop-weekly", shopPlan)
	indexed("shop", "shop-nightly", "shop-weekly")
	// Re-saved for another plan, a schedule leaves the index of the first.
	moved := shopPlan
	moved.ID = "shop-archive"
	w.storeSchedule("shop-weekly", moved)
	indexed("shop", "shop-nightly")
	indexed("shop-archive", "shop-weekly")
	w.handle(w.event(events.ScheduleDelete, "", events.ScheduleRef{ID: "shop-weekly"}))
	indexed("shop-archive")

	// A schedule saved before the index existed is indexed by the tick as its
	// occurrence runs, before the checkpoint's protect is requested.
	w.handle(w.event(events.ScheduleSet, "", events.Schedule{ID: "shop-hourly", Plan: events.Plan{ID: "hourly", Scope: shopPlan.Scope,
		Retention: &events.Retention{MaxBackups: 1}}, Trigger: events.Trigger{Pattern: "FREQ=HOURLY"}}))
	if err := w.bank.RemovePlanSchedule(ctx, "hourly", "shop-hourly"); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Hour)
	only(t, w.tick(), events.ProtectRequested)
	indexed("hourly", "shop-hourly")
}
