package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/podguard/podguard/shared/function"
)

// The broker is what functions in the same process send to.
var _ function.Sender = (*Broker)(nil)

// deadline bounds every wait of these tests.
const deadline = 10 * time.Second

// sub is a subscriber: it reports every event it gets and answers with respond.
type sub struct {
	*httptest.Server
	got     chan event.Event
	headers chan http.Header
	calls   atomic.Int32
}

type responder func(n int, e event.Event, w http.ResponseWriter, r *http.Request)

func newSub(t *testing.T, respond responder) *sub {
	t.Helper()
	s := &sub{got: make(chan event.Event, 1000), headers: make(chan http.Header, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n := int(s.calls.Add(1))
		s.headers <- r.Header.Clone()
		s.got <- *e
		respond(n, *e, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func status(code int, body string) responder {
	return func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

func (s *sub) next(t *testing.T) event.Event {
	t.Helper()
	select {
	case e := <-s.got:
		return e
	case <-time.After(deadline):
		t.Fatalf("no event reached %s", s.URL)
		return event.Event{}
	}
}

// waits stands in for the backoff wait: it records what it is asked and returns at once.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.d)
}

func start(t *testing.T, triggers []Trigger, resolve map[string]string, rec *Recorder, o Options) (*Broker, *waits) {
	t.Helper()
	w := &waits{}
	if o.Sleep == nil {
		o.Sleep = w.sleep
	}
	b, err := New(triggers, resolve, rec, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBroker(t, b) })
	return b, w
}

func closeBroker(t *testing.T, b *Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

func trig(name, typ, fn string, d Delivery) Trigger {
	return Trigger{Name: name, Filter: map[string]string{"type": typ}, Subscriber: Destination{Ref: fn}, Delivery: d}
}

func newEvent(id, typ string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("test/source")
	e.SetType(typ)
	_ = e.SetData(event.ApplicationJSON, map[string]string{"id": id})
	return e
}

func send(t *testing.T, b *Broker, e event.Event) {
	t.Helper()
	if err := b.Send(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

func TestMatches(t *testing.T) {
	e := newEvent("1", "dev.podguard.pods.listed")
	e.SetSubject("default:web")
	e.SetExtension("podguardflow", "protect")
	e.SetExtension("podguardattempt", 3)
	tests := []struct {
		name   string
		filter map[string]string
		want   bool
	}{
		{"empty filter matches all", nil, true},
		{"type", map[string]string{"type": "dev.podguard.pods.listed"}, true},
		{"other type", map[string]string{"type": "dev.podguard.pods.list"}, false},
		{"type and extension", map[string]string{"type": "dev.podguard.pods.listed", "podguardflow": "protect"}, true},
		{"extension differs", map[string]string{"type": "dev.podguard.pods.listed", "podguardflow": "restore"}, false},
		{"extension missing", map[string]string{"podguardcheckpoint": "c1"}, false},
		{"empty value matches any", map[string]string{"podguardflow": ""}, true},
		{"empty value matches absent", map[string]string{"podguardcheckpoint": ""}, true},
		{"source", map[string]string{"source": "test/source"}, true},
		{"subject", map[string]string{"subject": "default:web"}, true},
		{"integer extension as its canonical string", map[string]string{"podguardattempt": "3"}, true},
		{"no prefix match", map[string]string{"type": "dev.podguard"}, false},
		{"specversion", map[string]string{"specversion": "1.0"}, true},
		{"dataschema absent", map[string]string{"dataschema": "x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matches(tt.filter, e); got != tt.want {
				t.Fatalf("matches(%v) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestIngress(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{})}, map[string]string{"fn": s.URL}, nil, Options{})
	binary := func(mod func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"a":1}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("ce-specversion", "1.0")
		r.Header.Set("ce-id", "id-1")
		r.Header.Set("ce-source", "test")
		r.Header.Set("ce-type", "dev.example.a")
		if mod != nil {
			mod(r)
		}
		return r
	}
	structured := func(body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/cloudevents+json")
		return r
	}
	tests := []struct {
		name     string
		req      *http.Request
		want     int
		wantBody string
	}{
		{"binary", binary(nil), 202, ""},
		{"structured", structured(`{"specversion":"1.0","id":"2","source":"s","type":"dev.example.a","data":{"a":1}}`), 202, ""},
		{"unrouted is still accepted", binary(func(r *http.Request) { r.Header.Set("ce-type", "dev.example.none") }), 202, ""},
		{"missing id", binary(func(r *http.Request) { r.Header.Del("ce-id") }), 400, "id"},
		{"not a CloudEvent", httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello")), 400, "not a CloudEvent"},
		{"bad structured", structured(`{"specversion":"1.0"`), 400, "not a CloudEvent"},
		{"batch", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("[]"))
			r.Header.Set("Content-Type", "application/cloudevents-batch+json")
			return r
		}(), 400, "batched"},
		{"exhausted TTL", binary(func(r *http.Request) { r.Header.Set("ce-knativebrokerttl", "0") }), 400, "TTL"},
		{"bad TTL", binary(func(r *http.Request) { r.Header.Set("ce-knativebrokerttl", "many") }), 400, "knativebrokerttl"},
		{"too large", binary(func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(strings.Repeat("a", MaxEventBytes+1)))
		}), 413, "larger than"},
		{"GET", httptest.NewRequest(http.MethodGet, "/", nil), 405, "POST"},
		{"OPTIONS", httptest.NewRequest(http.MethodOptions, "/", nil), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			b.ServeHTTP(w, tt.req)
			if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Fatalf("answer %d %q, want %d containing %q", w.Code, w.Body.String(), tt.want, tt.wantBody)
			}
		})
	}
	closeBroker(t, b)
	if got := b.Stats(); got.Ingested != 3 || got.Unrouted != 1 || got.Delivered != 2 {
		t.Errorf("stats %+v, want 3 ingested, 1 unrouted, 2 delivered", got)
	}
	w := httptest.NewRecorder()
	b.ServeHTTP(w, binary(nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d, want 503", w.Code)
	}
	if err := b.Send(context.Background(), newEvent("late", "dev.example.a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
}

func TestDeliveryAndReply(t *testing.T) {
	a := newSub(t, func(_ int, e event.Event, w http.ResponseWriter, r *http.Request) {
		reply := newEvent("reply-of-"+e.ID(), "dev.example.reply")
		reply.SetExtension("podguardflow", "protect")
		_ = cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&reply), http.StatusOK, w)
	})
	c := newSub(t, status(http.StatusAccepted, ""))
	other := newSub(t, status(http.StatusAccepted, ""))
	triggers := []Trigger{
		trig("a-request", "dev.example.request", "a", Delivery{}),
		{Name: "c-reply", Filter: map[string]string{"type": "dev.example.reply", "podguardflow": "protect"}, Subscriber: Destination{Ref: "c"}},
		{Name: "other-restore", Filter: map[string]string{"type": "dev.example.reply", "podguardflow": "restore"}, Subscriber: Destination{Ref: "other"}},
	}
	b, _ := start(t, triggers, map[string]string{"a": a.URL, "c": c.URL, "other": other.URL}, nil, Options{})

	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(
		`{"specversion":"1.0","id":"r1","source":"test","type":"dev.example.request","datacontenttype":"application/json","data":{"x":1}}`))
	r.Header.Set("Content-Type", "application/cloudevents+json")
	b.ServeHTTP(w, r)
	if w.Code != http.StatusAccepted {
		t.Fatalf("ingress answered %d %s", w.Code, w.Body)
	}
	got, reqHeader := a.next(t), <-a.headers
	if got.ID() != "r1" || string(got.Data()) != `{"x":1}` {
		t.Errorf("subscriber got %s %s", got.ID(), got.Data())
	}
	if _, ok := got.Extensions()[ExtTTL]; ok {
		t.Errorf("the TTL reached the subscriber")
	}
	if _, ok := got.Extensions()[ExtArrivalTime]; !ok {
		t.Errorf("no %s on the delivered event", ExtArrivalTime)
	}
	if reqHeader.Get("ce-id") != "r1" || reqHeader.Get("Prefer") != "reply" || reqHeader.Get("Content-Type") != "application/json" {
		t.Errorf("not a binary-mode delivery asking for a reply: %v", reqHeader)
	}
	reply := c.next(t)
	if reply.ID() != "reply-of-r1" || reply.Type() != "dev.example.reply" {
		t.Errorf("reply subscriber got %s %s", reply.Type(), reply.ID())
	}
	closeBroker(t, b)
	if n := other.calls.Load(); n != 0 {
		t.Errorf("the restore trigger got %d events", n)
	}
	if got := b.Stats(); got.Ingested != 2 || got.Delivered != 2 || got.DeadLettered != 0 || got.Pending != 0 {
		t.Errorf("stats %+v", got)
	}
}

func TestRetries(t *testing.T) {
	exp := Delivery{Retry: 5, BackoffPolicy: BackoffExponential, BackoffDelay: 500 * time.Millisecond}
	lin := Delivery{Retry: 3, BackoffPolicy: BackoffLinear, BackoffDelay: time.Second}
	two := Delivery{Retry: 2, BackoffPolicy: BackoffExponential, BackoffDelay: time.Second}
	tests := []struct {
		name         string
		delivery     Delivery
		respond      responder
		wantAttempts int
		wantWaits    []time.Duration
		wantCode     int // of the dead letter; 0: delivered
		wantData     string
	}{
		{"503 exponential", exp, status(503, "busy"), 6,
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}, 503, "busy"},
		{"500 linear", lin, status(500, "boom"), 4, []time.Duration{0, time.Second, 2 * time.Second}, 500, "boom"},
		{"400 is final", exp, status(400, "checkpoint abc does not exist"), 1, nil, 400, "checkpoint abc does not exist"},
		{"404 retried", two, status(404, ""), 3, []time.Duration{time.Second, 2 * time.Second}, 404, ""},
		{"408 retried", two, status(408, ""), 3, []time.Duration{time.Second, 2 * time.Second}, 408, ""},
		{"409 retried", two, status(409, ""), 3, []time.Duration{time.Second, 2 * time.Second}, 409, ""},
		{"429 retried", two, status(429, ""), 3, []time.Duration{time.Second, 2 * time.Second}, 429, ""},
		{"502 retried", two, status(502, ""), 3, []time.Duration{time.Second, 2 * time.Second}, 502, ""},
		{"401 final", two, status(401, ""), 1, nil, 401, ""},
		{"403 final", two, status(403, ""), 1, nil, 403, ""},
		{"413 final", two, status(413, ""), 1, nil, 413, ""},
		{"422 final", two, status(422, ""), 1, nil, 422, ""},
		{"302 final, not followed", two, func(_ int, _ event.Event, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, 1, nil, 302, ""},
		{"no retries", Delivery{}, status(503, ""), 1, nil, 503, ""},
		{"recovers on the third attempt", two, func(n int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(503)
				return
			}
			w.WriteHeader(202)
		}, 3, []time.Duration{time.Second, 2 * time.Second}, 0, ""},
		{"a non-event answer is 502", Delivery{Retry: 1}, status(200, "hello"), 2, []time.Duration{0}, 502, "neither empty nor a CloudEvent"},
		{"a malformed reply event is 502", Delivery{}, func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("ce-specversion", "1.0")
			w.Header().Set("ce-type", "dev.example.reply")
			w.WriteHeader(200)
		}, 1, nil, 502, "reply event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSub(t, tt.respond)
			dls := newSub(t, status(202, ""))
			d := tt.delivery
			d.DeadLetterSink = &Destination{Ref: "dead-letters"}
			b, w := start(t, []Trigger{trig("t", "dev.example.a", "fn", d)},
				map[string]string{"fn": s.URL, "dead-letters": dls.URL}, nil, Options{})
			send(t, b, newEvent("e1", "dev.example.a"))
			closeBroker(t, b)

			if n := int(s.calls.Load()); n != tt.wantAttempts {
				t.Errorf("%d attempts, want %d", n, tt.wantAttempts)
			}
			if got := w.all(); !slices.Equal(got, tt.wantWaits) {
				t.Errorf("backoff waits %v, want %v", got, tt.wantWaits)
			}
			stats := b.Stats()
			if stats.Retried != uint64(len(tt.wantWaits)) {
				t.Errorf("stats.Retried = %d, want %d", stats.Retried, len(tt.wantWaits))
			}
			letters := b.Recorder().DeadLetters()
			if tt.wantCode == 0 {
				if len(letters) != 0 || stats.DeadLettered != 0 || stats.Delivered != 1 || dls.calls.Load() != 0 {
					t.Errorf("delivered event dead-lettered: %+v, stats %+v", letters, stats)
				}
				return
			}
			if stats.DeadLettered != 1 || stats.Delivered != 0 {
				t.Errorf("stats %+v, want 1 dead-lettered", stats)
			}
			dead := dls.next(t)
			if dead.ID() != "e1" || string(dead.Data()) != `{"id":"e1"}` {
				t.Errorf("dead letter %s %s is not the event", dead.ID(), dead.Data())
			}
			ext := dead.Extensions()
			if fmt.Sprint(ext[ExtErrorCode]) != fmt.Sprint(tt.wantCode) || fmt.Sprint(ext[ExtErrorDest]) != s.URL {
				t.Errorf("dead letter extensions %v, want code %d and dest %s", ext, tt.wantCode, s.URL)
			}
			data, err := base64.StdEncoding.DecodeString(fmt.Sprint(ext[ExtErrorData]))
			if err != nil || !strings.Contains(string(data), tt.wantData) {
				t.Errorf("%s decodes to %q (%v), want it to contain %q", ExtErrorData, data, err, tt.wantData)
			}
			if len(letters) != 1 || letters[0].Code != tt.wantCode || letters[0].Attempts != tt.wantAttempts ||
				letters[0].Trigger != "t" || letters[0].Destination != s.URL || letters[0].Event.ID() != "e1" {
				t.Errorf("recorded %+v", letters)
			}
		})
	}
}

func TestConnectionErrorIsRetried(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	b, w := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{Retry: 2})}, map[string]string{"fn": gone.URL}, nil, Options{})
	send(t, b, newEvent("e1", "dev.example.a"))
	closeBroker(t, b)
	if got := w.all(); len(got) != 2 {
		t.Errorf("waits %v, want 2 retries", got)
	}
	letters := b.Recorder().DeadLetters()
	if len(letters) != 1 || letters[0].Code != 500 || !strings.HasPrefix(letters[0].Response, "dispatch error: ") {
		t.Fatalf("recorded %+v", letters)
	}
	data, _ := base64.StdEncoding.DecodeString(fmt.Sprint(letters[0].Event.Extensions()[ExtErrorData]))
	if !strings.HasPrefix(string(data), "dispatch error: ") {
		t.Errorf("%s = %q", ExtErrorData, data)
	}
}

func TestErrorDataIsTruncated(t *testing.T) {
	body := strings.Repeat("0123456789", 200)
	s := newSub(t, status(400, body))
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{})}, map[string]string{"fn": s.URL}, nil, Options{})
	send(t, b, newEvent("e1", "dev.example.a"))
	closeBroker(t, b)
	letters := b.Recorder().DeadLetters()
	if len(letters) != 1 {
		t.Fatalf("recorded %+v", letters)
	}
	got := fmt.Sprint(letters[0].Event.Extensions()[ExtErrorData])
	full := base64.StdEncoding.EncodeToString([]byte(body))
	if len(got) != MaxErrorData || !strings.HasPrefix(full, got) {
		t.Errorf("%s has %d characters, want the first %d of the body's base64", ExtErrorData, len(got), MaxErrorData)
	}
	if len(letters[0].Response) != MaxErrorData {
		t.Errorf("recorded response has %d bytes, want %d", len(letters[0].Response), MaxErrorData)
	}
}

// TestReplyLoop: a subscriber that answers every event with one its own Trigger matches
// is stopped by the TTL.
func TestReplyLoop(t *testing.T) {
	s := newSub(t, func(n int, e event.Event, w http.ResponseWriter, r *http.Request) {
		reply := newEvent(fmt.Sprintf("loop-%d", n), e.Type())
		_ = cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&reply), http.StatusOK, w)
	})
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{Retry: 3})}, map[string]string{"fn": s.URL}, nil, Options{})
	e := newEvent("e1", "dev.example.a")
	e.SetExtension(ExtTTL, 3)
	send(t, b, e)
	closeBroker(t, b)
	if n := s.calls.Load(); n != 3 {
		t.Errorf("%d deliveries, want 3", n)
	}
	letters := b.Recorder().DeadLetters()
	if len(letters) != 1 || letters[0].Code != 400 || letters[0].Event.ID() != "loop-2" || !strings.Contains(letters[0].Response, "TTL") {
		t.Errorf("recorded %+v", letters)
	}
}

func TestReplayAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead-letters.jsonl")
	var healthy atomic.Bool
	s := newSub(t, func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			w.WriteHeader(202)
			return
		}
		http.Error(w, "volume service down", 503)
	})
	triggers := []Trigger{trig("t", "dev.example.a", "fn", Delivery{Retry: 1, DeadLetterSink: &Destination{Ref: "dead-letters"}})}
	resolve := map[string]string{"fn": s.URL} // no dead-letters service: the recorder stands in

	rec, err := NewRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := start(t, triggers, resolve, rec, Options{})
	send(t, b, newEvent("e1", "dev.example.a"))
	send(t, b, newEvent("e2", "dev.example.a"))
	closeBroker(t, b)
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	letters, err := ReadDeadLetters(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 2 {
		t.Fatalf("read %d dead letters, want 2", len(letters))
	}
	for _, d := range letters {
		if d.Code != 503 || d.Attempts != 2 || d.Response != "volume service down\n" || d.Trigger != "t" {
			t.Errorf("read back %+v", d)
		}
	}
	for range 4 {
		s.next(t) // the failed attempts
	}

	healthy.Store(true)
	b2, _ := start(t, triggers, resolve, nil, Options{})
	if err := b2.Replay(context.Background(), letters...); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		e := s.next(t)
		ids = append(ids, e.ID())
		for _, ext := range []string{ExtErrorCode, ExtErrorDest, ExtErrorData} {
			if _, ok := e.Extensions()[ext]; ok {
				t.Errorf("replayed %s still carries %s", e.ID(), ext)
			}
		}
		if string(e.Data()) != fmt.Sprintf(`{"id":"%s"}`, e.ID()) {
			t.Errorf("replayed %s has data %s", e.ID(), e.Data())
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"e1", "e2"}) {
		t.Errorf("replayed %v", ids)
	}
	closeBroker(t, b2)
	if got := b2.Stats(); got.Delivered != 2 || got.DeadLettered != 0 {
		t.Errorf("stats after replay %+v", got)
	}
}

func TestConcurrentDelivery(t *testing.T) {
	const n = 300
	var seen sync.Map
	var dup atomic.Int32
	s := newSub(t, func(_ int, e event.Event, w http.ResponseWriter, _ *http.Request) {
		if _, loaded := seen.LoadOrStore(e.ID(), true); loaded {
			dup.Add(1)
		}
		w.WriteHeader(202)
	})
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{})}, map[string]string{"fn": s.URL}, nil, Options{Workers: 8})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.Send(context.Background(), newEvent(fmt.Sprint(i), "dev.example.a")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	closeBroker(t, b)
	if got := b.Stats(); got.Ingested != n || got.Delivered != n || got.Pending != 0 {
		t.Errorf("stats %+v, want %d ingested and delivered", got, n)
	}
	if d := dup.Load(); d != 0 {
		t.Errorf("%d duplicates without failures", d)
	}
}

func TestCloseWaitsForDeliveries(t *testing.T) {
	release := make(chan struct{})
	s := newSub(t, func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
		<-release
		w.WriteHeader(202)
	})
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{})}, map[string]string{"fn": s.URL}, nil, Options{Workers: 2})
	for i := range 3 {
		send(t, b, newEvent(fmt.Sprint(i), "dev.example.a"))
	}
	s.next(t) // a delivery is in flight
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		closed <- b.Close(ctx)
	}()
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline):
		t.Fatal("Close did not return")
	}
	if got := b.Stats(); got.Delivered != 3 {
		t.Errorf("Close returned with %d of 3 delivered", got.Delivered)
	}
}

// TestCloseTakesWhatSubscribersSendWhileDraining: a clean stop loses nothing. An event a
// subscriber sends while it handles a delivery that Close waits for is taken and
// delivered before Close returns; one sent from outside is refused.
func TestCloseTakesWhatSubscribersSendWhileDraining(t *testing.T) {
	release := make(chan struct{})
	var b *Broker
	outside := make(chan error, 1)
	first := newSub(t, func(_ int, e event.Event, w http.ResponseWriter, r *http.Request) {
		<-release
		next := newEvent("after-"+e.ID(), "dev.example.b")
		if err := b.SendFromSubscriber(r.Context(), next, ""); err != nil {
			w.WriteHeader(500)
			return
		}
		outside <- b.Send(r.Context(), newEvent("outside-"+e.ID(), "dev.example.b"))
		w.WriteHeader(202)
	})
	second := newSub(t, func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(202) })
	b, _ = start(t, []Trigger{trig("t1", "dev.example.a", "first", Delivery{}), trig("t2", "dev.example.b", "second", Delivery{})},
		map[string]string{"first": first.URL, "second": second.URL}, nil, Options{Workers: 2})
	send(t, b, newEvent("1", "dev.example.a"))
	first.next(t) // in flight
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		closed <- b.Close(ctx)
	}()
	until := time.Now().Add(deadline)
	for b.Send(context.Background(), newEvent("probe", "dev.example.c")) == nil { // Close has begun once sends are refused
		if time.Now().After(until) {
			t.Fatal("Close never began")
		}
		runtime.Gosched()
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v (what the subscriber sent while draining was lost)", err)
		}
	case <-time.After(deadline):
		t.Fatal("Close did not return")
	}
	if e := second.next(t); e.ID() != "after-1" {
		t.Fatalf("delivered %s, want after-1", e.ID())
	}
	if err := <-outside; !errors.Is(err, ErrClosed) {
		t.Fatalf("a send from outside while draining: %v, want ErrClosed", err)
	}
	if got := b.Stats(); got.Delivered != 2 || got.Pending != 0 {
		t.Errorf("stats %+v, want 2 delivered, none pending", got)
	}
}

func TestCloseAbandonsToTheRecorder(t *testing.T) {
	release := make(chan struct{})
	s := newSub(t, func(_ int, _ event.Event, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // before the server closes
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{Retry: 5})}, map[string]string{"fn": s.URL}, nil, Options{Workers: 1})
	send(t, b, newEvent("in-flight", "dev.example.a"))
	send(t, b, newEvent("queued", "dev.example.a"))
	s.next(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	var ids []string
	for _, d := range b.Recorder().DeadLetters() {
		ids = append(ids, d.Event.ID())
		if d.Code != 500 || !strings.Contains(d.Response, "dispatch error") {
			t.Errorf("abandoned %s recorded as %d %q", d.Event.ID(), d.Code, d.Response)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"in-flight", "queued"}) {
		t.Errorf("recorded %v, want both events", ids)
	}
	if got := b.Stats(); got.DeadLettered != 2 || got.Pending != 0 {
		t.Errorf("stats %+v", got)
	}
}

func TestFull(t *testing.T) {
	release := make(chan struct{})
	s := newSub(t, func(_ int, _ event.Event, w http.ResponseWriter, _ *http.Request) {
		<-release
		w.WriteHeader(202)
	})
	b, _ := start(t, []Trigger{trig("t", "dev.example.a", "fn", Delivery{})}, map[string]string{"fn": s.URL}, nil, Options{Workers: 1, MaxPending: 1})
	send(t, b, newEvent("1", "dev.example.a"))
	if err := b.Send(context.Background(), newEvent("2", "dev.example.a")); !errors.Is(err, ErrFull) {
		t.Errorf("Send = %v, want ErrFull", err)
	}
	e := newEvent("3", "dev.example.a")
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), r); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	b.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("ingress answered %d %v, want 503 with Retry-After", w.Code, w.Header())
	}
	close(release)
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		trigger Trigger
		resolve map[string]string
		wantErr []string
	}{
		{"resolved", trig("t", "x", "fn", Delivery{}), map[string]string{"fn": "http://127.0.0.1:1"}, nil},
		{"uri", Trigger{Name: "t", Subscriber: Destination{URI: "http://127.0.0.1:1/x"}}, nil, nil},
		{"unknown subscriber", trig("t", "x", "ghost", Delivery{}), map[string]string{"fn": "http://127.0.0.1:1"}, []string{`trigger "t"`, `"ghost"`}},
		{"relative subscriber uri", Trigger{Name: "t", Subscriber: Destination{URI: "/x"}}, nil, []string{`trigger "t"`, "absolute"}},
		{"bad address", trig("t", "x", "fn", Delivery{}), map[string]string{"fn": "127.0.0.1:1"}, []string{`trigger "t"`, `address "127.0.0.1:1"`}},
		{"unknown dead-letter service: the recorder only", trig("t", "x", "fn", Delivery{DeadLetterSink: &Destination{Ref: "dead-letters"}}),
			map[string]string{"fn": "http://127.0.0.1:1"}, nil},
		{"bad dead-letter uri", trig("t", "x", "fn", Delivery{DeadLetterSink: &Destination{URI: "dead"}}),
			map[string]string{"fn": "http://127.0.0.1:1"}, []string{`trigger "t"`, "dead-letter sink"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New([]Trigger{tt.trigger}, tt.resolve, nil, Options{})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				closeBroker(t, b)
				return
			}
			if err == nil {
				closeBroker(t, b)
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	d, err := resolveDestination(Destination{Ref: "fn", URI: "/hooks/a"}, map[string]string{"fn": "http://127.0.0.1:1/base/"})
	if err != nil || d != "http://127.0.0.1:1/hooks/a" {
		t.Errorf("ref with uri resolved to %q, %v", d, err)
	}
}

func TestRunTicker(t *testing.T) {
	s := newSub(t, status(202, ""))
	b, _ := start(t, []Trigger{trig("choreographer-ping", PingSourceType, "choreographer", Delivery{})},
		map[string]string{"choreographer": s.URL}, nil, Options{})
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(1700000000+clock.Add(60), 0) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.RunTicker(ctx, time.Millisecond, PingTick("podguard", "podguard-tick", now)) }()
	ids := map[string]bool{}
	for range 3 {
		e := s.next(t)
		ids[e.ID()] = true
		if e.Type() != PingSourceType || e.Source() != "/apis/v1/namespaces/podguard/pingsources/podguard-tick" ||
			string(e.Data()) != "{}" || e.DataContentType() != event.ApplicationJSON {
			t.Errorf("tick %s %s %s %q", e.Type(), e.Source(), e.DataContentType(), e.Data())
		}
	}
	if len(ids) != 3 {
		t.Errorf("tick ids repeat: %v", ids)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunTicker = %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("RunTicker did not stop")
	}
	if err := b.RunTicker(ctx, 0, nil); err == nil {
		t.Error("a zero interval is no error")
	}
}

func TestDefaultSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if err := sleep(ctx, 0); err != nil {
		t.Errorf("sleep(0) = %v", err)
	}
	cancel()
	if err := sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("sleep on an ended context = %v, want context.Canceled", err)
	}
}

// TestDeadLetterSinkFailing: a sink that fails too gets the Trigger's retries, and the
// dead letter stays in the recorder.
func TestDeadLetterSinkFailing(t *testing.T) {
	s := newSub(t, status(400, "bad"))
	dls := newSub(t, status(500, "sink down"))
	d := Delivery{Retry: 1, BackoffPolicy: BackoffExponential, BackoffDelay: time.Second, DeadLetterSink: &Destination{Ref: "sink", URI: "/dead"}}
	b, w := start(t, []Trigger{trig("t", "dev.example.a", "fn", d)}, map[string]string{"fn": s.URL, "sink": dls.URL}, nil, Options{})
	send(t, b, newEvent("e1", "dev.example.a"))
	closeBroker(t, b)
	if n := dls.calls.Load(); n != 2 {
		t.Errorf("sink got %d attempts, want 2", n)
	}
	if h := <-dls.headers; h.Get("ce-knativeerrorcode") != "400" {
		t.Errorf("sink got %v", h)
	}
	if got := w.all(); !slices.Equal(got, []time.Duration{time.Second}) {
		t.Errorf("waits %v", got)
	}
	if got := b.Stats(); got.DeadLettered != 1 || got.Retried != 1 || len(b.Recorder().DeadLetters()) != 1 {
		t.Errorf("stats %+v, recorded %d", got, len(b.Recorder().DeadLetters()))
	}
}

// TestFailingSinkThatIsItsOwnSubscriber: the dead-letters function is the subscriber of
// its own Triggers and their dead-letter sink. When it fails, its request is retried,
// dead-lettered to it once with the Trigger's retries, and then kept by the recorder
// alone: a dead letter that fails at its sink is never dead-lettered again.
func TestFailingSinkThatIsItsOwnSubscriber(t *testing.T) {
	s := newSub(t, status(500, "bank down"))
	d := Delivery{Retry: 2, BackoffPolicy: BackoffLinear, BackoffDelay: time.Millisecond, DeadLetterSink: &Destination{Ref: "dead-letters"}}
	b, _ := start(t, []Trigger{trig("dead-letters-deadletters-list", "dev.podguard.deadletters.list", "dead-letters", d)},
		map[string]string{"dead-letters": s.URL}, nil, Options{})
	send(t, b, newEvent("e1", "dev.podguard.deadletters.list"))
	closeBroker(t, b)
	if n := s.calls.Load(); n != 6 {
		t.Errorf("%d deliveries, want 3 of the request and 3 of its dead letter", n)
	}
	var withError int
	for range 6 {
		if h := <-s.headers; h.Get("ce-knativeerrordest") != "" {
			withError++
		}
	}
	if withError != 3 {
		t.Errorf("%d deliveries carried knativeerrordest, want 3", withError)
	}
	if got := b.Stats(); got.DeadLettered != 1 || len(b.Recorder().DeadLetters()) != 1 {
		t.Errorf("stats %+v, recorded %d", got, len(b.Recorder().DeadLetters()))
	}
}
