package function

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/observe"
)

// LoadConfig reads a function's typed configuration from the environment and validates
// it (a Validate method, when it has one). The error names the missing or bad variable.
func LoadConfig(cfg any) error { return LoadConfigWith(cfg, nil) }

// LoadConfigWith is LoadConfig with set, when not nil, called between reading the
// environment and validating: the local runner gives a function what it provides itself
// (the bank's keyring it made) this way.
func LoadConfigWith(cfg any, set func()) error {
	if err := envconfig.Process("", cfg); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if set != nil {
		set()
	}
	if v, ok := cfg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("configuration: %w", err)
		}
	}
	return nil
}

// Base is the configuration every function reads from the environment: the Knative
// runtime contract plus logging and timing knobs.
type Base struct {
	// Port is where the CloudEvents endpoint and the probes listen (Knative sets PORT).
	Port int `envconfig:"PORT" default:"8080"`
	// Host to bind; Knative needs all interfaces, local mode binds 127.0.0.1.
	Host string `envconfig:"BIND_HOST" default:""`
	// Sink receives emitted and reply events (K_SINK, set by a SinkBinding or the local runner).
	Sink string `envconfig:"K_SINK"`
	// CEOverrides is K_CE_OVERRIDES: extension attributes for every emitted event.
	CEOverrides string `envconfig:"K_CE_OVERRIDES"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`
	// HandlerTimeout bounds one event's handling.
	HandlerTimeout time.Duration `envconfig:"HANDLER_TIMEOUT" default:"5m"`
	// DrainTimeout bounds the wait for in-flight requests after SIGTERM.
	DrainTimeout time.Duration `envconfig:"DRAIN_TIMEOUT" default:"30s"`
	// AuthenticationOIDC is sender identity inside the broker, as Knative Eventing's
	// authentication-oidc feature: enabled or disabled (also when empty). Enabled, every
	// delivery must carry a token of the Trigger that routes its type to the function,
	// for OIDC_AUDIENCE, verified against the keys of the apiserver (reached in-cluster,
	// or by KUBECONFIG): 401 without a valid one, 403 from another Trigger; and every
	// event sent to K_SINK carries the function's token, from K_SINK_TOKEN_FILE. A
	// function that authenticates its own callers (the front door) keeps its own check.
	AuthenticationOIDC string `envconfig:"AUTHENTICATION_OIDC" default:"disabled"`
	// OIDCAudience is the audience of the tokens of deliveries to the function (the
	// audience its Triggers name); events.FunctionAudience of the function when empty.
	OIDCAudience string `envconfig:"OIDC_AUDIENCE"`
	// SinkTokenFile holds the function's own token for the broker's audience
	// (events.BrokerAudience), a projected service-account token the kubelet refreshes;
	// required with AUTHENTICATION_OIDC=enabled and K_SINK set.
	SinkTokenFile string `envconfig:"K_SINK_TOKEN_FILE"`
	// Namespace is podguard's namespace, where its Triggers are; unset, the namespace
	// of the mounted ServiceAccount token (in a cluster). Needed with
	// AUTHENTICATION_OIDC=enabled.
	Namespace string `envconfig:"POD_NAMESPACE"`
}

// The values of AUTHENTICATION_OIDC, as Knative's feature flags say them.
const (
	oidcEnabled  = "enabled"
	oidcDisabled = "disabled"
)

// Validate checks the settings that depend on one another.
func (b *Base) Validate() error {
	switch b.AuthenticationOIDC {
	case oidcEnabled, oidcDisabled, "":
	default:
		return fmt.Errorf("AUTHENTICATION_OIDC: %q, want %s or %s", b.AuthenticationOIDC, oidcEnabled, oidcDisabled)
	}
	if b.oidc() && b.Sink != "" && b.SinkTokenFile == "" {
		return errors.New("K_SINK_TOKEN_FILE: required with AUTHENTICATION_OIDC=enabled and K_SINK set: the file of the function's token for the broker")
	}
	return nil
}

// oidc reports whether sender identity is on.
func (b *Base) oidc() bool { return b.AuthenticationOIDC == oidcEnabled }

// Env is what the runtime hands to a step's constructor.
type Env struct {
	// Sink sends events to the broker; nil when K_SINK is not set.
	Sink Sender
	// Telemetry is the function's metrics and tracer (also in the constructor's
	// context: observe.FromContext).
	Telemetry *observe.Telemetry
}

// Function describes one function to Main.
type Function[C any] struct {
	// Name is the function's name, used in logs and as the source of its events.
	Name string
	// Accepts lists the event types it handles.
	Accepts []string
	// New builds the step from its typed configuration.
	New func(ctx context.Context, cfg *C, env Env) (Handler, error)
	// AcceptAny hands the step every event, unchecked (see ServerOptions.AcceptAny).
	AcceptAny bool
	// AnswerCallers writes replies in the HTTP response, to the caller who sent the
	// request directly, instead of sending them to K_SINK; the step still gets K_SINK
	// (Env.Sink) for what it sends itself. The front door takes this.
	AnswerCallers bool
}

// Main runs f until SIGTERM or SIGINT, then drains in-flight requests. It exits the
// process with status 1 when the configuration is missing or bad, naming the variable.
func Main[C any](f Function[C]) {
	if err := Run(context.Background(), f, nil); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", f.Name, err)
		os.Exit(1)
	}
}

// Run is Main without the exit; ready, when not nil, receives the bound address once the
// function serves.
func Run[C any](ctx context.Context, f Function[C], ready chan<- net.Addr) error {
	var base Base
	if err := LoadConfig(&base); err != nil {
		return err
	}
	var cfg C
	if err := LoadConfig(&cfg); err != nil {
		return err
	}
	overrides, err := parseOverrides(base.CEOverrides)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	var obs observe.Config
	if err := LoadConfig(&obs); err != nil {
		return err
	}
	logger, _ := logging.NewLogger("", base.LogLevel)
	logger = logger.Named(f.Name)
	defer func() { _ = logger.Sync() }()
	ctx = logging.WithLogger(ctx, logger)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	telemetry, err := observe.New(ctx, f.Name, obs)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := telemetry.Shutdown(sctx); err != nil {
			logger.Warnw("flushing telemetry", zap.Error(err))
		}
	}()
	ctx = observe.WithTelemetry(ctx, telemetry)
	env := Env{Telemetry: telemetry}
	if base.Sink != "" {
		s, err := sinkSender(ctx, &base)
		if err != nil {
			return err
		}
		env.Sink = TracedSender(s, telemetry)
	}
	if m := telemetry.Handler(); m != nil {
		go func() {
			if err := ServeMetrics(ctx, obs.MetricsAddr(base.Host), m, logger, nil); err != nil {
				logger.Errorw("metrics endpoint", zap.Error(err))
			}
		}()
	}
	h, err := f.New(ctx, &cfg, env)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	v, err := events.NewValidator()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	replies := env.Sink
	if f.AnswerCallers {
		replies = nil
	}
	gate := GateOf(h)
	if gate == nil && base.oidc() {
		if gate, err = deliveryGate(ctx, f.Name, &base); err != nil {
			return err
		}
	}
	srv := NewServer(f.Name, f.Accepts, h, v, ServerOptions{
		Sink: replies, Overrides: overrides, Timeout: base.HandlerTimeout, Logger: logger, AcceptAny: f.AcceptAny,
		Telemetry: telemetry, Gate: gate,
	})
	return Serve(ctx, net.JoinHostPort(base.Host, strconv.Itoa(base.Port)), WithReadAPI(srv, h), base.DrainTimeout, logger, ready)
}

// sinkSender is the sender to K_SINK; with sender identity on, it presents the token of
// K_SINK_TOKEN_FILE, which must be readable at start.
func sinkSender(ctx context.Context, base *Base) (*HTTPSender, error) {
	if !base.oidc() {
		s, err := NewHTTPSender(base.Sink)
		if err != nil {
			return nil, fmt.Errorf("configuration: K_SINK: %w", err)
		}
		return s, nil
	}
	ts := NewFileTokenSource(base.SinkTokenFile)
	if _, err := ts.Token(ctx); err != nil {
		return nil, fmt.Errorf("configuration: K_SINK_TOKEN_FILE: %w", err)
	}
	s, err := NewTokenSender(base.Sink, ts)
	if err != nil {
		return nil, fmt.Errorf("configuration: K_SINK: %w", err)
	}
	logging.FromContext(ctx).Infow("events to the sink carry the function's token", zap.String("token-file", base.SinkTokenFile))
	return s, nil
}

// deliveryGate is the DeliveryGate of function fn, whose tokens it verifies with the keys
// the apiserver's OIDC discovery gives.
func deliveryGate(ctx context.Context, fn string, base *Base) (*DeliveryGate, error) {
	ns := PodNamespace(base.Namespace)
	if ns == "" {
		return nil, fmt.Errorf("configuration: POD_NAMESPACE: unset, and no namespace in %s: the namespace of podguard's Triggers, needed with AUTHENTICATION_OIDC=enabled", serviceAccountNamespace)
	}
	var kc kube.Config
	if err := LoadConfig(&kc); err != nil {
		return nil, err
	}
	rc, err := kc.RESTConfig(nil)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	keys, issuer, err := access.DiscoveryKeysFor(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	audience := cmp.Or(base.OIDCAudience, events.FunctionAudience(fn))
	v, err := access.NewVerifier(keys, access.VerifierOptions{Issuer: issuer, Audience: audience})
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	logging.FromContext(ctx).Infow("deliveries must carry a token of their Trigger",
		zap.String("issuer", issuer), zap.String("audience", audience), zap.String("namespace", ns))
	return NewDeliveryGate(v, ns, fn), nil
}

// GateOf is h as a Gate, when it is one (nil otherwise): how the runtime gates a step.
func GateOf(h Handler) Gate {
	g, _ := h.(Gate)
	return g
}

// ReadAPI is implemented by steps that also answer plain HTTP reads (GET) under /api/.
type ReadAPI interface {
	ReadAPI() http.Handler
}

// WithReadAPI mounts h's read API, if it has one, under /api/ beside the CloudEvents
// endpoint srv.
func WithReadAPI(srv http.Handler, h Handler) http.Handler {
	r, ok := h.(ReadAPI)
	if !ok {
		return srv
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", r.ReadAPI())
	mux.Handle("/", srv)
	return mux
}

// Serve serves h on addr with /healthz (liveness) and /readyz (readiness) until ctx ends,
// then fails readiness and drains in-flight requests for up to drain.
func Serve(ctx context.Context, addr string, h http.Handler, drain time.Duration, logger *zap.SugaredLogger, ready chan<- net.Addr) error {
	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.Handle("/", h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Infow("serving CloudEvents", zap.String("addr", ln.Addr().String()))
	if ready != nil {
		ready <- ln.Addr()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	draining.Store(true)
	logger.Infow("draining in-flight requests", zap.Duration("timeout", drain))
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// HTTPSender sends events to a fixed target over HTTP in binary mode.
type HTTPSender struct {
	client cloudevents.Client
	target string
	token  TokenSource // nil: no Authorization header
}

// NewHTTPSender sends to target (a K_SINK URL).
func NewHTTPSender(target string) (*HTTPSender, error) {
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(target))
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", target, err)
	}
	return &HTTPSender{client: c, target: target}, nil
}

// NewTokenSender sends to target with Authorization: Bearer and the token of ts, asked
// for each event: as a function sends into the broker with sender identity on.
func NewTokenSender(target string, ts TokenSource) (*HTTPSender, error) {
	if ts == nil {
		return nil, fmt.Errorf("sender to %s: no token source", target)
	}
	s, err := NewHTTPSender(target)
	if err != nil {
		return nil, err
	}
	s.token = ts
	return s, nil
}

// Target is where s sends.
func (s *HTTPSender) Target() string { return s.target }

// Send delivers e; a non-2xx answer is an error, and so is a failure to get the token,
// which is then not sent.
func (s *HTTPSender) Send(ctx context.Context, e event.Event) error {
	if s.token != nil {
		token, err := s.token.Token(ctx)
		if err != nil {
			return fmt.Errorf("send %s %s to %s: %w", e.Type(), e.ID(), s.target, err)
		}
		// The request takes this header as its own: a copy for each.
		h := cehttp.HeaderFrom(ctx).Clone()
		h.Set("Authorization", "Bearer "+token)
		ctx = cehttp.WithCustomHeader(ctx, h)
	}
	if res := s.client.Send(ctx, e); !cloudevents.IsACK(res) {
		return fmt.Errorf("send %s %s to %s: %w", e.Type(), e.ID(), s.target, res)
	}
	return nil
}

// ServeMetrics serves the Prometheus exposition h at /metrics on addr until ctx ends;
// ready, when not nil, receives the bound address.
func ServeMetrics(ctx context.Context, addr string, h http.Handler, logger *zap.SugaredLogger, ready chan<- net.Addr) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Infow("serving metrics", zap.String("addr", "http://"+ln.Addr().String()+"/metrics"))
	if ready != nil {
		ready <- ln.Addr()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: stop: %w", err)
	}
	return nil
}

// TracedSender sends through s with the trace context of the sender's context written
// into each event, so that its receiver continues the trace.
func TracedSender(s Sender, t *observe.Telemetry) Sender {
	if s == nil || !t.Tracing() {
		return s
	}
	return tracedSender{s, t}
}

type tracedSender struct {
	s Sender
	t *observe.Telemetry
}

func (s tracedSender) Send(ctx context.Context, e event.Event) error {
	s.t.Inject(ctx, &e)
	return s.s.Send(ctx, e)
}
