// Package e2e runs podguard's end-to-end suite: every function behind the embedded
// broker (routing by deploy/base) against the real local stack.
//
// With PODGUARD_BROKER=knative (make test-knative) the same suite runs behind Knative
// Eventing's own broker, as deploy/local/eventing.sh runs it: each test installs the
// Broker and Triggers of deploy/overlays/local-eventing into a namespace of its own and
// waits until the broker routes to them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// env is one end-to-end environment: the stack, a runner with its own bank container,
// and an observer receiving every result event users would see.
type env struct {
	t        testing.TB
	st       *stacktest.Stack
	kube     kubernetes.Interface
	runner   *runner.Runner
	bank     string
	bankAuth string
	volumes  *volumes.Client
	backups  *backups.Client

	mu       sync.Mutex
	observed map[string][]event.Event
	arrived  chan event.Event
}

// observed types: what a user or another system would subscribe to.
var observedTypes = []string{events.CheckpointFinished, events.RestoreFinished, events.CheckpointDeleted}

type envOptions struct {
	wrap     func(name string, h http.Handler) http.Handler
	bankAuth string // keystone unless set
	cinder   *backupvolume.InstantCinder
	volumes  *restorevolume.InstantVolumes
	extra    map[string]string // environment of the functions
	// deadLetters: dead letters go to the dead-letters function (recorded in the bank), not
	// to the test's observer.
	deadLetters bool
	// observe: more event types the observer receives, besides observedTypes.
	observe []string
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	st := stacktest.Load(t)
	e := &env{t: t, st: st, kube: st.Kube(t), observed: map[string][]event.Event{}, arrived: make(chan event.Event, 1024)}
	e.bank = fmt.Sprintf("podguard-e2e-%d", time.Now().UnixNano()%1e9)
	e.bankAuth = o.bankAuth
	if e.bankAuth == "" {
		e.bankAuth = "keystone"
	}
	for k, v := range map[string]string{
		"BANK_AUTH": e.bankAuth, "BANK_CONTAINER": e.bank, "REDRIVE_AFTER": "2s", "PROTECT_TIMEOUT": "10m", "LOG_LEVEL": "warn",
	} {
		t.Setenv(k, v)
	}
	for k, v := range o.extra {
		t.Setenv(k, v)
	}
	obs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		e.observed[ev.Type()] = append(e.observed[ev.Type()], *ev)
		e.mu.Unlock()
		e.arrived <- *ev
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(obs.Close)
	var observers []broker.Trigger
	for _, typ := range append(slices.Clone(observedTypes), o.observe...) {
		observers = append(observers, broker.Trigger{Name: "observer-" + typ, Filter: map[string]string{"type": typ},
			Subscriber: broker.Destination{Ref: "observer"}})
	}
	ctx := context.Background()
	r, err := runner.Start(ctx, runner.Options{
		Triggers: filepath.Join(stacktest.RepoRoot(t), "deploy", "base"), Tick: time.Second, Cinder: o.cinder, Volumes: o.volumes, Wrap: o.wrap,
		Observers: observers, ObserverURLs: observerURLs(obs.URL, o.deadLetters),
		DeadLetters: filepath.Join(t.TempDir(), "dead-letters.jsonl"),
		Knative:     knativeBroker(t, st, e.kube),
		Access:      &runner.Access{Roles: filepath.Join(stacktest.RepoRoot(t), "deploy", "roles")},
		Identity:    &runner.Identity{},
		Logger:      e2eLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = r.Close(cctx)
	})
	e.runner = r
	sc, err := st.OpenStack().BlockStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.volumes, e.backups = volumes.New(sc), backups.New(sc)
	return e
}

// e2eLogger is the runner's logger: PODGUARD_E2E_LOG=1 logs at info through the test's
// log, to see what the broker and the functions did; quiet otherwise.
func e2eLogger(t testing.TB) *zap.SugaredLogger {
	if os.Getenv("PODGUARD_E2E_LOG") == "" {
		return nil
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Sugar()
}

// observerURLs maps the observers, and the dead-letters function unless dead letters
// are to be recorded, to the test's observer.
func observerURLs(obs string, deadLetters bool) map[string]string {
	m := map[string]string{"observer": obs, events.FnDeadLetters: obs}
	if deadLetters {
		delete(m, events.FnDeadLetters)
	}
	return m
}

// onKnative reports whether the suite runs behind Knative Eventing's broker
// (PODGUARD_BROKER=knative) rather than the embedded one.
func onKnative() bool { return os.Getenv("PODGUARD_BROKER") == "knative" }

// knativeBroker, on Knative, installs the Broker and Triggers of
// deploy/overlays/local-eventing into a new namespace (deleted when the test ends) and
// returns the runner's options for it; nil on the embedded broker.
func knativeBroker(t testing.TB, st *stacktest.Stack, kube kubernetes.Interface) *runner.Knative {
	t.Helper()
	if !onKnative() {
		return nil
	}
	env, err := eventing.LoadEnv(eventing.EnvFile())
	if err != nil {
		t.Fatalf("PODGUARD_BROKER=knative: %v", err)
	}
	ns := st.Namespace(t, kube, "e2e-broker")
	cfg, err := st.KubeConfig().RESTConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventing.NewClient(cfg, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	broker, err := c.Install(ctx, st.Env["PODGUARD_KUBECTL"], filepath.Join(stacktest.RepoRoot(t), "deploy", "overlays", "local-eventing"))
	if err != nil {
		t.Fatal(err)
	}
	return &runner.Knative{BrokerURL: env.BrokerURL(ns, broker), Namespace: ns, Broker: broker, Addrs: env.Functions, Triggers: c}
}

// ask sends a request to the front door with token (the runner's admin when empty), as
// a user's system would, and returns its status, its reply (when it has one) and the
// status with the answer's text.
func (e *env) ask(ev event.Event, token string) (int, *event.Event, string) {
	e.t.Helper()
	if token == "" {
		token = e.runner.Token
	}
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.runner.FrontDoor, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req); err != nil {
		e.t.Fatal(err)
	}
	if token != "-" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		reply, err := binding.ToEvent(ctx, cehttp.NewMessageFromHttpResponse(resp))
		if err != nil {
			e.t.Fatalf("the front door's reply to %s: %v", ev.Type(), err)
		}
		return resp.StatusCode, reply, resp.Status
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, nil, resp.Status + ": " + strings.TrimSpace(string(b))
}

// read GETs path of the front door's read API as the runner's admin into v.
func (e *env) read(path string, v any) error {
	resp, err := e.runner.Read(context.Background(), path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// send delivers an event to the broker ingress as the part of podguard that sends its
// type (the front door for a request, the choreographer for a step request, a step for
// its result; events.Senders): what reaches the broker only from inside podguard.
func (e *env) send(ev event.Event) {
	e.t.Helper()
	c, err := cloudevents.NewClientHTTP(cehttp.WithHeader("Authorization", "Bearer "+e.senderToken(ev.Type())))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := cloudevents.ContextWithTarget(context.Background(), e.runner.IngressURL)
	if res := c.Send(ctx, ev); !cloudevents.IsACK(res) {
		e.t.Fatalf("send %s: %v", ev.Type(), res)
	}
}

// senderToken is a token, for the broker's audience, of the service account that sends
// events of type typ into the broker (a function's other than dead-letters when there is
// one).
func (e *env) senderToken(typ string) string {
	e.t.Helper()
	senders := events.Senders(typ)
	if len(senders) == 0 {
		e.t.Fatalf("no part of podguard sends %s into the broker", typ)
	}
	sa := senders[0]
	for _, s := range senders {
		if s != events.ServiceAccount(events.FnDeadLetters) {
			sa = s
			break
		}
	}
	return e.issue(sa, events.BrokerAudience(e.runner.Namespace()))
}

// deliveryToken is a token of the Trigger that routes typ to function fn, for fn's
// audience: what the broker's deliveries to fn carry.
func (e *env) deliveryToken(fn, typ string) string {
	e.t.Helper()
	return e.issue(events.TriggerServiceAccount(events.TriggerName(fn, typ)), events.FunctionAudience(fn))
}

// issue is a token of service account sa of podguard's namespace for audience.
func (e *env) issue(sa, audience string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := e.runner.IssueToken(ctx, sa, audience)
	if err != nil {
		e.t.Fatalf("token of %s for %s: %v", sa, audience, err)
	}
	return tok
}

// deliver posts ev straight to function fn, in structured mode, as the broker's Trigger
// for its type would, and returns the status and the body of the answer.
func (e *env) deliver(fn string, ev event.Event) (int, string) {
	e.t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, e.runner.Functions[fn], bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Authorization", "Bearer "+e.deliveryToken(fn, ev.Type()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(msg))
}

func newEvent(typ string, data any) event.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource("e2e-test")
	ev.SetType(typ)
	ev.SetTime(time.Now().UTC()) // a redelivery resends the same event, time included
	_ = ev.SetData(cloudevents.ApplicationJSON, data)
	return ev
}

// await waits for an observed event matching pred.
func (e *env) await(timeout time.Duration, what string, pred func(event.Event) bool) event.Event {
	e.t.Helper()
	deadline := time.After(timeout)
	e.mu.Lock()
	for _, evs := range e.observed {
		for _, ev := range evs {
			if pred(ev) {
				e.mu.Unlock()
				return ev
			}
		}
	}
	e.mu.Unlock()
	for {
		select {
		case ev := <-e.arrived:
			if pred(ev) {
				return ev
			}
		case <-deadline:
			e.t.Fatalf("%s: nothing within %s", what, timeout)
		}
	}
}

// finished waits for the checkpoint.finished event of a checkpoint.
func (e *env) finished(id string, timeout time.Duration) events.CheckpointFinishedResult {
	e.t.Helper()
	ev := e.await(timeout, "checkpoint "+id+" finished", func(ev event.Event) bool {
		return ev.Type() == events.CheckpointFinished && ev.Extensions()[events.ExtCheckpoint] == id
	})
	var res events.CheckpointFinishedResult
	if err := ev.DataAs(&res); err != nil {
		e.t.Fatal(err)
	}
	return res
}

// restoreFinished waits for the restore.finished event of a restore.
func (e *env) restoreFinished(id string, timeout time.Duration) events.RestoreFinishedResult {
	e.t.Helper()
	ev := e.await(timeout, "restore "+id+" finished", func(ev event.Event) bool {
		return ev.Type() == events.RestoreFinished && ev.Extensions()[events.ExtCheckpoint] == id
	})
	var res events.RestoreFinishedResult
	if err := ev.DataAs(&res); err != nil {
		e.t.Fatal(err)
	}
	return res
}

// deleted waits for the checkpoint.deleted event of a checkpoint.
func (e *env) deleted(id string, timeout time.Duration) events.CheckpointDeletedResult {
	e.t.Helper()
	ev := e.await(timeout, "checkpoint "+id+" deleted", func(ev event.Event) bool {
		return ev.Type() == events.CheckpointDeleted && ev.Extensions()[events.ExtCheckpoint] == id
	})
	var res events.CheckpointDeletedResult
	if err := ev.DataAs(&res); err != nil {
		e.t.Fatal(err)
	}
	return res
}

// next waits until more than n events of a type were observed, and returns the last.
func (e *env) next(timeout time.Duration, typ string, n int) event.Event {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		evs := e.observed[typ]
		e.mu.Unlock()
		if len(evs) > n {
			return evs[len(evs)-1]
		}
		select {
		case <-e.arrived:
		case <-deadline:
			e.t.Fatalf("no new %s within %s", typ, timeout)
		}
	}
}

// count returns how many events of a type were observed.
func (e *env) count(typ string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.observed[typ])
}

// cinderVolume creates a real 1 GiB Cinder volume holding data at its start, and deletes
// it, with its backups, when the test ends.
func (e *env) cinderVolume(name string, data []byte) *volumes.Volume {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := e.volumes.Create(ctx, name, 1, map[string]string{"podguard-test": e.bank})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if bs, err := e.backups.List(ctx, v.ID); err == nil {
			for i := len(bs) - 1; i >= 0; i-- { // newest first is the order Cinder accepts
				_ = e.backups.Delete(ctx, bs[i].ID)
				_ = e.backups.WaitForDeleted(ctx, bs[i].ID)
			}
		}
		_ = e.volumes.Delete(ctx, v.ID)
	})
	if v, err = e.volumes.WaitForStatus(ctx, v.ID, "available"); err != nil {
		e.t.Fatal(err)
	}
	if data != nil {
		f, err := os.OpenFile(filepath.Join(e.st.Env["PODGUARD_CINDER_EXPORT"], "volume-"+v.ID), os.O_WRONLY, 0)
		if err != nil {
			e.t.Fatalf("open the volume's file on the NFS export: %v", err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			e.t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			e.t.Fatal(err)
		}
	}
	return v
}

// podWithVolume creates a PV for a Cinder volume (CSI or in-tree), a claim bound to it,
// and a Running pod mounting it.
func (e *env) podWithVolume(ns, name string, v *volumes.Volume, csi bool) {
	e.t.Helper()
	e.podWithVolumes(ns, name, []*volumes.Volume{v}, []bool{csi})
}

// podWithVolumes creates a Running pod with a claim per Cinder volume: the first claim
// is <name>-data, the next <name>-data1, and so on.
func (e *env) podWithVolumes(ns, name string, vs []*volumes.Volume, csi []bool) {
	e.t.Helper()
	e.podWith(ns, name, vs, csi, nil)
}

// podWith is podWithVolumes with edit, when not nil, changing the pod before it is
// created.
func (e *env) podWith(ns, name string, vs []*volumes.Volume, csi []bool, edit func(*corev1.Pod)) {
	e.t.Helper()
	ctx := context.Background()
	var claims []string
	for i, v := range vs {
		suffix := ""
		if i > 0 {
			suffix = fmt.Sprint(i)
		}
		claim := name + "-data" + suffix
		pv := stacktest.CinderPV(ns+"-"+claim, v.ID, csi[i], ns, claim)
		if _, err := e.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() {
			_ = e.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		})
		if _, err := e.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, stacktest.Claim(ns, claim, pv.Name), metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
		claims = append(claims, claim)
	}
	p := stacktest.Pod(ns, name, map[string]string{"app": name}, claims...)
	if edit != nil {
		edit(p)
	}
	if _, err := e.kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	stacktest.WaitPod(e.t, e.kube, ns, name, time.Minute, stacktest.Running)
	for _, c := range claims {
		stacktest.WaitClaimBound(e.t, e.kube, ns, c, time.Minute)
	}
}
