package runner_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/stacktest"
)

// fakeTriggers records what the runner asks of the broker's namespace.
type fakeTriggers struct {
	mu      sync.Mutex
	applied map[string]eventing.Trigger
	deleted []string
	waited  int
}

func (f *fakeTriggers) ApplyTrigger(_ context.Context, t eventing.Trigger) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied[t.Name] = t
	return nil
}

func (f *fakeTriggers) DeleteTrigger(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, name)
	return nil
}

func (f *fakeTriggers) WaitRouted(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waited++
	return nil
}

// recorder is an HTTP endpoint that keeps the CloudEvents it gets.
func recorder(t *testing.T) (string, <-chan event.Event) {
	t.Helper()
	got := make(chan event.Event, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- *e
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestKnativeMode starts the runner behind a stand-in for a Knative broker: each
// function listens on the address the Triggers name, an observer standing in for
// dead-letters takes that address, the observers become Triggers (with their delivery
// spec, the dead-letter sink resolved to a function's address), the runner waits for
// routing before it returns, ticks go to the broker's ingress as a PingSource's, and
// Close deletes the observers' Triggers.
func TestKnativeMode(t *testing.T) {
	st := stacktest.Load(t)
	container := "podguard-test-kn-" + uuid.NewString()[:8]
	for k, v := range map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": container, "LOG_LEVEL": "warn"} {
		t.Setenv(k, v)
	}
	st.RemoveContainerAtEnd(t, "keystone", container)
	brokerURL, ingested := recorder(t)
	observer, observed := recorder(t)
	addrs := map[string]string{}
	for _, fn := range []string{events.FnListPods, events.FnSnapshotMetadata, events.FnBackupVolume, events.FnChoreographer, events.FnFrontDoor,
		events.FnRestoreVolume, events.FnRecreatePod, events.FnDeleteBackup, events.FnDeadLetters} {
		addrs[fn] = freeAddr(t)
	}
	triggers := &fakeTriggers{applied: map[string]eventing.Trigger{}}
	r, err := runner.Start(context.Background(), runner.Options{
		Tick: 100 * time.Millisecond,
		Observers: []broker.Trigger{{Name: "observer-" + events.CheckpointFinished, Filter: map[string]string{"type": events.CheckpointFinished},
			Subscriber: broker.Destination{Ref: "observer"},
			Delivery: broker.Delivery{Retry: 2, BackoffPolicy: broker.BackoffLinear, BackoffDelay: time.Second,
				DeadLetterSink: &broker.Destination{Ref: events.FnFrontDoor}}}},
		ObserverURLs: map[string]string{"observer": observer, events.FnDeadLetters: observer},
		Knative:      &runner.Knative{BrokerURL: brokerURL, Namespace: "ns", Broker: "podguard", Addrs: addrs, Triggers: triggers},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = r.Close(context.Background())
		}
	}()
	if r.IngressURL != brokerURL || r.Broker != nil || triggers.waited != 1 {
		t.Fatalf("ingress %s, embedded broker %v, waited for routing %d times", r.IngressURL, r.Broker, triggers.waited)
	}
	tr, ok := triggers.applied["observer-dev-podguard-checkpoint-finished"]
	if !ok || tr.URI != observer || tr.Broker != "podguard" || tr.Filter["type"] != events.CheckpointFinished ||
		tr.Delivery == nil || tr.Delivery.Retry != 2 || tr.Delivery.DeadLetterURI != "http://"+addrs[events.FnFrontDoor] {
		t.Fatalf("observer triggers %+v", triggers.applied)
	}
	// A function at its address (the front door refuses a read without a token); the
	// observer at dead-letters' address.
	resp, err := http.Get("http://" + addrs[events.FnFrontDoor] + "/api/provider")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the front door at its address: %v %v", resp, err)
	}
	resp.Body.Close()
	letter := newEvent(t, "com.example.lost", `{}`)
	send(t, "http://"+addrs[events.FnDeadLetters], letter)
	select {
	case e := <-observed:
		if e.ID() != letter.ID() {
			t.Fatalf("observed %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the observer did not get what was sent to dead-letters' address")
	}
	select {
	case e := <-ingested:
		if e.Type() != broker.PingSourceType || e.Source() != "/apis/v1/namespaces/ns/pingsources/podguard-tick" {
			t.Fatalf("ingested %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no tick at the broker")
	}
	closed = true
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(triggers.deleted) != 1 || triggers.deleted[0] != tr.Name {
		t.Fatalf("deleted %v", triggers.deleted)
	}
}
