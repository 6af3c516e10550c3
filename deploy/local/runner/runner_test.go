package runner_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestDeadLettersThroughTheBroker runs every function and the embedded broker with the
// Triggers of deploy/base, on the local stack, plus a Trigger whose subscriber answers
// 500 until it is fixed. Its event, after the Trigger's retries, reaches the dead-letters
// function and is recorded in the bank; so is a malformed request that a function of
// deploy/base answers 400. Once the subscriber is fixed, a replay request sent to the
// broker delivers the original event to it. A replay of an unknown id is answered 400
// and ends up recorded as a dead letter itself, once.
func TestDeadLettersThroughTheBroker(t *testing.T) {
	st := stacktest.Load(t)
	container := "podguard-test-dl-" + uuid.NewString()[:8]
	for k, v := range map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": container, "LOG_LEVEL": "warn"} {
		t.Setenv(k, v)
	}
	st.RemoveContainerAtEnd(t, "keystone", container)

	var fixed atomic.Bool
	delivered := make(chan event.Event, 16)
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !fixed.Load() {
			http.Error(w, "not yet", http.StatusInternalServerError)
			return
		}
		delivered <- *e
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sub.Close()

	start := time.Now()
	ctx := context.Background()
	r, err := runner.Start(ctx, runner.Options{
		Triggers: filepath.Join(stacktest.RepoRoot(t), "deploy", "base"),
		Access:   &runner.Access{Roles: filepath.Join(stacktest.RepoRoot(t), "deploy", "roles")},
		Observers: []broker.Trigger{{Name: "flaky-probe", Filter: map[string]string{"type": "com.example.probe"},
			Subscriber: broker.Destination{Ref: "flaky"},
			Delivery: broker.Delivery{Retry: 2, BackoffPolicy: broker.BackoffLinear, BackoffDelay: 10 * time.Millisecond,
				DeadLetterSink: &broker.Destination{Ref: events.FnDeadLetters}}}},
		ObserverURLs: map[string]string{"flaky": sub.URL},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	t.Logf("runner started in %s", time.Since(start).Round(time.Millisecond))
	api := "/api/deadletters"

	start = time.Now()
	probe := newEvent(t, "com.example.probe", `{"n":1}`)
	probe.SetExtension(events.ExtFlow, events.FlowProtect)
	send(t, r.IngressURL, probe)
	send(t, r.IngressURL, newEvent(t, events.PodsList, `{"scope":{"namespaces":"default"}}`))
	page := awaitList(t, r, api, func(p events.DeadLettersListedResult) bool { return len(p.DeadLetters) == 2 })
	t.Logf("2 dead letters recorded in %s", time.Since(start).Round(time.Millisecond))
	byType := map[string]events.DeadLetterSummary{}
	for _, d := range page.DeadLetters {
		byType[d.Event.Type] = d
	}
	p, bad := byType["com.example.probe"], byType[events.PodsList]
	if p.ID != bank.DeadLetterID(probe.Source(), probe.ID(), sub.URL) || p.Code != 500 || p.Destination != sub.URL ||
		!strings.Contains(p.Error, "not yet") || p.Failures != 1 {
		t.Fatalf("the probe's dead letter: %+v", p)
	}
	if bad.Code != 400 || !strings.Contains(bad.Error, "/scope/namespaces") || bad.Destination != r.Functions[events.FnListPods] {
		t.Fatalf("the malformed request's dead letter: %+v", bad)
	}

	fixed.Store(true)
	start = time.Now()
	send(t, r.IngressURL, newEvent(t, events.DeadLetterReplay, `{"deadletter":"`+p.ID+`"}`))
	select {
	case e := <-delivered:
		if e.ID() != probe.ID() || e.Source() != probe.Source() || string(e.Data()) != `{"n":1}` ||
			e.Extensions()[events.ExtFlow] != events.FlowProtect || e.Extensions()[events.ExtErrorDest] != nil {
			t.Fatalf("replayed %v", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the replayed event did not reach its subscriber")
	}
	t.Logf("replayed and delivered in %s", time.Since(start).Round(time.Millisecond))
	awaitList(t, r, api, func(page events.DeadLettersListedResult) bool {
		for _, d := range page.DeadLetters {
			if d.ID == p.ID {
				return d.Replays == 1 && !d.LastReplayedAt.IsZero()
			}
		}
		return false
	})

	unknown := newEvent(t, events.DeadLetterReplay, `{"deadletter":"3f1a2b4c-0000-5000-8000-000000000000"}`)
	send(t, r.IngressURL, unknown)
	page = awaitList(t, r, api, func(p events.DeadLettersListedResult) bool { return len(p.DeadLetters) == 3 })
	if d := page.DeadLetters[0]; d.Event.ID != unknown.ID() || d.Code != 400 || !strings.Contains(d.Error, "does not exist") || d.Failures != 1 {
		t.Fatalf("the unknown replay's dead letter: %+v", d)
	}
	if got := r.Broker.Stats().DeadLettered; got != 3 {
		t.Fatalf("the broker dead-lettered %d deliveries, want 3", got)
	}
}

func newEvent(t *testing.T, typ, data string) event.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetSource("runner-test")
	e.SetType(typ)
	e.SetTime(time.Now().UTC())
	if err := e.SetData(cloudevents.ApplicationJSON, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return e
}

func send(t *testing.T, url string, e event.Event) {
	t.Helper()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	if res := c.Send(cloudevents.ContextWithTarget(context.Background(), url), e); !cloudevents.IsACK(res) {
		t.Fatalf("send %s: %v", e.Type(), res)
	}
}

// awaitList polls the dead letters' read API until cond holds, for at most 30 s.
func awaitList(t *testing.T, r *runner.Runner, path string, cond func(events.DeadLettersListedResult) bool) events.DeadLettersListedResult {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last events.DeadLettersListedResult
	for {
		resp, err := r.Read(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		last = events.DeadLettersListedResult{}
		err = json.NewDecoder(resp.Body).Decode(&last)
		resp.Body.Close()
		if err == nil && cond(last) {
			return last
		}
		select {
		case <-deadline:
			t.Fatalf("dead letters: condition not met within 30s; last %+v (%v)", last, err)
		case <-tick.C:
		}
	}
}
