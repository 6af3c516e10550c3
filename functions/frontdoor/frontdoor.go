// Package frontdoor is the front door: the one entry of podguard's that people, their
// systems and PingSources send requests to. It establishes the caller from a bearer
// token (a Kubernetes service-account token or an OIDC token of the cluster's issuer
// with podguard's audience, reviewed by the apiserver), authorizes the request with
// Kubernetes RBAC (SubjectAccessReview on podguard.dev resources in every namespace it
// touches; see rights.go), then answers it or forwards it:
//
//   - reads (checkpoint.show, checkpoints.list, restore.show, restores.list,
//     schedules.list, provider.show, deadletters.list) are answered in the HTTP response;
//     lists show only what the caller may see. The same reads are served as plain GETs
//     under /api/ (see ReadAPI), with the same token and the same rights;
//   - the other requests (protect, restore, delete, schedules, pods.list, pod.show,
//     dead-letter replay) are sent into the broker (K_SINK) unchanged but for the
//     podguardcaller extension, which names the caller; the operation they start records
//     it. The answer is 202.
//
// No token, or one the apiserver does not accept for podguard's audience (expired,
// another audience, a deleted service account): 401. A valid caller without the right:
// 403, naming what is missing. A restore never lands in a protected namespace
// (kube-system, kube-public, kube-node-lease and podguard's own, unless configured).
package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/schedule"
)

// Accepts are the request types the front door takes: the catalog's FrontDoor types.
var Accepts = events.FrontDoorTypes()

// Config is the front door's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
	Kube      kube.Config
	// Audience is what callers' tokens must be issued for (kubectl create token <sa>
	// --audience podguard; a PingSource's OIDC token is issued for its sink's audience).
	Audience string `envconfig:"FRONT_DOOR_AUDIENCE" default:"podguard"`
	// ProtectedNamespaces never receive a restore.
	ProtectedNamespaces []string `envconfig:"RESTORE_PROTECTED_NAMESPACES" default:"kube-system,kube-public,kube-node-lease"`
	// Namespace is podguard's own namespace, protected too; unset, the namespace of the
	// mounted ServiceAccount token (in a cluster).
	Namespace string `envconfig:"POD_NAMESPACE"`
	// ReviewTTL and DecisionTTL bound how long a token review and an authorization
	// decision are reused.
	ReviewTTL   time.Duration `envconfig:"TOKEN_REVIEW_TTL" default:"30s"`
	DecisionTTL time.Duration `envconfig:"AUTHORIZATION_TTL" default:"10s"`
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.Audience) == "" {
		return errors.New("FRONT_DOOR_AUDIENCE: empty")
	}
	return c.Bank.Validate()
}

// authenticator tells who holds a bearer token.
type authenticator interface {
	Authenticate(ctx context.Context, token string) (access.Caller, error)
}

// authorizer decides whether a caller may do what attributes say.
type authorizer interface {
	AllowedAll(ctx context.Context, c access.Caller, ats []access.Attributes) (access.Decision, error)
}

// Step is the front door.
type Step struct {
	bank     checkpoint.Reader
	restores checkpoint.RestoreReader
	// schedules is nil when the reader keeps no schedules (test doubles).
	schedules schedule.Reader
	now       func() time.Time
	provider  []byte
	// deadLetters, when set, serves the dead letters.
	deadLetters bank.DeadLetterReader

	authn     authenticator
	authz     authorizer
	sink      function.Sender
	protected []string
}

// Options are what a Step needs beside the bank's readers.
type Options struct {
	Authenticator authenticator
	Authorizer    authorizer
	// Sink receives the requests forwarded into the broker; nil answers them 500.
	Sink function.Sender
	// Protected namespaces never receive a restore.
	Protected []string
	// DeadLetters, when set, serves the dead letters.
	DeadLetters bank.DeadLetterReader
}

// New builds the front door from its configuration; sink is the broker.
func New(ctx context.Context, cfg *Config, sink function.Sender) (*Step, error) {
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	cs, err := kube.NewClientset(ctx, cfg.Kube)
	if err != nil {
		return nil, err
	}
	protected := slices.Clone(cfg.ProtectedNamespaces)
	if own := function.PodNamespace(cfg.Namespace); own != "" {
		protected = append(protected, own)
	}
	return NewStep(b, checkpoint.BankRestores(b), Options{
		Authenticator: access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), cfg.Audience, access.ReviewOptions{TTL: cfg.ReviewTTL}),
		Authorizer:    access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{TTL: cfg.DecisionTTL}),
		Sink:          sink, Protected: protected, DeadLetters: b,
	})
}

// NewStep builds the front door on readers of checkpoints and of restores.
func NewStep(r checkpoint.Reader, restores checkpoint.RestoreReader, o Options) (*Step, error) {
	p, err := Provider()
	if err != nil {
		return nil, err
	}
	if o.Authenticator == nil || o.Authorizer == nil {
		return nil, errors.New("front door: an authenticator and an authorizer are required")
	}
	sched, _ := r.(schedule.Reader)
	return &Step{bank: r, restores: restores, schedules: sched, now: time.Now, provider: p, deadLetters: o.DeadLetters,
		authn: o.Authenticator, authz: o.Authorizer, sink: o.Sink, protected: sortedUnique(o.Protected)}, nil
}

type callerKey struct{}

// callerOf is the caller Admit established.
func callerOf(ctx context.Context) (access.Caller, error) {
	c, ok := ctx.Value(callerKey{}).(access.Caller)
	if !ok || c.Username == "" {
		return access.Caller{}, function.Unauthenticated(errors.New("no authenticated caller"))
	}
	return c, nil
}

// Admit establishes the caller of a request from its bearer token.
func (s *Step) Admit(ctx context.Context, r *http.Request) (context.Context, error) {
	token, ok := access.BearerToken(r)
	if !ok {
		return nil, function.Unauthenticated(fmt.Errorf("no bearer token: send Authorization: Bearer <token>, a token for podguard's audience (kubectl create token <service account> --audience <audience>)"))
	}
	c, err := s.authn.Authenticate(ctx, token)
	if errors.Is(err, access.ErrUnauthenticated) {
		return nil, function.Unauthenticated(err)
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate the caller: %w", err)
	}
	logging.FromContext(ctx).Debugw("caller", zap.String("caller", c.Username))
	return context.WithValue(ctx, callerKey{}, c), nil
}

// require refuses, 403 with what is missing, unless c may do everything of ats.
func (s *Step) require(ctx context.Context, c access.Caller, ats []access.Attributes) error {
	d, err := s.authz.AllowedAll(ctx, c, ats)
	if err != nil {
		return fmt.Errorf("authorize %s: %w", c.Username, err)
	}
	if !d.Allowed {
		return function.Forbidden(errors.New(d.Reason))
	}
	return nil
}

// may reports whether c may do everything of ats (for filtering lists).
func (s *Step) may(ctx context.Context, c access.Caller, ats []access.Attributes) (bool, error) {
	d, err := s.authz.AllowedAll(ctx, c, ats)
	if err != nil {
		return false, fmt.Errorf("authorize %s: %w", c.Username, err)
	}
	return d.Allowed, nil
}

// Handle authorizes a request, then answers or forwards it.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if slices.Contains(readTypes, e.Type()) {
		return s.answer(ctx, c, e)
	}
	ats, err := s.rightsOf(ctx, e)
	if err != nil {
		return nil, err
	}
	if len(ats) > 0 {
		if err := s.require(ctx, c, ats); err != nil {
			return nil, err
		}
	}
	return nil, s.forward(ctx, c, e)
}

// rightsOf are the rights a forwarded request needs; what the request names that the
// bank must know (a checkpoint, a schedule) is read from the bank.
func (s *Step) rightsOf(ctx context.Context, e event.Event) ([]access.Attributes, error) {
	switch e.Type() {
	case events.ProtectRequested:
		var req events.ProtectRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		if err := checkScope("/plan/scope", req.Plan.Scope); err != nil {
			return nil, err
		}
		return rights("create", resCheckpoints, namespacesOf(req.Plan.Scope)), nil
	case events.PingSourceTick:
		// A team's PingSource protects a plan on its own cron: its firing carries the plan
		// and is authorized as the protect it starts. The tick is podguard's own
		// PingSource's, sent into the broker, never here.
		var fire struct {
			Plan *events.Plan `json:"plan"`
		}
		if len(e.Data()) > 0 {
			if err := function.Decode(e, &fire); err != nil {
				return nil, err
			}
		}
		if fire.Plan == nil {
			return nil, function.Permanent(errors.New("a PingSource firing sent to the front door must carry a plan ({\"plan\": ...}): the tick is podguard's own"))
		}
		if err := checkScope("/plan/scope", fire.Plan.Scope); err != nil {
			return nil, err
		}
		return rights("create", resCheckpoints, namespacesOf(fire.Plan.Scope)), nil
	case events.RestoreRequested:
		var req events.RestoreRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		sources, err := s.checkpointNamespaces(ctx, req.Checkpoint)
		if err != nil {
			return nil, err
		}
		targets := restoreTargets(req.Parameters, sources)
		lands := targets
		if lands == nil { // in place, from a cluster-wide checkpoint: where its pods are
			if lands, err = s.podNamespaces(ctx, req.Checkpoint); err != nil {
				return nil, err
			}
		}
		if err := s.unprotected(lands); err != nil {
			return nil, err
		}
		g, err := s.bank.Graph(ctx, req.Checkpoint)
		if err != nil {
			return nil, fmt.Errorf("graph of checkpoint %s: %w", req.Checkpoint, err)
		}
		out := append(rights("get", resCheckpoints, sources), rights("create", resRestores, targets)...)
		return append(out, objectRights(g, req.Parameters)...), nil
	case events.DeleteRequested:
		var req events.DeleteRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		ns, err := s.checkpointNamespaces(ctx, req.Checkpoint)
		if err != nil {
			return nil, err
		}
		return rights("delete", resCheckpoints, ns), nil
	case events.ScheduleSet:
		var req events.Schedule
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		if err := checkScope("/plan/scope", req.Plan.Scope); err != nil {
			return nil, err
		}
		ats := rights("create", resSchedules, namespacesOf(req.Plan.Scope))
		if old, ok, err := s.scheduleScope(ctx, req.ID); err != nil {
			return nil, err
		} else if ok {
			ats = append(ats, rights("update", resSchedules, namespacesOf(old))...)
		}
		return ats, nil
	case events.ScheduleDelete:
		var req events.ScheduleRef
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		old, ok, err := s.scheduleScope(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		if !ok { // nothing to delete: the choreographer answers found=false
			return nil, nil
		}
		return rights("delete", resSchedules, namespacesOf(old)), nil
	case events.PodsList:
		var req events.PodsListRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		if err := checkScope("/scope", req.Scope); err != nil {
			return nil, err
		}
		return rights("list", resProtectables, namespacesOf(req.Scope)), nil
	case events.PodShow:
		var req events.PodShowRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		return rights("get", resProtectables, namespacesOf(events.Scope{Pods: []string{req.Pod}})), nil
	case events.DeadLetterReplay:
		return []access.Attributes{{Verb: "create", Resource: resDeadLetters, Subresource: "replay"}}, nil
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not taken by the front door", e.Type()))
}

// checkScope refuses, as the functions behind would, a scope the schema lets through
// but that says more than one thing (the rights would be computed from one of them).
func checkScope(at string, sc events.Scope) error {
	if err := sc.Check(); err != nil {
		return function.Permanent(fmt.Errorf("%s: %w", at, err))
	}
	return nil
}

// podNamespaces are the namespaces of a stored checkpoint's pods.
func (s *Step) podNamespaces(ctx context.Context, id string) ([]string, error) {
	g, err := s.bank.Graph(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("graph of checkpoint %s: %w", id, err)
	}
	return g.PodNamespaces(), nil
}

// unprotected refuses a restore into a protected namespace.
func (s *Step) unprotected(targets []string) error {
	for _, ns := range targets {
		if slices.Contains(s.protected, ns) {
			return function.Forbidden(fmt.Errorf("/parameters/namespace: a restore never lands in namespace %q (protected: %s)", ns, strings.Join(s.protected, ", ")))
		}
	}
	return nil
}

// checkpointNamespaces are the namespaces of a stored checkpoint (nil: cluster-wide); a
// checkpoint the bank does not have is a bad request.
func (s *Step) checkpointNamespaces(ctx context.Context, id string) ([]string, error) {
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s does not exist", id))
	}
	if err != nil {
		return nil, err
	}
	return namespacesOf(cp.Scope), nil
}

// scheduleScope is the scope of a stored schedule's plan; false when there is none.
func (s *Step) scheduleScope(ctx context.Context, id string) (events.Scope, bool, error) {
	if s.schedules == nil || id == "" {
		return events.Scope{}, false, nil
	}
	r, err := s.schedules.Schedule(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return events.Scope{}, false, nil
	}
	if err != nil {
		return events.Scope{}, false, err
	}
	return r.Plan.Scope, true, nil
}

// forward sends an authorized request into the broker, naming its caller.
func (s *Step) forward(ctx context.Context, c access.Caller, e event.Event) error {
	if s.sink == nil {
		return errors.New("forward: no broker to send to (K_SINK is not set)")
	}
	if err := events.CheckCaller(c.Username); err != nil {
		// The operation could not record who asked: refused here, not after a 202.
		return function.Permanent(fmt.Errorf("the caller's name %s, so the request cannot say who asked", err))
	}
	out := e.Clone()
	out.SetExtension(events.ExtCaller, c.Username)
	if err := s.sink.Send(ctx, out); err != nil {
		return fmt.Errorf("forward %s %s into the broker: %w", e.Type(), e.ID(), err)
	}
	logging.FromContext(ctx).Infow("forwarded", zap.String("caller", c.Username))
	return nil
}
