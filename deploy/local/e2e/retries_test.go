package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/stacktest"
)

// attempt is one delivery of an event to a function, as the function saw it.
type attempt struct {
	at   time.Time
	code int
}

// failing answers 503 to the deliveries of chosen events to one function, the first
// `times` of them (or all while times < 0), and records every delivery of them.
type failing struct {
	fn    string
	fixed atomic.Bool

	mu       sync.Mutex
	times    map[string]int // event id -> deliveries to fail; < 0: every one
	attempts map[string][]attempt
	changed  chan struct{}
}

func newFailing(fn string) *failing {
	return &failing{fn: fn, times: map[string]int{}, attempts: map[string][]attempt{}, changed: make(chan struct{}, 64)}
}

func (f *failing) fail(id string, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.times[id] = times
}

func (f *failing) wrap(name string, next http.Handler) http.Handler {
	if name != f.fn {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("ce-id")
		f.mu.Lock()
		times, watched := f.times[id]
		n := len(f.attempts[id])
		f.mu.Unlock()
		if !watched {
			next.ServeHTTP(w, r)
			return
		}
		code := http.StatusOK
		if !f.fixed.Load() && (times < 0 || n < times) {
			code = http.StatusServiceUnavailable
			http.Error(w, fmt.Sprintf("failure %d held by the test", n+1), code)
		} else {
			rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
			next.ServeHTTP(rec, r)
			code = rec.code
		}
		f.mu.Lock()
		f.attempts[id] = append(f.attempts[id], attempt{at: time.Now(), code: code})
		f.mu.Unlock()
		select {
		case f.changed <- struct{}{}:
		default:
		}
	})
}

func (f *failing) of(id string) []attempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]attempt(nil), f.attempts[id]...)
}

// await waits until the deliveries of id satisfy cond.
func (f *failing) await(t *testing.T, id string, timeout time.Duration, what string, cond func([]attempt) bool) []attempt {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if a := f.of(id); cond(a) {
			return a
		}
		select {
		case <-f.changed:
		case <-deadline:
			t.Fatalf("%s: not within %s (deliveries %v)", what, timeout, f.of(id))
		}
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// TestBrokerRetriesThenDeadLetters: list-pods answers 503 to a request a
// few times: the broker retries it as the Trigger's delivery spec says (as many
// attempts, each after the spec's backoff) and the last attempt succeeds. Failing more
// times than the spec retries, the request is dead-lettered: the dead-letters function
// records it in the bank, where users list it (HTTP API and event) and replay it once the
// cause is fixed; the replay is delivered and answered. The same on the embedded broker
// and on Knative's.
func TestBrokerRetriesThenDeadLetters(t *testing.T) {
	f := newFailing(events.FnListPods)
	e := newEnv(t, envOptions{wrap: f.wrap, deadLetters: true, observe: []string{events.DeadLetterReplayed}})
	triggers, err := broker.LoadTriggers(filepath.Join(stacktest.RepoRoot(t), "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	var spec broker.Delivery
	for _, tr := range triggers {
		if tr.Filter["type"] == events.PodShow {
			spec = tr.Delivery
		}
	}
	if spec.Retry < 3 || spec.BackoffDelay <= 0 {
		t.Fatalf("the Trigger of %s retries %d times after %s: the test needs 3 retries with backoff", events.PodShow, spec.Retry, spec.BackoffDelay)
	}

	// Three failures, then success (202: list-pods sends its answer into the broker):
	// four deliveries, spaced by the backoff.
	retried := newEvent(events.PodShow, events.PodShowRequest{Pod: "default:no-such-pod"})
	f.fail(retried.ID(), 3)
	e.send(retried)
	got := f.await(t, retried.ID(), time.Minute, "4 deliveries", func(a []attempt) bool { return len(a) >= 4 })
	for i, a := range got {
		want := http.StatusServiceUnavailable
		if i == 3 {
			want = http.StatusAccepted
		}
		if a.code != want {
			t.Fatalf("delivery %d answered %d, want %d", i+1, a.code, want)
		}
		if i == 0 {
			continue
		}
		gap, backoff := a.at.Sub(got[i-1].at), spec.Backoff(i-1)
		t.Logf("retry %d: %s after the failure, backoff %s", i, gap.Round(time.Millisecond), backoff)
		if gap < backoff*9/10 || gap > backoff+1500*time.Millisecond {
			t.Errorf("retry %d came %s after the failure; the delivery spec (%s, %s) says %s", i, gap.Round(time.Millisecond), spec.BackoffPolicy, spec.BackoffDelay, backoff)
		}
	}

	// Failing every time: 1 + Retry deliveries, then the dead-letters function.
	dead := newEvent(events.PodShow, events.PodShowRequest{Pod: "default:no-such-pod"})
	f.fail(dead.ID(), -1)
	start := time.Now()
	e.send(dead)
	api := "/api/deadletters"
	var letter events.DeadLetterSummary
	until(t, time.Minute, "the dead letter recorded", func() (bool, error) {
		var page events.DeadLettersListedResult
		if err := e.read(api+"?type="+events.PodShow, &page); err != nil {
			return false, err
		}
		for _, d := range page.DeadLetters {
			if d.Event.ID == dead.ID() {
				letter = d
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("dead-lettered and recorded %s after the request", time.Since(start).Round(100*time.Millisecond))
	if n := len(f.of(dead.ID())); n != 1+spec.Retry {
		t.Fatalf("%d deliveries before the dead letter, want %d", n, 1+spec.Retry)
	}
	if letter.Code != http.StatusServiceUnavailable || !strings.Contains(letter.Error, "held by the test") || letter.Destination == "" || letter.Failures != 1 {
		t.Fatalf("dead letter %+v", letter)
	}
	t.Logf("dead letter %s: %d from %s: %q", letter.ID, letter.Code, letter.Destination, letter.Error)
	var record bank.DeadLetterRecord
	if err := e.read(api+"/"+letter.ID, &record); err != nil || record.Event.ID() != dead.ID() || record.Event.Type() != events.PodShow {
		t.Fatalf("dead letter record %+v: %v", record, err)
	}
	// Listed by event too, as a system asks the front door.
	code, reply, res := e.ask(newEvent(events.DeadLettersList, events.DeadLettersListRequest{Type: events.PodShow}), "")
	if code != http.StatusOK || reply == nil || reply.Type() != events.DeadLettersListed || !strings.Contains(string(reply.Data()), letter.ID) {
		t.Fatalf("%s: %s, reply %v", events.DeadLettersList, res, reply)
	}

	// Fixed: the replay, asked of the front door, is forwarded, delivered and answered.
	f.fixed.Store(true)
	start = time.Now()
	if code, _, res := e.ask(newEvent(events.DeadLetterReplay, events.DeadLetterReplayRequest{DeadLetter: letter.ID}), ""); code != http.StatusAccepted {
		t.Fatalf("replay: %s", res)
	}
	f.await(t, dead.ID(), time.Minute, "the replayed delivery", func(a []attempt) bool {
		return len(a) > 1+spec.Retry && a[len(a)-1].code == http.StatusAccepted
	})
	replayed := e.await(time.Minute, "replayed", func(ev event.Event) bool {
		var r events.DeadLetterReplayedResult
		return ev.Type() == events.DeadLetterReplayed && ev.DataAs(&r) == nil && r.DeadLetter == letter.ID
	})
	t.Logf("replayed and delivered %s after the replay request (%s)", time.Since(start).Round(100*time.Millisecond), replayed.ID())
	until(t, time.Minute, "the replay recorded", func() (bool, error) {
		var r bank.DeadLetterRecord
		if err := e.read(api+"/"+letter.ID, &r); err != nil {
			return false, err
		}
		return len(r.Replays) == 1 && len(r.Failures) == 1, nil
	})
}
