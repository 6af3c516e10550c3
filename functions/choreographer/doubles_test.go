package choreographer

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/graph"
)

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
	b, err := bank.New(context.Background(), banktest.NewSwift(w.now), "bank")
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
