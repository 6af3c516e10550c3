// Package banktest holds the bank's test double: an in-memory Swift with the behaviour
// the bank relies on, and a bank on it.
//
//	b := banktest.New(t, clock.now)
package banktest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// New is a bank on a new in-memory Swift, stamped with now (time.Now when nil).
func New(t testing.TB, now func() time.Time) *bank.Bank {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	return NewOn(t, NewSwift(now), now)
}

// NewOn is a bank on sw, stamped with now.
func NewOn(t testing.TB, sw *Swift, now func() time.Time) *bank.Bank {
	t.Helper()
	b, err := bank.New(context.Background(), sw, "bank")
	if err != nil {
		t.Fatal(err)
	}
	b.SetClock(now)
	return b
}

// Down makes every later call fail with err (nil: up again), as a Swift that is down.
func (m *Swift) Down(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *Swift) down() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Swift is an in-memory Swift container store with the behaviour the bank relies on:
// create-only writes (If-None-Match: *) refused with 412, 404s as swift.ObjectNotFound,
// listings sorted by name with prefix, marker and limit, bulk upload of a tar archive
// and bulk delete. Objects are stamped with a clock the test moves (the choreographer
// compares their times when it decides that a request waited long enough).
type Swift struct {
	mu   sync.Mutex
	objs map[string]object // container/name
	now  func() time.Time
	err  error
	// writes counts the objects written and deleted.
	writes int
}

// Writes is how many objects were written or deleted so far: a request that changes
// nothing leaves it as it was.
func (m *Swift) Writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

// Names lists the objects of a container, sorted.
func (m *Swift) Names(container string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for key := range m.objs {
		if name, ok := strings.CutPrefix(key, container+"/"); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Object is the content of an object; nil when there is none.
func (m *Swift) Object(container, name string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[container+"/"+name]
	if !ok {
		return nil
	}
	return append([]byte(nil), o.data...)
}

type object struct {
	data []byte
	mod  time.Time
}

// NewSwift is an empty store whose objects are stamped with now.
func NewSwift(now func() time.Time) *Swift {
	return &Swift{objs: map[string]object{}, now: now}
}

func (m *Swift) ContainerCreate(context.Context, string, swift.Headers) error { return nil }

func (m *Swift) ObjectPut(_ context.Context, container, name string, r io.Reader, _ bool, _, _ string, h swift.Headers) (swift.Headers, error) {
	if err := m.down(); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := container + "/" + name
	if _, ok := m.objs[key]; ok && h["If-None-Match"] == "*" {
		return nil, &swift.Error{StatusCode: http.StatusPreconditionFailed, Text: "Precondition Failed"}
	}
	m.objs[key] = object{data: data, mod: m.now()}
	m.writes++
	return swift.Headers{}, nil
}

func (m *Swift) ObjectGetBytes(_ context.Context, container, name string) ([]byte, error) {
	if err := m.down(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[container+"/"+name]
	if !ok {
		return nil, swift.ObjectNotFound
	}
	return append([]byte(nil), o.data...), nil
}

func (m *Swift) ObjectDelete(_ context.Context, container, name string) error {
	if err := m.down(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := container + "/" + name
	if _, ok := m.objs[key]; !ok {
		return swift.ObjectNotFound
	}
	delete(m.objs, key)
	m.writes++
	return nil
}

func (m *Swift) Objects(_ context.Context, container string, opts *swift.ObjectsOpts) ([]swift.Object, error) {
	if err := m.down(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []swift.Object
	for key, o := range m.objs {
		name, ok := strings.CutPrefix(key, container+"/")
		if !ok || !strings.HasPrefix(name, opts.Prefix) || name <= opts.Marker {
			continue
		}
		out = append(out, swift.Object{Name: name, Bytes: int64(len(o.data)), LastModified: o.mod})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out, nil
}

func (m *Swift) BulkUpload(_ context.Context, container string, data io.Reader, _ string, _ swift.Headers) (swift.BulkUploadResult, error) {
	if err := m.down(); err != nil {
		return swift.BulkUploadResult{}, err
	}
	var res swift.BulkUploadResult
	tr := tar.NewReader(data)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return res, err
		}
		m.mu.Lock()
		m.objs[container+"/"+hdr.Name] = object{data: body, mod: m.now()}
		m.writes++
		m.mu.Unlock()
		res.NumberCreated++
	}
}

func (m *Swift) BulkDelete(_ context.Context, container string, names []string) (swift.BulkDeleteResult, error) {
	if err := m.down(); err != nil {
		return swift.BulkDeleteResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var res swift.BulkDeleteResult
	for _, name := range names {
		if _, ok := m.objs[container+"/"+name]; ok {
			delete(m.objs, container+"/"+name)
			res.NumberDeleted++
			m.writes++
		} else {
			res.NumberNotFound++
		}
	}
	return res, nil
}

// Protecting stores a checkpoint being protected with its graph, as the choreographer
// leaves it once it fanned out, and returns it cut into batches. Zero fields of cp get
// defaults: created now, a deadline an hour on, batches of 50.
func Protecting(t testing.TB, b *bank.Bank, cp bank.Checkpoint, g *graph.Graph) *bank.Batches {
	t.Helper()
	ctx := context.Background()
	if cp.CreatedAt.IsZero() {
		cp.CreatedAt = time.Now().UTC()
	}
	if cp.Deadline.IsZero() {
		cp.Deadline = cp.CreatedAt.Add(time.Hour)
	}
	if cp.BatchSize == 0 {
		cp.BatchSize = 50
	}
	if cp.Scope.Pods == nil && cp.Scope.Namespaces == nil && !cp.Scope.AllNamespaces {
		cp.Scope = events.Scope{AllNamespaces: true}
	}
	if _, err := b.CreateCheckpoint(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if err := b.PutGraph(ctx, cp.ID, g); err != nil {
		t.Fatal(err)
	}
	bs, err := b.Batches(ctx, cp.ID)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// SetStatus moves an operation to a status.
func SetStatus(t testing.TB, ops *bank.Ops, id, status string) {
	t.Helper()
	if err := ops.SetStatus(context.Background(), id, status); err != nil {
		t.Fatal(err)
	}
}

// Restoring stores an available checkpoint (see Protecting) and a restore of it in
// progress, with a deadline an hour on unless r has one.
func Restoring(t testing.TB, b *bank.Bank, cp bank.Checkpoint, g *graph.Graph, r bank.Restore) (*bank.Batches, *bank.Restore) {
	t.Helper()
	bs := Protecting(t, b, cp, g)
	SetStatus(t, b.Checkpoints(), bs.Checkpoint.ID, events.StatusAvailable)
	r.Checkpoint = bs.Checkpoint.ID
	if r.CreatedAt.IsZero() {
		r.CreatedAt = time.Now().UTC()
	}
	if r.Deadline.IsZero() {
		r.Deadline = r.CreatedAt.Add(time.Hour)
	}
	stored, err := b.CreateRestore(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return bs, stored
}

// Deleting records the deletion of a checkpoint stored before (see Protecting), with its
// deadline, and marks both deleting.
func Deleting(t testing.TB, b *bank.Bank, checkpoint string, deadline time.Time) {
	t.Helper()
	ctx := context.Background()
	cp, err := b.Checkpoint(ctx, checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutDeletion(ctx, bank.Deletion{Checkpoint: checkpoint, Plan: cp.Plan, Deadline: deadline}); err != nil {
		t.Fatal(err)
	}
	SetStatus(t, b.Deletions(), checkpoint, events.StatusDeleting)
	SetStatus(t, b.Checkpoints(), checkpoint, events.StatusDeleting)
}

// Request is the step request of a checkpoint's batch, as the choreographer sends it.
func Request(bs *bank.Batches, batch string) events.StepRequest {
	b, _ := bs.Batch(batch)
	req := events.StepRequest{Checkpoint: bs.Checkpoint.ID, Batch: batch, Resources: b.Resources, Deadline: bs.Checkpoint.Deadline}
	if b.Type == graph.VolumeType {
		p := bs.Checkpoint.Parameters.Volume
		req.Parameters = &p
	}
	return req
}

// RestoreRequest is the step request of a restore's batch, as the choreographer sends it.
func RestoreRequest(bs *bank.Batches, r *bank.Restore, batch string) events.RestoreStepRequest {
	b, _ := bs.Batch(batch)
	return events.RestoreStepRequest{Restore: r.ID, Checkpoint: r.Checkpoint, Batch: batch, Resources: b.Resources,
		Parameters: r.Parameters, Deadline: r.Deadline}
}

// RestoringPods stores what recreate-pod reads for a restore of a batch of pods: an
// available checkpoint (cp, see Protecting) whose graph holds the pods, each depending on
// every volume of volumes, with saved as its record of the pods; a restore r of it in
// progress; and the restore's record of the volumes restored (original id -> restored
// id), as restore-volume writes it. It returns the request of the pods' batch, as the
// choreographer sends it.
func RestoringPods(t testing.TB, b *bank.Bank, cp bank.Checkpoint, pods []graph.Resource, saved bank.Record, r bank.Restore, volumes map[string]string) events.RestoreStepRequest {
	t.Helper()
	ctx := context.Background()
	origs := slices.Sorted(maps.Keys(volumes))
	var children []string
	var vols []graph.Node
	for _, id := range origs {
		v := graph.Resource{Type: graph.VolumeType, ID: id, Name: id}
		children = append(children, v.Key())
		vols = append(vols, graph.Node{Resource: v})
	}
	g := &graph.Graph{}
	for _, p := range pods {
		g.Nodes = append(g.Nodes, graph.Node{Resource: p, Children: children})
	}
	g.Nodes = append(g.Nodes, vols...)
	bs, stored := Restoring(t, b, cp, g, r)
	saved.Batch = "pods-0000"
	if err := b.Checkpoints().PutRecord(ctx, bs.Checkpoint.ID, saved); err != nil {
		t.Fatal(err)
	}
	recs := map[string]*bank.Record{}
	for _, id := range origs {
		v := graph.Resource{Type: graph.VolumeType, ID: id}
		name, _ := bs.Of(v.Key())
		if recs[name] == nil {
			recs[name] = &bank.Record{Batch: name, UpdatedAt: time.Now().UTC(), Resources: map[string]bank.ResourceRecord{}}
		}
		rr := bank.ResourceRecord{Status: events.StatusAvailable}
		rv := checkpoint.RestoredVolume{OriginalID: id, VolumeID: volumes[id], BackupID: "backup-" + id, Name: bs.Checkpoint.ID + "@" + id}
		if rv.VolumeID == "" {
			rr = bank.ResourceRecord{Status: events.StatusError, Reason: "not restored"}
		}
		data, err := json.Marshal(rv)
		if err != nil {
			t.Fatal(err)
		}
		rr.Data = data
		recs[name].Resources[v.Key()] = rr
	}
	for _, rec := range recs {
		if err := b.Restores().PutRecord(ctx, stored.ID, *rec); err != nil {
			t.Fatal(err)
		}
	}
	return RestoreRequest(bs, stored, "pods-0000")
}

// PodRecord is a checkpoint's record of a batch in which every pod was saved (available)
// with the given info, sealed with keys for its place, as snapshot-metadata writes it.
func PodRecord(t testing.TB, keys checkpoint.Sealer, checkpointID, batch string, infos ...checkpoint.PodInfo) bank.Record {
	t.Helper()
	rec := bank.Record{Batch: batch, UpdatedAt: time.Now().UTC(), Resources: map[string]bank.ResourceRecord{}}
	for _, info := range infos {
		r := graph.PodResource(info.Pod.Namespace, info.Pod.Name)
		data, err := checkpoint.SealPodInfo(keys, checkpointID, batch, r.Key(), &info)
		if err != nil {
			t.Fatal(err)
		}
		rec.Resources[r.Key()] = bank.ResourceRecord{Status: events.StatusAvailable, Data: data}
	}
	return rec
}
