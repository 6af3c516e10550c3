// Package observe is podguard's telemetry: OpenTelemetry metrics, exposed for Prometheus
// (the default) or pushed over OTLP, and traces over OTLP (off by default), configured
// with the keys of Knative's observability config (metrics-protocol, metrics-endpoint,
// tracing-protocol, tracing-endpoint, tracing-sampling-rate) read from the environment.
//
// Each function owns one Telemetry: its own Prometheus registry served on its own
// address, so that the local runner, which hosts every function in one process, keeps
// their series apart (Knative's own Prometheus setup serves the process-wide registry).
// Nothing here is global: a Telemetry travels in the context (WithTelemetry,
// FromContext), as knative.dev/pkg's logger does.
//
//	t, err := observe.New(ctx, "choreographer", cfg)
//	defer t.Shutdown(ctx)
//	ctx = observe.WithTelemetry(ctx, t)
//	t.Metrics.OperationStarted(ctx, observe.Protect)
//	http.Handle("/metrics", t.Handler())
package observe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"knative.dev/pkg/observability"
	kmetrics "knative.dev/pkg/observability/metrics"
	ktracing "knative.dev/pkg/observability/tracing"
)

// Config is a function's telemetry configuration from the environment. The values are
// those of Knative's observability config keys of the same names.
type Config struct {
	// MetricsProtocol is prometheus (served at MetricsEndpoint), grpc or http/protobuf
	// (OTLP pushed to MetricsEndpoint), or none.
	MetricsProtocol string `envconfig:"METRICS_PROTOCOL" default:"prometheus"`
	// MetricsEndpoint: for prometheus the host:port to serve /metrics on (default
	// :9464, OpenTelemetry's Prometheus exporter port: Knative's components serve on
	// 9090, but in a Knative Service's pod 9090 and 9091 are the queue-proxy's); for
	// OTLP the collector's URL.
	MetricsEndpoint string `envconfig:"METRICS_ENDPOINT"`
	// MetricsExportInterval is how often OTLP metrics are pushed.
	MetricsExportInterval time.Duration `envconfig:"METRICS_EXPORT_INTERVAL"`
	// TracingProtocol is none (the default: no spans are made), grpc, http/protobuf or
	// stdout.
	TracingProtocol string `envconfig:"TRACING_PROTOCOL" default:"none"`
	// TracingEndpoint is the OTLP collector's URL.
	TracingEndpoint string `envconfig:"TRACING_ENDPOINT"`
	// TracingSamplingRate is the fraction of new traces sampled (a trace started
	// upstream keeps its own decision).
	TracingSamplingRate float64 `envconfig:"TRACING_SAMPLING_RATE" default:"1"`
}

// MetricsPort is the port Prometheus metrics are served on when METRICS_ENDPOINT is not
// set.
const MetricsPort = "9464"

// knative parses the configuration as Knative's observability config, so that the same
// values are accepted and refused.
func (c Config) knative() (*observability.Config, error) {
	m := map[string]string{
		"metrics-protocol":      c.MetricsProtocol,
		"metrics-endpoint":      c.MetricsEndpoint,
		"tracing-protocol":      c.TracingProtocol,
		"tracing-endpoint":      c.TracingEndpoint,
		"tracing-sampling-rate": strconv.FormatFloat(c.TracingSamplingRate, 'f', -1, 64),
	}
	if c.MetricsExportInterval > 0 {
		m["metrics-export-interval"] = c.MetricsExportInterval.String()
	}
	kc, err := observability.NewFromMap(m)
	if err != nil {
		return nil, fmt.Errorf("telemetry configuration: %w", err)
	}
	return kc, nil
}

// MetricsAddr is where Prometheus metrics are to be served, on host unless
// METRICS_ENDPOINT says where; "" when they are not served.
func (c Config) MetricsAddr(host string) string {
	if c.MetricsProtocol != kmetrics.ProtocolPrometheus {
		return ""
	}
	if c.MetricsEndpoint == "" {
		return net.JoinHostPort(host, MetricsPort)
	}
	return c.MetricsEndpoint
}

// Telemetry is one function's meters and tracer.
type Telemetry struct {
	// Metrics are podguard's instruments.
	Metrics *Metrics

	service    string
	meters     metric.MeterProvider
	tracers    trace.TracerProvider
	tracer     trace.Tracer
	tracing    bool
	propagator propagation.TextMapPropagator
	registry   *promclient.Registry
	shutdown   []func(context.Context) error
}

// New builds the telemetry of service (a function's name).
func New(ctx context.Context, service string, cfg Config) (*Telemetry, error) {
	kc, err := cfg.knative()
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(semconv.ServiceName(service), semconv.ServiceNamespace("podguard"))
	t := &Telemetry{service: service, propagator: propagation.TraceContext{}}
	switch kc.Metrics.Protocol {
	case kmetrics.ProtocolPrometheus:
		reg := promclient.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg),
			otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
			otelprom.WithoutScopeInfo())
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
		t.meters, t.registry = mp, reg
		t.shutdown = append(t.shutdown, mp.Shutdown)
	case kmetrics.ProtocolNone:
		t.meters = noop.NewMeterProvider()
	default:
		mp, err := kmetrics.NewMeterProvider(ctx, kc.Metrics, sdkmetric.WithResource(res))
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		t.meters = mp
		t.shutdown = append(t.shutdown, mp.Shutdown)
	}
	if kc.Tracing.Protocol == ktracing.ProtocolNone {
		t.tracers = tracenoop.NewTracerProvider()
	} else {
		// A trace started upstream keeps its sampling decision; the rate applies to
		// the traces podguard starts.
		tp, err := ktracing.NewTracerProvider(ctx, kc.Tracing, sdktrace.WithResource(res))
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		t.tracers, t.tracing = tp, true
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	t.tracer = t.tracers.Tracer(scope)
	if t.Metrics, err = newMetrics(t.meters.Meter(scope)); err != nil {
		return nil, err
	}
	return t, nil
}

// scope names podguard's instrumentation.
const scope = "github.com/podguard/podguard"

// Noop is telemetry that records nothing, for tests and tools.
func Noop() *Telemetry {
	t := &Telemetry{meters: noop.NewMeterProvider(), tracers: tracenoop.NewTracerProvider(), propagator: propagation.TraceContext{}}
	t.tracer = t.tracers.Tracer(scope)
	t.Metrics, _ = newMetrics(t.meters.Meter(scope)) // a noop meter makes no errors
	return t
}

// Handler serves the Prometheus exposition of the function's metrics; nil when metrics
// are not served for Prometheus.
func (t *Telemetry) Handler() http.Handler {
	if t.registry == nil {
		return nil
	}
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Tracing reports whether spans are recorded and exported.
func (t *Telemetry) Tracing() bool { return t.tracing }

// Shutdown flushes what is buffered (spans, OTLP metrics) and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

type ctxKey struct{}

// WithTelemetry returns ctx carrying t.
func WithTelemetry(ctx context.Context, t *Telemetry) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the telemetry ctx carries, or one that records nothing.
func FromContext(ctx context.Context) *Telemetry {
	if t, ok := ctx.Value(ctxKey{}).(*Telemetry); ok && t != nil {
		return t
	}
	return Noop()
}

// attrs builds an attribute set option from key, value pairs.
func attrs(kv ...string) metric.MeasurementOption {
	a := make([]attribute.KeyValue, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		a = append(a, attribute.String(kv[i], kv[i+1]))
	}
	return metric.WithAttributeSet(attribute.NewSet(a...))
}
