package function

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/podguard/podguard/events"
)

// stepFunc adapts a function to Handler.
type stepFunc func(ctx context.Context, e event.Event) (*event.Event, error)

func (f stepFunc) Handle(ctx context.Context, e event.Event) (*event.Event, error) { return f(ctx, e) }

func echoStep(ctx context.Context, e event.Event) (*event.Event, error) {
	r := event.New()
	r.SetType(events.PodShown)
	_ = r.SetData(event.ApplicationJSON, map[string]any{"pod": "default:x", "found": false})
	return &r, nil
}

func newTestServer(t testing.TB, h Handler, o ServerOptions) *Server {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return NewServer("test-fn", []string{events.PodShow, events.PodsList}, h, v, o)
}

func binaryRequest(typ, data string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(data))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("ce-specversion", "1.0")
	r.Header.Set("ce-id", "id-1")
	r.Header.Set("ce-source", "test/source")
	r.Header.Set("ce-type", typ)
	return r
}

func structuredRequest(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/cloudevents+json")
	return r
}

func TestServeHTTP(t *testing.T) {
	okShow := `{"pod":"default:busybox-test"}`
	tests := []struct {
		name       string
		req        *http.Request
		step       stepFunc
		wantStatus int
		wantBody   string
	}{
		{"binary mode replies with the step's event", binaryRequest(events.PodShow, okShow), echoStep, 200, `"found":false`},
		{"structured mode", structuredRequest(`{"specversion":"1.0","id":"1","source":"s","type":"` + events.PodShow + `","datacontenttype":"application/json","data":` + okShow + `}`), echoStep, 200, `"pod":"default:x"`},
		{"no reply is 202", binaryRequest(events.PodShow, okShow), func(context.Context, event.Event) (*event.Event, error) { return nil, nil }, 202, ""},
		{"wrong type is 400 naming the accepted types", binaryRequest("dev.example.other", `{}`), echoStep, 400, "accepts dev.podguard.pod.show"},
		{"schema violation names the field", binaryRequest(events.PodShow, `{"pod":42}`), echoStep, 400, "/pod"},
		{"not JSON", binaryRequest(events.PodShow, `{"pod":`), echoStep, 400, "not valid JSON"},
		{"missing ce-id", func() *http.Request { r := binaryRequest(events.PodShow, okShow); r.Header.Del("ce-id"); return r }(), echoStep, 400, "id"},
		{"not a CloudEvent", httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello")), echoStep, 400, "not a CloudEvent"},
		{"batch mode refused", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("[]"))
			r.Header.Set("Content-Type", "application/cloudevents-batch+json")
			return r
		}(), echoStep, 400, "batched"},
		{"GET is 405", httptest.NewRequest(http.MethodGet, "/", nil), echoStep, 405, "POST"},
		{"permanent error is 400 with the reason", binaryRequest(events.PodShow, okShow), func(context.Context, event.Event) (*event.Event, error) {
			return nil, Permanent(errors.New("checkpoint abc does not exist"))
		}, 400, "checkpoint abc does not exist"},
		{"transient error is 500", binaryRequest(events.PodShow, okShow), func(context.Context, event.Event) (*event.Event, error) {
			return nil, fmt.Errorf("list pods: %w", errors.New("connection refused"))
		}, 500, "connection refused"},
		{"deadline is 503", binaryRequest(events.PodShow, okShow), func(context.Context, event.Event) (*event.Event, error) {
			return nil, fmt.Errorf("wait: %w", context.DeadlineExceeded)
		}, 503, ""},
		{"panic is 500, not a crash", binaryRequest(events.PodShow, okShow), func(context.Context, event.Event) (*event.Event, error) { panic("boom") }, 500, "internal error"},
		{"too large is 413", binaryRequest(events.PodShow, `{"pod":"`+strings.Repeat("a", MaxEventBytes)+`"}`), echoStep, 413, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.step, ServerOptions{})
			w := httptest.NewRecorder()
			s.ServeHTTP(w, tt.req)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.wantStatus, w.Body.String())
			}
			if !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Fatalf("body %q does not contain %q", w.Body.String(), tt.wantBody)
			}
		})
	}
}

func TestReplyAttributes(t *testing.T) {
	s := newTestServer(t, stepFunc(echoStep), ServerOptions{Overrides: map[string]any{"podguardtenant": "t1"}})
	do := func() *event.Event {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, binaryRequest(events.PodShow, `{"pod":"default:a"}`))
		e, err := cehttp.NewEventFromHTTPResponse(w.Result())
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	a, b := do(), do()
	if a.ID() == "" || a.ID() != b.ID() {
		t.Fatalf("reply ids must be deterministic per request: %q vs %q", a.ID(), b.ID())
	}
	if a.Source() != events.Source+"test-fn" || a.DataSchema() != events.SchemaURL(events.PodShown) {
		t.Fatalf("source %q dataschema %q", a.Source(), a.DataSchema())
	}
	if a.Extensions()["podguardtenant"] != "t1" {
		t.Fatalf("override extension missing: %v", a.Extensions())
	}
}

// TestAcceptAny: a server that accepts any event hands its step events of any type and
// data that match no schema; what is not a CloudEvent is still refused.
func TestAcceptAny(t *testing.T) {
	var got []event.Event
	step := stepFunc(func(_ context.Context, e event.Event) (*event.Event, error) {
		got = append(got, e)
		return nil, nil
	})
	s := newTestServer(t, step, ServerOptions{AcceptAny: true})
	for _, r := range []*http.Request{
		binaryRequest("dev.example.other", `{"anything":1}`),
		binaryRequest(events.PodShow, `{"pod":42}`),
		binaryRequest(events.PodShow, `{"pod":`),
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			t.Fatalf("%s: status %d, want 202; body %q", r.Header.Get("ce-type"), w.Code, w.Body.String())
		}
	}
	if len(got) != 3 || got[0].Type() != "dev.example.other" || string(got[2].Data()) != `{"pod":` {
		t.Fatalf("the step got %v", got)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello")))
	if w.Code != http.StatusBadRequest || len(got) != 3 {
		t.Fatalf("not a CloudEvent: status %d, step calls %d", w.Code, len(got))
	}
	// Without the option, the same events are refused before the step.
	s = newTestServer(t, step, ServerOptions{})
	w = httptest.NewRecorder()
	s.ServeHTTP(w, binaryRequest(events.PodShow, `{"pod":42}`))
	if w.Code != http.StatusBadRequest || len(got) != 3 {
		t.Fatalf("schema violation without AcceptAny: status %d, step calls %d", w.Code, len(got))
	}
}

type recordingSender struct {
	sent []event.Event
	err  error
}

func (r *recordingSender) Send(_ context.Context, e event.Event) error {
	r.sent = append(r.sent, e)
	return r.err
}

func TestReplyGoesToSink(t *testing.T) {
	sink := &recordingSender{}
	s := newTestServer(t, stepFunc(echoStep), ServerOptions{Sink: sink})
	w := httptest.NewRecorder()
	s.ServeHTTP(w, binaryRequest(events.PodShow, `{"pod":"default:a"}`))
	if w.Code != 202 || len(sink.sent) != 1 || sink.sent[0].Type() != events.PodShown {
		t.Fatalf("status %d, sent %v", w.Code, sink.sent)
	}
	// A sink that fails makes the request fail with 5xx, so the broker redelivers it.
	sink.err = errors.New("sink down")
	w = httptest.NewRecorder()
	s.ServeHTTP(w, binaryRequest(events.PodShow, `{"pod":"default:a"}`))
	if w.Code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", w.Code)
	}
}

func TestHTTPSenderDeliversBinaryEvent(t *testing.T) {
	got := make(chan *event.Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got <- e
		w.WriteHeader(202)
	}))
	defer srv.Close()
	s, err := NewHTTPSender(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	e := event.New()
	e.SetID("x")
	e.SetSource("s")
	e.SetType(events.PodShown)
	if err := s.Send(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.ID() != "x" {
			t.Fatalf("got %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event not delivered")
	}
}

func TestServeDrainsInFlightRequests(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := stepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
		close(entered)
		<-release
		return nil, nil
	})
	s := newTestServer(t, slow, ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", s, 10*time.Second, s.logger, ready) }()
	addr := (<-ready).String()

	status := make(chan int, 1)
	go func() {
		req := binaryRequest(events.PodShow, `{"pod":"default:a"}`)
		out, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", req.Body)
		out.Header = req.Header
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			status <- -1
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-entered
	cancel() // as SIGTERM does
	// Readiness fails while draining; the in-flight request still completes.
	deadline := time.After(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil { // listener already closed: Shutdown has begun
			break
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		select {
		case <-deadline:
			t.Fatal("readiness did not fail after shutdown began")
		default:
		}
	}
	close(release)
	if got := <-status; got != http.StatusAccepted {
		t.Fatalf("in-flight request got %d, want 202", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunReportsBadConfiguration(t *testing.T) {
	type cfg struct {
		Needed string `envconfig:"PODGUARD_TEST_NEEDED" required:"true"`
	}
	t.Setenv("PORT", "0")
	err := Run(context.Background(), Function[cfg]{Name: "x", New: func(context.Context, *cfg, Env) (Handler, error) { return nil, nil }}, nil)
	if err == nil || !strings.Contains(err.Error(), "PODGUARD_TEST_NEEDED") {
		t.Fatalf("want an error naming the variable, got %v", err)
	}
	t.Setenv("PORT", "eighty")
	err = Run(context.Background(), Function[struct{}]{Name: "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "PORT") {
		t.Fatalf("want an error naming PORT, got %v", err)
	}
}

// FuzzServeHTTP feeds arbitrary headers and bodies to the endpoint: it must answer with a
// 2xx or 4xx, never panic and never 500 (the step here never fails).
func FuzzServeHTTP(f *testing.F) {
	f.Add("application/json", "1.0", "id", "src", events.PodShow, []byte(`{"pod":"default:a"}`))
	f.Add("application/cloudevents+json", "", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"dev.podguard.pods.list","data":{"scope":{"pods":["a:b"]}}}`))
	f.Add("application/cloudevents+json", "", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"dev.podguard.pods.list","data_base64":"e30="}`))
	f.Add("application/cloudevents-batch+json", "", "", "", "", []byte(`[{}]`))
	f.Add("text/plain", "0.3", "id", "src", events.PodsList, []byte(`{"scope":{"allNamespaces":true}}`))
	f.Add("application/json", "1.0", "id", "src", events.PodsList, []byte(`{"scope":{"namespaces":[]}}`))
	f.Add("", "1.0", "", "", "", []byte{0xff, 0xfe})
	v, err := events.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer("fuzz", []string{events.PodShow, events.PodsList}, stepFunc(echoStep), v, ServerOptions{})
	f.Fuzz(func(t *testing.T, contentType, specversion, id, source, typ string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		for k, val := range map[string]string{"Content-Type": contentType, "ce-specversion": specversion, "ce-id": id, "ce-source": source, "ce-type": typ} {
			if val != "" && !strings.ContainsAny(val, "\r\n\x00") {
				r.Header.Set(k, val)
			}
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("status %d for content-type %q body %q: %s", w.Code, contentType, body, w.Body.String())
		}
		if w.Code >= 400 && strings.TrimSpace(w.Body.String()) == "" {
			t.Fatalf("status %d without a reason", w.Code)
		}
	})
}

// gateFunc adapts a function to Gate.
type gateFunc func(ctx context.Context, r *http.Request) (context.Context, error)

func (f gateFunc) Admit(ctx context.Context, r *http.Request) (context.Context, error) {
	return f(ctx, r)
}

type callerKey struct{}

// A gate refuses before the event is decoded or handled (401 says how to authenticate,
// 403 says what is missing), and what it admits runs in the context it returns.
func TestGate(t *testing.T) {
	gate := gateFunc(func(ctx context.Context, r *http.Request) (context.Context, error) {
		switch r.Header.Get("Authorization") {
		case "":
			return nil, Unauthenticated(errors.New("no bearer token"))
		case "Bearer viewer":
			return nil, Forbidden(errors.New("viewer may not create checkpoints.podguard.dev"))
		}
		return context.WithValue(ctx, callerKey{}, "admin"), nil
	})
	handled := 0
	step := stepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
		handled++
		if ctx.Value(callerKey{}) != "admin" {
			t.Errorf("the handler's context lacks the caller")
		}
		return echoStep(ctx, e)
	})
	s := newTestServer(t, step, ServerOptions{Gate: gate})
	for _, c := range []struct {
		auth, body string
		status     int
		reason     string
	}{
		{"", `{"pod":"default:x"}`, http.StatusUnauthorized, "no bearer token"},
		{"", `not json`, http.StatusUnauthorized, "no bearer token"},
		{"Bearer viewer", `{"pod":"default:x"}`, http.StatusForbidden, "may not create"},
		{"Bearer admin", `{"pod":"default:x"}`, http.StatusOK, ""},
	} {
		r := binaryRequest(events.PodShow, c.body)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.reason) {
			t.Errorf("%q %s: %d %q, want %d with %q", c.auth, c.body, w.Code, w.Body.String(), c.status, c.reason)
		}
		if c.status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("a 401 without WWW-Authenticate")
		}
	}
	if handled != 1 {
		t.Errorf("handled %d events, want 1 (the admitted one)", handled)
	}
}
