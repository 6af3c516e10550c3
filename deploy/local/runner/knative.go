package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/function"
)

// Knative puts the runner's functions behind a Knative Eventing broker (the local
// Knative mode, deploy/local/eventing.sh) instead of the embedded one. The Broker and its
// Triggers (deploy/overlays/local-eventing) are installed beforehand; their subscribers
// are the addresses in Addrs.
type Knative struct {
	// BrokerURL is the Broker's ingress: the functions' K_SINK, where ticks are sent, and
	// the runner's IngressURL.
	BrokerURL string
	// Namespace and Broker name the Broker; observer Triggers are created there.
	Namespace string
	Broker    string
	// Addrs is where each function listens (127.0.0.1 only): where the Triggers deliver.
	Addrs map[string]string
	// Triggers adds and removes the observers' Triggers and waits for routing
	// (*eventing.Client).
	Triggers TriggerClient
	// RoutedTimeout bounds the wait for the broker to route to every Trigger; zero is 2
	// minutes.
	RoutedTimeout time.Duration
}

// TriggerClient manages Triggers of the Broker's namespace.
type TriggerClient interface {
	ApplyTrigger(ctx context.Context, t eventing.Trigger) error
	DeleteTrigger(ctx context.Context, name string) error
	WaitRouted(ctx context.Context, broker, brokerURL string) error
}

// startKnative starts every function on its address, behind the Knative broker: each
// function sends to the broker's ingress, observers become Triggers of the Broker, and
// the ticker sends its ticks to the ingress. A name of ObserverURLs that is a function
// takes that function's place at its address (the function itself then listens on a
// free port, as in the embedded mode).
func startKnative(ctx context.Context, o Options, id *identity) (*Runner, error) {
	k := o.Knative
	if k.Triggers == nil || k.BrokerURL == "" || k.Namespace == "" || k.Broker == "" {
		return nil, errors.New("knative: BrokerURL, Namespace, Broker and Triggers are required")
	}
	if k.RoutedTimeout == 0 {
		k.RoutedTimeout = 2 * time.Minute
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	sink, err := function.NewHTTPSender(k.BrokerURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Runner{Functions: map[string]string{}, Metrics: map[string]string{}, IngressURL: k.BrokerURL, cancel: cancel, errs: make(chan error, 16), identity: id}
	if c, ok := k.Triggers.(interface{ WithIdentity(eventing.Tokens) }); ok && id != nil {
		c.WithIdentity(id.tokens.Token)
	}
	var observers []string
	r.closeKnative = func(ctx context.Context) error {
		var errs []error
		for _, name := range observers {
			errs = append(errs, k.Triggers.DeleteTrigger(ctx, name))
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (*Runner, error) {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer ccancel()
		_ = r.closeKnative(cctx)
		cancel()
		r.wg.Wait()
		return nil, err
	}
	for _, f := range functions(o) {
		log := o.Logger.Named(f.name)
		addr, ok := k.Addrs[f.name]
		if !ok {
			return fail(fmt.Errorf("knative: no address for function %s", f.name))
		}
		endpoint, err := r.endpoint(ctx, f, o, sink, v, log)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", f.name, err))
		}
		if target, ok := o.ObserverURLs[f.name]; ok {
			proxy, err := forward(target)
			if err != nil {
				return fail(fmt.Errorf("observer %s: %w", f.name, err))
			}
			if _, err := r.serve(ctx, addr, proxy, log); err != nil {
				return fail(fmt.Errorf("observer %s: %w", f.name, err))
			}
			addr = "127.0.0.1:0"
		}
		got, err := r.serve(ctx, addr, endpoint, log)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", f.name, err))
		}
		r.Functions[f.name] = "http://" + got
	}
	resolve := func(d broker.Destination) (string, error) {
		if d.Ref == "" {
			return d.URI, nil
		}
		base, ok := o.ObserverURLs[d.Ref]
		if !ok {
			a, ok := k.Addrs[d.Ref]
			if !ok {
				return "", fmt.Errorf("no address for %q", d.Ref)
			}
			base = "http://" + a
		}
		if d.URI == "" {
			return base, nil
		}
		return strings.TrimSuffix(base, "/") + "/" + strings.TrimPrefix(d.URI, "/"), nil
	}
	for _, t := range o.Observers {
		uri, err := resolve(t.Subscriber)
		if err != nil {
			return fail(fmt.Errorf("observer %s: %w", t.Name, err))
		}
		tr := eventing.Trigger{Name: eventing.TriggerName(t.Name), Broker: k.Broker, Filter: t.Filter, URI: uri}
		if t.Delivery != (broker.Delivery{}) {
			d := t.Delivery
			tr.Delivery = &eventing.Delivery{Retry: d.Retry, BackoffPolicy: string(d.BackoffPolicy), BackoffDelay: d.BackoffDelay, Timeout: d.Timeout}
			if d.DeadLetterSink != nil {
				if tr.Delivery.DeadLetterURI, err = resolve(*d.DeadLetterSink); err != nil {
					return fail(fmt.Errorf("observer %s: dead-letter sink: %w", t.Name, err))
				}
			}
		}
		if err := k.Triggers.ApplyTrigger(ctx, tr); err != nil {
			return fail(err)
		}
		observers = append(observers, tr.Name)
	}
	rctx, rcancel := context.WithTimeout(ctx, k.RoutedTimeout)
	defer rcancel()
	if err := k.Triggers.WaitRouted(rctx, k.Broker, k.BrokerURL); err != nil {
		return fail(err)
	}
	if o.Tick > 0 {
		tickSink := function.Sender(sink)
		if id != nil {
			if tickSink, err = function.NewTokenSender(k.BrokerURL, id.source(events.PingSourceServiceAccount(events.TickSource))); err != nil {
				return fail(err)
			}
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.tickKnative(ctx, o, tickSink)
		}()
	}
	return r, nil
}

// tickKnative sends a tick to the broker every interval, each from its own goroutine as a
// PingSource's firings are: a broker on a synchronous channel answers a tick only once
// every delivery it caused is done, retries included, and the next tick must not wait
// for that.
func (r *Runner) tickKnative(ctx context.Context, o Options, sink function.Sender) {
	k := o.Knative
	tick := broker.PingTick(k.Namespace, "podguard-tick", time.Now)
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e := tick()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := sink.Send(ctx, e); err != nil && ctx.Err() == nil {
				o.Logger.Warnw("tick not sent", "broker", k.BrokerURL, "ce-id", e.ID(), "error", err)
			}
		}()
	}
}

// forward is a reverse proxy to target (an observer standing in for a function).
func forward(target string) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("observer URL %q: %v", target, err)
	}
	return httputil.NewSingleHostReverseProxy(u), nil
}
