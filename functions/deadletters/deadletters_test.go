package deadletters

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	"github.com/podguard/podguard/shared/function"
)

// memStore keeps dead letters as the bank does: one record per id (the first delivery
// wins), one failure per arrival time, one replay per call.
type memStore struct {
	mu      sync.Mutex
	letters map[string]*bank.DeadLetterRecord
	order   []string // ids, oldest first
	err     error    // answers every call when set
}

func newMemStore() *memStore { return &memStore{letters: map[string]*bank.DeadLetterRecord{}} }

func (m *memStore) RecordDeadLetter(_ context.Context, d bank.DeadLetter) (*bank.DeadLetter, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, false, m.err
	}
	r, ok := m.letters[d.ID]
	if !ok {
		r = &bank.DeadLetterRecord{DeadLetter: d}
		m.letters[d.ID] = r
		m.order = append(m.order, d.ID)
	}
	at := d.ArrivedAt
	if at.IsZero() {
		at = r.RecordedAt
	}
	if !slices.ContainsFunc(r.Failures, func(f bank.DeadLetterFailure) bool { return f.At.Equal(at) }) {
		r.Failures = append(r.Failures, bank.DeadLetterFailure{At: at, Code: d.Code})
	}
	stored := r.DeadLetter
	return &stored, !ok, nil
}

func (m *memStore) DeadLetter(_ context.Context, id string) (*bank.DeadLetterRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	r, ok := m.letters[id]
	if !ok {
		return nil, fmt.Errorf("get deadletters/%s/letter.json: %w", id, bank.ErrNotFound)
	}
	c := *r
	c.Failures, c.Replays = slices.Clone(r.Failures), slices.Clone(r.Replays)
	return &c, nil
}

func (m *memStore) ListDeadLetters(_ context.Context, typ string, limit int, marker string) ([]string, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, "", m.err
	}
	var ids []string
	for i := len(m.order) - 1; i >= 0; i-- {
		if id := m.order[i]; typ == "" || m.letters[id].Event.Type() == typ {
			ids = append(ids, id)
		}
	}
	if marker != "" {
		ids = ids[slices.Index(ids, marker)+1:]
	}
	if len(ids) > limit {
		return ids[:limit], ids[limit-1], nil
	}
	return ids, "", nil
}

func (m *memStore) MarkReplayed(_ context.Context, id string, at time.Time, _, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.letters[id].Replays = append(m.letters[id].Replays, at)
	return nil
}

// sink records what the step sends to the broker.
type sink struct {
	mu   sync.Mutex
	sent []event.Event
	err  error
}

func (s *sink) Send(_ context.Context, e event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.sent = append(s.sent, e)
	return nil
}

// clock is a test clock that moves a second each time it is read.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newStep(t *testing.T) (*Step, *memStore, *sink) {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	st, sk := newMemStore(), &sink{}
	return NewStep(st, sk, v, (&clock{t: t0}).now), st, sk
}

// original is an event as its producer sent it.
func original(id, typ, data string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("podguard.dev/choreographer")
	e.SetType(typ)
	e.SetTime(t0)
	e.SetExtension(events.ExtFlow, events.FlowProtect)
	_ = e.SetData(event.ApplicationJSON, []byte(data))
	return e
}

// deadLetter is e as a broker sends it to the dead-letter sink.
func deadLetter(e event.Event, dest string, code int, body string, arrived time.Time) event.Event {
	d := e.Clone()
	d.SetExtension(events.ExtErrorDest, dest)
	d.SetExtension(events.ExtErrorCode, fmt.Sprint(code))
	d.SetExtension(events.ExtErrorData, base64.StdEncoding.EncodeToString([]byte(body)))
	d.SetExtension(events.ExtArrivalTime, arrived.Format(time.RFC3339Nano))
	return d
}

func handle(t *testing.T, s *Step, e event.Event) *event.Event {
	t.Helper()
	r, err := s.Handle(testContext(t), e)
	if err != nil {
		t.Fatalf("%s %s: %v", e.Type(), e.ID(), err)
	}
	return r
}

func testContext(t *testing.T) context.Context {
	return logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
}

func TestRecordsADeadLetter(t *testing.T) {
	s, st, _ := newStep(t)
	e := original("e1", events.VolumeBackup, `{"checkpoint":"c1"}`)
	arrived := t0.Add(-time.Minute)
	if r := handle(t, s, deadLetter(e, "http://back-up-volume", 503, "cinder is down", arrived)); r != nil {
		t.Fatalf("a dead letter is answered with %v, want nothing", r)
	}
	id := bank.DeadLetterID(e.Source(), e.ID(), "http://back-up-volume")
	d, err := st.DeadLetter(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Code != 503 || d.Destination != "http://back-up-volume" || d.Error != "cinder is down" || !d.ArrivedAt.Equal(arrived) ||
		!d.RecordedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("recorded %+v", d.DeadLetter)
	}
	if d.Event.ID() != "e1" || d.Event.Type() != events.VolumeBackup || string(d.Event.Data()) != `{"checkpoint":"c1"}` ||
		d.Event.Extensions()[events.ExtFlow] != events.FlowProtect || d.Event.Extensions()[events.ExtErrorCode] != "503" {
		t.Fatalf("recorded event %v", d.Event)
	}
	if len(d.Failures) != 1 || d.Failures[0].Code != 503 {
		t.Fatalf("failures %v", d.Failures)
	}
}

// TestDuplicateIsOneRecord: the same dead letter delivered twice is one record with one
// failure; the event failing again later (a new arrival) is a second failure of the same
// record; the same event failing at another destination is another dead letter.
func TestDuplicateIsOneRecord(t *testing.T) {
	s, st, _ := newStep(t)
	e := original("e1", events.VolumeBackup, `{}`)
	dl := deadLetter(e, "http://a", 500, "x", t0)
	handle(t, s, dl)
	handle(t, s, dl)
	if len(st.order) != 1 {
		t.Fatalf("%d records, want 1", len(st.order))
	}
	d, _ := st.DeadLetter(context.Background(), st.order[0])
	if len(d.Failures) != 1 || !d.RecordedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after a duplicate: failures %v, recorded at %s", d.Failures, d.RecordedAt)
	}
	handle(t, s, deadLetter(e, "http://a", 502, "y", t0.Add(time.Hour)))
	d, _ = st.DeadLetter(context.Background(), st.order[0])
	if len(st.order) != 1 || len(d.Failures) != 2 || d.Failures[1].Code != 502 || d.Code != 500 {
		t.Fatalf("after failing again: %d records, %+v", len(st.order), d)
	}
	handle(t, s, deadLetter(e, "http://b", 500, "x", t0))
	if len(st.order) != 2 {
		t.Fatalf("another destination: %d records, want 2", len(st.order))
	}
}

// TestEverythingIsRecorded: malformed data, data that is not JSON, a request type of
// this very function that failed, and an event without error extensions of a type the
// function does not answer are all recorded, never refused.
func TestEverythingIsRecorded(t *testing.T) {
	s, st, _ := newStep(t)
	bad := original("bad", events.CheckpointsList, `{"limit":"many"`)
	text := original("text", events.PodShow, "")
	_ = text.SetData("text/plain", []byte("not json \xff"))
	failedReplay := original("replay", events.DeadLetterReplay, `{"deadletter":7}`)
	foreign := original("foreign", "com.example.other", `{"a":1}`)
	for _, e := range []event.Event{
		deadLetter(bad, "http://checkpoints", 400, "data: not valid JSON", t0),
		deadLetter(text, "http://list-pods", 400, "datacontenttype", t0),
		deadLetter(failedReplay, "http://dead-letters", 400, "/deadletter", t0),
		foreign,
	} {
		if r := handle(t, s, e); r != nil {
			t.Fatalf("%s answered with %s, want it recorded", e.ID(), r.Type())
		}
	}
	if len(st.order) != 4 {
		t.Fatalf("%d records, want 4", len(st.order))
	}
	d, _ := st.DeadLetter(context.Background(), st.order[1])
	if string(d.Event.Data()) != "not json \xff" || d.Event.DataContentType() != "text/plain" {
		t.Fatalf("text data recorded as %q (%s)", d.Event.Data(), d.Event.DataContentType())
	}
	d, _ = st.DeadLetter(context.Background(), st.order[3])
	if d.Code != 0 || d.Destination != "" || d.ID != bank.DeadLetterID(foreign.Source(), "foreign", "") {
		t.Fatalf("an event without error extensions: %+v", d.DeadLetter)
	}
}

func request(typ, data string) event.Event {
	e := event.New()
	e.SetID("req-" + fmt.Sprint(time.Now().UnixNano()))
	e.SetSource("my-pipeline")
	e.SetType(typ)
	_ = e.SetData(event.ApplicationJSON, []byte(data))
	return e
}

// TestReplay: the original event goes to the broker again, with its id, source, type,
// data and own extensions, without the broker's; each replay sends again and is recorded.
func TestReplay(t *testing.T) {
	s, st, sk := newStep(t)
	e := original("e1", events.VolumeBackup, `{"checkpoint":"c1"}`)
	handle(t, s, deadLetter(e, "http://back-up-volume", 503, "down", t0))
	id := st.order[0]
	for n := 1; n <= 2; n++ {
		r := handle(t, s, request(events.DeadLetterReplay, `{"deadletter":"`+id+`"}`))
		var out events.DeadLetterReplayedResult
		if r.Type() != events.DeadLetterReplayed || r.DataAs(&out) != nil || out.DeadLetter != id || out.Event.ID != "e1" || out.ReplayedAt.IsZero() {
			t.Fatalf("reply %v", r)
		}
		if len(sk.sent) != n {
			t.Fatalf("replay %d: %d events sent", n, len(sk.sent))
		}
		got := sk.sent[n-1]
		if got.ID() != e.ID() || got.Source() != e.Source() || got.Type() != e.Type() || string(got.Data()) != string(e.Data()) ||
			!got.Time().Equal(e.Time()) {
			t.Fatalf("replayed %v, want %v", got, e)
		}
		if ext := got.Extensions(); len(ext) != 1 || ext[events.ExtFlow] != events.FlowProtect {
			t.Fatalf("replayed extensions %v, want only %s", ext, events.ExtFlow)
		}
		d, _ := st.DeadLetter(context.Background(), id)
		if len(d.Replays) != n || !d.Replays[n-1].Equal(out.ReplayedAt) {
			t.Fatalf("replays %v", d.Replays)
		}
	}
}

func TestErrors(t *testing.T) {
	s, st, sk := newStep(t)
	handle(t, s, deadLetter(original("e1", events.VolumeBackup, `{}`), "http://x", 500, "", t0))
	id := st.order[0]
	for _, tt := range []struct {
		name       string
		e          event.Event
		setup      func()
		wantStatus int
		wantErr    string
	}{
		{"unknown id", request(events.DeadLetterReplay, `{"deadletter":"3f1a2b4c-0000-5000-8000-000000000000"}`), nil, 400, "does not exist"},
		{"malformed id", request(events.DeadLetterReplay, `{"deadletter":"../x"}`), nil, 400, "/deadletter"},
		{"broker down on replay", request(events.DeadLetterReplay, `{"deadletter":"`+id+`"}`), func() { sk.err = errors.New("connection refused") }, 500, "connection refused"},
		{"bank down on record", deadLetter(original("e2", events.VolumeBackup, `{}`), "http://x", 500, "", t0), func() { st.err = errors.New("swift: 503") }, 500, "record dead letter"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			_, err := s.Handle(testContext(t), tt.e)
			if got := function.StatusOf(err); got != tt.wantStatus || !strings.Contains(fmt.Sprint(err), tt.wantErr) {
				t.Fatalf("status %d (%v), want %d with %q", got, err, tt.wantStatus, tt.wantErr)
			}
		})
	}
	if d := st.letters[id]; len(d.Replays) != 0 {
		t.Fatalf("a replay that was not sent is recorded: %v", d.Replays)
	}
}

func TestDecodeErrorData(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct{ in, want string }{
		{b64("checkpoint abc does not exist"), "checkpoint abc does not exist"},
		{b64("checkpoint abc does not exist")[:10], "checkp"}, // cut in a group: its whole groups
		{"", ""},
		{"plain text, not base64!", "plain text, not base64!"},
		{b64("bad \xff byte"), "bad \uFFFD byte"},
	} {
		if got := DecodeErrorData(tt.in); got != tt.want {
			t.Errorf("DecodeErrorData(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestOverHTTP runs the step behind the function runtime with AcceptAny and the
// catalog's validator, as a broker reaches it: a dead letter with data that matches no
// schema is recorded (202), a list request is answered, a replay of an unknown id is 400.
func TestOverHTTP(t *testing.T) {
	s, st, _ := newStep(t)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	srv := function.NewServer(events.FnDeadLetters, Accepts, s, v, function.ServerOptions{AcceptAny: true})
	post := func(typ, data string, ext map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(data))
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-id", "id-"+typ)
		r.Header.Set("ce-source", "test")
		r.Header.Set("ce-type", typ)
		r.Header.Set("content-type", "application/json")
		for k, v := range ext {
			r.Header.Set("ce-"+k, v)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	w := post(events.PodShow, `{"pod":42}`, map[string]string{events.ExtErrorDest: "http://list-pods", events.ExtErrorCode: "400",
		events.ExtErrorData: base64.StdEncoding.EncodeToString([]byte("/pod: got number, want string")), events.ExtArrivalTime: "2026-03-01T11:00:00Z"})
	if w.Code != http.StatusAccepted || len(st.order) != 1 {
		t.Fatalf("dead letter: %d %s, %d records", w.Code, w.Body, len(st.order))
	}
	d := st.letters[st.order[0]]
	if d.Code != 400 || d.Error != "/pod: got number, want string" || !d.ArrivedAt.Equal(time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("recorded %+v", d.DeadLetter)
	}
	w = post(events.DeadLetterReplay, `{"deadletter":"3f1a2b4c-0000-5000-8000-000000000000"}`, nil)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "does not exist") {
		t.Fatalf("unknown replay: %d %s", w.Code, w.Body)
	}
	if len(st.order) != 1 {
		t.Fatalf("requests were recorded as dead letters: %d records", len(st.order))
	}
}

// listedIDs are the event ids of a page of dead letters, in order.
func listedIDs(p events.DeadLettersListedResult) (out []string) {
	for _, d := range p.DeadLetters {
		out = append(out, d.Event.ID)
	}
	return out
}
