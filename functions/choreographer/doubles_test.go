package choreographer

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/ncw/swift/v2"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/graph"
)

// memSwift is an in-memory Swift container store with the behaviour the bank relies on:
// create-only writes (If-None-Match: *) refused with 412, 404s as swift.ObjectNotFound,
// listings sorted by name with prefix, marker and limit, bulk upload of a tar archive
// and bulk delete. Objects are stamped with the test's clock, which the choreographer
// compares with when it decides that a request waited long enough.
type memSwift struct {
	mu   sync.Mutex
	objs map[string]memObject // container/name
	now  func() time.Time
}

type memObject struct {
	data []byte
	mod  time.Time
}

func newMemSwift(now func() time.Time) *memSwift {
	return &memSwift{objs: map[string]memObject{}, now: now}
}

func (m *memSwift) ContainerCreate(context.Context, string, swift.Headers) error { return nil }

func (m *memSwift) ObjectPut(_ context.Context, container, name string, r io.Reader, _ bool, _, _ string, h swift.Headers) (swift.Headers, error) {
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
	m.objs[key] = memObject{data: data, mod: m.now()}
	return swift.Headers{}, nil
}

func (m *memSwift) ObjectGetBytes(_ context.Context, container, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[container+"/"+name]
	if !ok {
		return nil, swift.ObjectNotFound
	}
	return append([]byte(nil), o.data...), nil
}

func (m *memSwift) ObjectDelete(_ context.Context, container, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := container + "/" + name
	if _, ok := m.objs[key]; !ok {
		return swift.ObjectNotFound
	}
	delete(m.objs, key)
	return nil
}

func (m *memSwift) Objects(_ context.Context, container string, opts *swift.ObjectsOpts) ([]swift.Object, error) {
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

func (m *memSwift) BulkUpload(_ context.Context, container string, data io.Reader, _ string, _ swift.Headers) (swift.BulkUploadResult, error) {
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
		m.objs[container+"/"+hdr.Name] = memObject{data: body, mod: m.now()}
		m.mu.Unlock()
		res.NumberCreated++
	}
}

func (m *memSwift) BulkDelete(_ context.Context, container string, names []string) (swift.BulkDeleteResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var res swift.BulkDeleteResult
	for _, name := range names {
		if _, ok := m.objs[container+"/"+name]; ok {
			delete(m.objs, container+"/"+name)
			res.NumberDeleted++
		} else {
			res.NumberNotFound++
		}
	}
	return res, nil
}

// sent records the events the choreographer emits.
type sent struct {
	mu     sync.Mutex
	events []event.Event
}

func (s *sent) Send(_ context.Context, e event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
	return nil
}

// take returns the events sent since the last take.
func (s *sent) take() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.events
	s.events = nil
	return out
}

// world is the choreographer on an in-memory bank, with a clock the test moves.
type world struct {
	t     *testing.T
	clock time.Time
	mu    sync.Mutex
	bank  *bank.Bank
	out   *sent
	step  *Step
	cfg   Config
}

// testConfig: the deadlines and the re-drive delay the tests move the clock across.
var testConfig = Config{ProtectTimeout: time.Hour, ListTimeout: 10 * time.Minute, RestoreTimeout: time.Hour,
	DeleteTimeout: time.Hour, RedriveAfter: 30 * time.Second, FanOutWorkers: 4, BatchSize: 50}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, clock: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), out: &sent{}, cfg: testConfig}
	b, err := bank.New(context.Background(), newMemSwift(w.now), "bank")
	if err != nil {
		t.Fatal(err)
	}
	b.SetClock(w.now)
	w.bank = b
	w.step = NewStep(b, b.Restores(), b.Deletions(), w.out, w.cfg, w.now)
	return w
}

// now is the test's clock. Each reading moves it a millisecond on, as time goes by
// between the bank writes of a live system (statuses reached one after the other must
// be named by different times).
func (w *world) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clock = w.clock.Add(time.Millisecond)
	return w.clock
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clock = w.clock.Add(d)
}

// handle delivers an event to the choreographer and fails the test on an error.
func (w *world) handle(e event.Event) {
	w.t.Helper()
	ctx := logging.WithLogger(context.Background(), zaptest.NewLogger(w.t).Sugar())
	if _, err := w.step.Handle(ctx, e); err != nil {
		w.t.Fatalf("%s: %v", e.Type(), err)
	}
}

// tick delivers a tick and returns what it sent.
func (w *world) tick() []event.Event {
	w.t.Helper()
	w.out.take()
	w.handle(w.event(events.Tick, "", map[string]any{}))
	return w.out.take()
}

// event builds an event of a type about an operation ("" for none), at the test's time.
func (w *world) event(typ, op string, data any) event.Event {
	w.t.Helper()
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource("test")
	e.SetType(typ)
	e.SetTime(w.now())
	if op != "" {
		e.SetExtension(events.ExtCheckpoint, op)
	}
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		w.t.Fatal(err)
	}
	return e
}

// onePodOneVolume is a graph of one pod with one Cinder volume.
func onePodOneVolume() (*graph.Graph, graph.Resource, graph.Resource) {
	pod := graph.PodResource("shop", "web")
	vol := graph.Resource{Type: graph.VolumeType, ID: "vol-1", Name: "shop/web-data"}
	return &graph.Graph{Nodes: []graph.Node{{Resource: pod, Children: []string{vol.Key()}}, {Resource: vol}}}, pod, vol
}

// types lists the types of events, in order.
func types(es []event.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Type()
	}
	sort.Strings(out)
	return out
}

// only returns the single event of a type among es, failing the test otherwise.
func only(t *testing.T, es []event.Event, typ string) event.Event {
	t.Helper()
	var found []event.Event
	for _, e := range es {
		if e.Type() == typ {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s events among %v, want 1", len(found), typ, types(es))
	}
	return found[0]
}
