// Package runner is podguard's local mode: one process that starts every function as an
// HTTP CloudEvents endpoint on 127.0.0.1 and routes events between them through the
// embedded broker, with the filters and delivery settings of the Triggers in deploy/base
// (read from those manifests, so a mistake in a Trigger breaks local runs too). A ticker
// stands in for the PingSource that drives progress checks.
//
// The dead-letter sink the Triggers name, the `dead-letters` Service, is the dead-letters
// function, as in a cluster: dead letters are recorded in the bank, and also kept by the
// broker's Recorder (Options.DeadLetters). A name in ObserverURLs takes the place of a
// function of that name (tests watch dead letters by mapping "dead-letters" to themselves).
//
// snapshot-metadata and recreate-pod seal and open the saved pod definitions with the
// bank's keyring (BANK_KEYS_DIR), and refuse to start without one: the runner gives them
// Options.BankKeys, a keyring directory it creates with a random key when it holds none,
// or else a keyring of its own in a temporary directory, for this run only (removed by
// Close). The other functions get no keyring, as in a cluster.
//
// With Options.Knative the functions sit behind Knative Eventing's own broker instead
// (the local Knative mode, deploy/local/eventing.sh): each listens on its address in the
// Triggers of deploy/overlays/local-eventing, sends to the broker's ingress, and
// observers become Triggers of that Broker (see Knative).
//
//	r, err := runner.Start(ctx, runner.Options{Triggers: "deploy/base", Addr: "127.0.0.1:18500", Tick: 2 * time.Second})
//	// send CloudEvents to r.IngressURL; read checkpoints at r.Functions["checkpoints"] + "/api/checkpoints"
//	defer r.Close(ctx)
package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/functions/deadletters"
	"github.com/podguard/podguard/functions/deletebackup"
	"github.com/podguard/podguard/functions/frontdoor"
	"github.com/podguard/podguard/functions/listpods"
	"github.com/podguard/podguard/functions/recreatepod"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/functions/snapshotmetadata"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/seal"
)

// Options configures a local run. Each function reads its own configuration from the
// environment, exactly as it does in a cluster.
type Options struct {
	// Triggers is the folder of the Knative manifests to route by (deploy/base).
	Triggers string
	// Addr is the broker ingress address; "127.0.0.1:0" picks a free port.
	Addr string
	// Tick is the interval of the progress tick; zero disables it.
	Tick time.Duration
	// DeadLetters is a JSON-lines file for events that could not be delivered.
	DeadLetters string
	// Cinder, when set, replaces the Cinder backup API of back-up-volume (an instant
	// double for benchmarks).
	Cinder *backupvolume.InstantCinder
	// Volumes, when set, replaces the Cinder volume API of restore-volume (an instant
	// double for benchmarks).
	Volumes *restorevolume.InstantVolumes
	// Logger receives structured logs.
	Logger *zap.SugaredLogger
	// Observers are extra Triggers to subscribers outside the runner, by name (tests
	// watch results this way).
	Observers []broker.Trigger
	// ObserverURLs resolves the observers' subscriber names.
	ObserverURLs map[string]string
	// Wrap, when set, wraps each function's HTTP endpoint (tests inject duplicate,
	// delayed or failed deliveries this way).
	Wrap func(name string, h http.Handler) http.Handler
	// Knative, when set, runs the functions behind a Knative Eventing broker instead of
	// the embedded one; Triggers, Addr and DeadLetters are then not used.
	Knative *Knative
	// Telemetry, when set, replaces the functions' telemetry configuration from the
	// environment (tests export traces this way). Metrics are served for Prometheus
	// either way, each function on a port of its own (Runner.Metrics).
	Telemetry *observe.Config
	// BankKeys is the keyring directory of snapshot-metadata and recreate-pod, created
	// with a random key when it holds none; empty: a new keyring for this run only.
	BankKeys string
	// Access, when set, installs podguard's roles on the apiserver and gives the
	// runner's user an admin identity (Runner.Token).
	Access *Access
	// Identity, when set, turns on sender identity inside the broker: every send and
	// every delivery carries a token of the local apiserver's, verified by the broker
	// and the functions (see Identity).
	Identity *Identity
}

// Runner is a running local deployment.
type Runner struct {
	// Broker is the embedded broker; nil behind a Knative broker.
	Broker *broker.Broker
	// IngressURL is where events are sent.
	IngressURL string
	// Functions maps each function name to its URL.
	Functions map[string]string
	// Metrics maps each function name to the URL of its Prometheus metrics.
	Metrics map[string]string
	// BankKeys is the keyring directory snapshot-metadata and recreate-pod use (tests
	// open what the checkpoints saved with it).
	BankKeys string
	// FrontDoor is where requests are sent (the front door's URL), and Token the
	// runner's user's bearer token for it (Options.Access; empty without).
	FrontDoor, Token string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
	// closeKnative removes what the runner added to a Knative broker.
	closeKnative func(ctx context.Context) error
	telemetry    []*observe.Telemetry
	// removeKeys removes a keyring made for this run only.
	removeKeys func() error
	// identity issues and verifies tokens (Options.Identity); nil without.
	identity *identity
}

// brokerRef is the embedded broker once it exists: functions are started before the
// broker, which needs their addresses.
type brokerRef struct{ b *broker.Broker }

// lateSender is one function's sink into the embedded broker. A function sends while it
// handles a delivery, so the broker takes its events while Close drains
// (SendFromSubscriber) and a clean stop loses nothing; the front door's are requests
// from outside, refused once Close began. With token (Identity) each event carries the
// function's token, which the broker verifies as it verifies a post.
type lateSender struct {
	ref     *brokerRef
	outside bool
	token   function.TokenSource
}

func (s *lateSender) Send(ctx context.Context, e event.Event) error {
	b := s.ref.b
	if b == nil {
		return errors.New("the broker is not running yet")
	}
	var tok string
	if s.token != nil {
		var err error
		if tok, err = s.token.Token(ctx); err != nil {
			return err
		}
	}
	if s.outside {
		if s.token == nil {
			return b.Send(ctx, e)
		}
		return b.SendAs(ctx, e, tok)
	}
	return b.SendFromSubscriber(ctx, e, tok)
}

type fn struct {
	name    string
	accepts []string
	build   func(ctx context.Context, sink function.Sender) (function.Handler, error)
}

// endpoint builds the function with its own telemetry and serves it as its main does,
// wrapped when asked; its metrics are served on a port of their own, recorded in
// r.Metrics.
func (r *Runner) endpoint(ctx context.Context, f fn, o Options, sink function.Sender, v function.Validator, log *zap.SugaredLogger) (http.Handler, error) {
	sink, gate, err := r.secure(f.name, sink)
	if err != nil {
		return nil, err
	}
	cfg, err := o.telemetry()
	if err != nil {
		return nil, err
	}
	t, err := observe.New(ctx, f.name, cfg)
	if err != nil {
		return nil, err
	}
	r.telemetry = append(r.telemetry, t)
	if m := t.Handler(); m != nil {
		ready := make(chan net.Addr, 1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := function.ServeMetrics(ctx, "127.0.0.1:0", m, log, ready); err != nil {
				log.Errorw("metrics endpoint", zap.Error(err))
				close(ready)
			}
		}()
		a, ok := <-ready
		if !ok {
			return nil, fmt.Errorf("%s: the metrics endpoint did not start", f.name)
		}
		r.Metrics[f.name] = "http://" + a.String() + "/metrics"
	}
	ctx = observe.WithTelemetry(ctx, t)
	sink = function.TracedSender(sink, t)
	h, err := f.build(ctx, sink)
	if err != nil {
		return nil, err
	}
	// The dead-letter sink takes every event, whatever its type and data. A function that
	// is its own Gate (the front door, which admits people) keeps it.
	if own := function.GateOf(h); own != nil {
		gate = own
	}
	opts := function.ServerOptions{Logger: log, AcceptAny: f.name == events.FnDeadLetters, Telemetry: t, Gate: gate}
	// Replies go to the broker as the function sends them, with its own identity (K_SINK,
	// as every function's in a cluster); the front door answers its callers.
	if f.name != events.FnFrontDoor {
		opts.Sink = sink
	}
	var endpoint http.Handler = function.WithReadAPI(function.NewServer(f.name, f.accepts, h, v, opts), h)
	if o.Wrap != nil {
		endpoint = o.Wrap(f.name, endpoint)
	}
	return endpoint, nil
}

// secure gives function name, with Identity, a sink that sends with its own token and a
// gate that verifies its deliveries; without, the sink as it is and no gate.
func (r *Runner) secure(name string, sink function.Sender) (function.Sender, function.Gate, error) {
	id := r.identity
	if id == nil {
		return sink, nil, nil
	}
	gate, err := id.gate(name)
	if err != nil {
		return nil, nil, err
	}
	token := id.source(events.ServiceAccount(name))
	switch s := sink.(type) {
	case *lateSender:
		signed := *s
		signed.token = token
		return &signed, gate, nil
	case *function.HTTPSender:
		ts, err := function.NewTokenSender(s.Target(), token)
		return ts, gate, err
	}
	return nil, nil, fmt.Errorf("%s: no way to send with a token through %T", name, sink)
}

// telemetry is the functions' telemetry configuration: Options.Telemetry, else the
// environment's, as each function's main reads it. Metrics are always served for
// Prometheus, each function on a port of its own.
func (o Options) telemetry() (observe.Config, error) {
	var cfg observe.Config
	if o.Telemetry != nil {
		cfg = *o.Telemetry
	} else if err := function.LoadConfig(&cfg); err != nil {
		return cfg, err
	}
	cfg.MetricsProtocol, cfg.MetricsEndpoint = "prometheus", "127.0.0.1:0"
	return cfg, nil
}

// load reads a function's configuration from the environment, with set, when given,
// applying what the runner provides, and builds the function.
func load[C any](build func(ctx context.Context, cfg *C, sink function.Sender) (function.Handler, error), set ...func(*C)) func(context.Context, function.Sender) (function.Handler, error) {
	return func(ctx context.Context, sink function.Sender) (function.Handler, error) {
		var cfg C
		err := function.LoadConfigWith(&cfg, func() {
			for _, s := range set {
				s(&cfg)
			}
		})
		if err != nil {
			return nil, err
		}
		return build(ctx, &cfg, sink)
	}
}

// StateBankKeys is where local runs keep the bank's keyring from one run to the next, so
// that checkpoints of an earlier run can be restored: BANK_KEYS_DIR when set, else
// bank-keys in the local stack's state directory (STACK_DIR, PODGUARD_STACK_DIR or
// ~/.local/state/podguard/stack), beside the Swift whose bank it seals.
func StateBankKeys() string {
	if dir := os.Getenv("BANK_KEYS_DIR"); dir != "" {
		return dir
	}
	dir := cmp.Or(os.Getenv("STACK_DIR"), os.Getenv("PODGUARD_STACK_DIR"))
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state", "podguard", "stack")
	}
	return filepath.Join(dir, "bank-keys")
}

// bankKeys makes sure o.BankKeys is a keyring directory, a temporary one when none was
// given, and returns how to remove what it made.
func bankKeys(o *Options) (remove func() error, err error) {
	remove = func() error { return nil }
	if o.BankKeys == "" {
		dir, err := os.MkdirTemp("", "podguard-bank-keys-")
		if err != nil {
			return nil, fmt.Errorf("bank keyring: %w", err)
		}
		o.BankKeys, remove = dir, func() error { return os.RemoveAll(dir) }
	}
	if _, err := seal.Create(o.BankKeys); err != nil {
		_ = remove()
		return nil, err
	}
	return remove, nil
}

func functions(o Options) []fn {
	return []fn{
		{events.FnListPods, listpods.Accepts, load(func(ctx context.Context, c *listpods.Config, _ function.Sender) (function.Handler, error) {
			return listpods.New(ctx, c)
		})},
		{events.FnSnapshotMetadata, snapshotmetadata.Accepts, load(func(ctx context.Context, c *snapshotmetadata.Config, _ function.Sender) (function.Handler, error) {
			return snapshotmetadata.New(ctx, c)
		}, func(c *snapshotmetadata.Config) { c.Keys.Dir = o.BankKeys })},
		{events.FnBackupVolume, backupvolume.Accepts, load(func(ctx context.Context, c *backupvolume.Config, _ function.Sender) (function.Handler, error) {
			if o.Cinder == nil {
				return backupvolume.New(ctx, c)
			}
			b, err := bank.Open(ctx, c.Bank, c.OpenStack)
			if err != nil {
				return nil, err
			}
			return backupvolume.NewStep(o.Cinder, b, time.Now), nil
		})},
		{events.FnChoreographer, choreographer.Accepts, load(func(ctx context.Context, c *choreographer.Config, sink function.Sender) (function.Handler, error) {
			return choreographer.New(ctx, c, sink)
		})},
		{events.FnFrontDoor, frontdoor.Accepts, load(func(ctx context.Context, c *frontdoor.Config, sink function.Sender) (function.Handler, error) {
			return frontdoor.New(ctx, c, sink)
		})},
		{events.FnRestoreVolume, restorevolume.Accepts, load(func(ctx context.Context, c *restorevolume.Config, _ function.Sender) (function.Handler, error) {
			if o.Volumes == nil {
				return restorevolume.New(ctx, c)
			}
			b, err := bank.Open(ctx, c.Bank, c.OpenStack)
			if err != nil {
				return nil, err
			}
			return restorevolume.NewStep(o.Volumes, b, time.Now), nil
		})},
		{events.FnRecreatePod, recreatepod.Accepts, load(func(ctx context.Context, c *recreatepod.Config, _ function.Sender) (function.Handler, error) {
			return recreatepod.New(ctx, c)
		}, func(c *recreatepod.Config) { c.Keys.Dir = o.BankKeys })},
		{events.FnDeleteBackup, deletebackup.Accepts, load(func(ctx context.Context, c *deletebackup.Config, _ function.Sender) (function.Handler, error) {
			return deletebackup.New(ctx, c)
		})},
		{events.FnDeadLetters, deadletters.Accepts, load(func(ctx context.Context, c *deadletters.Config, sink function.Sender) (function.Handler, error) {
			return deadletters.New(ctx, c, sink)
		})},
	}
}

// Start starts every function, then the broker and the ticker.
func Start(ctx context.Context, o Options) (*Runner, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	var token string
	if o.Access != nil {
		var err error
		if token, err = o.Access.setUp(ctx); err != nil {
			return nil, fmt.Errorf("access: %w", err)
		}
	}
	removeKeys, err := bankKeys(&o)
	if err != nil {
		return nil, err
	}
	var id *identity
	if o.Identity != nil {
		ns, triggers := cmp.Or(o.Identity.Namespace, "podguard"), true
		if o.Knative != nil {
			ns, triggers = o.Knative.Namespace, false
		}
		if id, err = o.Identity.setUp(ctx, ns, triggers); err != nil {
			return nil, errors.Join(fmt.Errorf("identity: %w", err), removeKeys())
		}
	}
	var r *Runner
	if o.Knative != nil {
		r, err = startKnative(ctx, o, id)
	} else {
		r, err = start(ctx, o, id)
	}
	if err != nil {
		return nil, errors.Join(err, removeKeys())
	}
	r.BankKeys, r.removeKeys = o.BankKeys, removeKeys
	r.FrontDoor, r.Token = r.Functions[events.FnFrontDoor], token
	return r, nil
}

// start starts every function behind the embedded broker.
func start(ctx context.Context, o Options, id *identity) (*Runner, error) {
	triggers, err := broker.LoadTriggers(o.Triggers)
	if err != nil {
		return nil, err
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	bo := broker.Options{Logger: o.Logger.Named("broker")}
	if id != nil {
		policies, err := broker.LoadPolicies(o.Triggers, id.namespace)
		if err != nil {
			return nil, err
		}
		verifier, err := id.verifier(events.BrokerAudience(id.namespace))
		if err != nil {
			return nil, err
		}
		bo.Identity = &broker.Identity{Namespace: id.namespace, Policies: policies, Verifier: verifier, Tokens: id.tokens}
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Runner{Functions: map[string]string{}, Metrics: map[string]string{}, cancel: cancel, errs: make(chan error, 16), identity: id}
	fail := func(err error) (*Runner, error) {
		cancel()
		r.wg.Wait()
		return nil, err
	}
	ref := &brokerRef{}
	for _, f := range functions(o) {
		log := o.Logger.Named(f.name)
		sink := &lateSender{ref: ref, outside: f.name == events.FnFrontDoor}
		endpoint, err := r.endpoint(ctx, f, o, sink, v, log)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", f.name, err))
		}
		addr, err := r.serve(ctx, "127.0.0.1:0", endpoint, log)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", f.name, err))
		}
		r.Functions[f.name] = "http://" + addr
	}
	rec, err := broker.NewRecorder(o.DeadLetters)
	if err != nil {
		return fail(err)
	}
	resolve := map[string]string{}
	for k, v := range r.Functions {
		resolve[k] = v
	}
	for k, v := range o.ObserverURLs {
		resolve[k] = v
	}
	b, err := broker.New(append(triggers, o.Observers...), resolve, rec, bo)
	if err != nil {
		return fail(err)
	}
	ref.b, r.Broker = b, b
	addr, err := r.serve(ctx, o.Addr, b, o.Logger.Named("broker"))
	if err != nil {
		_ = b.Close(context.Background())
		return fail(err)
	}
	r.IngressURL = "http://" + addr
	if o.Tick > 0 {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			tick := broker.PingTick("podguard", events.TickSource, time.Now)
			if id == nil {
				_ = b.RunTicker(ctx, o.Tick, tick)
				return
			}
			_ = b.RunTickerAs(ctx, o.Tick, tick, id.source(events.PingSourceServiceAccount(events.TickSource)).Token)
		}()
	}
	return r, nil
}

func (r *Runner) serve(ctx context.Context, addr string, h http.Handler, log *zap.SugaredLogger) (string, error) {
	ready := make(chan net.Addr, 1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := function.Serve(ctx, addr, h, 10*time.Second, log, ready); err != nil {
			select {
			case r.errs <- err:
			default:
			}
			close(ready)
		}
	}()
	a, ok := <-ready
	if !ok {
		return "", <-r.errs
	}
	return a.String(), nil
}

// Names lists the running functions.
func (r *Runner) Names() []string {
	var n []string
	for k := range r.Functions {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Close drains the broker (or removes the observers' Triggers from a Knative broker),
// then stops the functions.
func (r *Runner) Close(ctx context.Context) error {
	var err error
	if r.Broker != nil {
		err = r.Broker.Close(ctx)
	}
	if r.closeKnative != nil {
		err = errors.Join(err, r.closeKnative(ctx))
	}
	r.cancel()
	r.wg.Wait()
	// Spans still buffered are exported before the runner returns.
	for _, t := range r.telemetry {
		err = errors.Join(err, t.Shutdown(ctx))
	}
	if r.removeKeys != nil {
		err = errors.Join(err, r.removeKeys())
	}
	return err
}
