// Package listpods is the list-pods function: Karbor's OS::Kubernetes::Pod protectable.
// It answers PodsList with the dependency graph of a scope (pods, their Cinder volumes,
// what could not be resolved and which pods are not protectable), and PodShow with one
// pod. A graph too large for one event is stored in the bank and referenced.
package listpods

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
)

// Accepts are the event types list-pods handles.
var Accepts = []string{events.PodsList, events.PodShow}

// Config is list-pods' configuration from the environment.
type Config struct {
	Kube      kube.Config
	Bank      bank.Config
	OpenStack openstack.Config
	// MaxInlineGraph is the largest graph, in bytes of JSON, sent inside the result event;
	// larger graphs go to the bank. CloudEvents intermediaries only promise 64 KiB.
	MaxInlineGraph int `envconfig:"MAX_INLINE_GRAPH_BYTES" default:"49152"`
}

// resolver resolves scopes and single pods into graphs.
type resolver interface {
	Resolve(ctx context.Context, sel kube.Selection) (*graph.Graph, error)
	Show(ctx context.Context, ref string) (*graph.Graph, bool, error)
}

// listingStore keeps graphs too large for an event.
type listingStore interface {
	PutListing(ctx context.Context, key string, data []byte) (events.ObjectRef, error)
}

// Step is the list-pods step.
type Step struct {
	resolver  resolver
	store     listingStore
	maxInline int
}

// New builds the step from its configuration, connecting to Kubernetes and the bank.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	cs, err := kube.NewClientset(ctx, cfg.Kube)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	r := kube.NewResolver(kube.Clientset{Interface: cs}, kube.ResolverOptions{PageSize: cfg.Kube.PageSize})
	return NewStep(r, b, cfg.MaxInlineGraph), nil
}

// NewStep builds the step from its dependencies.
func NewStep(r resolver, store listingStore, maxInline int) *Step {
	return &Step{resolver: r, store: store, maxInline: maxInline}
}

// Handle answers PodsList and PodShow.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.PodsList:
		return s.list(ctx, e)
	case events.PodShow:
		return s.show(ctx, e)
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not handled by list-pods", e.Type()))
}

func (s *Step) list(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.PodsListRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	if err := req.Scope.Check(); err != nil {
		return nil, function.Permanent(err)
	}
	g, err := s.resolver.Resolve(ctx, kube.Selection{
		Namespaces: req.Scope.Namespaces, LabelSelector: req.Scope.LabelSelector, Pods: req.Scope.Pods,
	})
	if apierrors.IsForbidden(err) {
		// The same request is refused again: a scope beyond what this install may read
		// (a namespace-scoped install asked for every namespace, or another one).
		return nil, function.Permanent(fmt.Errorf("the scope is beyond what podguard may read: %w", err))
	}
	if err != nil {
		return nil, err
	}
	res := events.PodsListedResult{Scope: req.Scope}
	res.Pods, res.Volumes = g.Counts()
	raw, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode graph: %w", err)
	}
	if len(raw) <= s.maxInline {
		res.Graph = g
	} else {
		// Keyed by the request, so a redelivery overwrites the same object.
		ref, err := s.store.PutListing(ctx, function.DerivedID(e.Source(), e.ID()), raw)
		if err != nil {
			return nil, err
		}
		res.GraphRef = &ref
	}
	return function.Reply(events.PodsListed, res)
}

func (s *Step) show(ctx context.Context, e event.Event) (*event.Event, error) {
	var req events.PodShowRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	g, found, err := s.resolver.Show(ctx, req.Pod)
	if err != nil {
		return nil, err
	}
	res := events.PodShownResult{Pod: req.Pod, Found: found}
	switch {
	case !found:
		res.Reason = fmt.Sprintf("pod %s not found", req.Pod)
	case len(g.Excluded) > 0:
		res.Reason, res.Graph = g.Excluded[0].Reason, g
	default:
		res.Protectable, res.Graph = true, g
	}
	return function.Reply(events.PodShown, res)
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if c.MaxInlineGraph <= 0 || c.MaxInlineGraph > 60<<10 {
		return fmt.Errorf("MAX_INLINE_GRAPH_BYTES=%d: want 1..61440 (events are limited to 64 KiB)", c.MaxInlineGraph)
	}
	return c.Bank.Validate()
}
