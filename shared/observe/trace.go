package observe

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The CloudEvents distributed tracing extension: W3C trace context as event attributes.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

// eventCarrier reads and writes the trace context of an event's extensions.
type eventCarrier struct{ e *event.Event }

func (c eventCarrier) Get(key string) string {
	if v, ok := c.e.Extensions()[key].(string); ok {
		return v
	}
	return ""
}

func (c eventCarrier) Set(key, value string) {
	if key == ExtTraceParent || key == ExtTraceState {
		c.e.SetExtension(key, value)
	}
}

func (c eventCarrier) Keys() []string { return []string{ExtTraceParent, ExtTraceState} }

// StartDelivery starts the span of one delivery of e to function, as a child of the
// trace context e carries (or, when it carries none, of the request's traceparent
// header). When tracing is off it returns ctx and a span that records nothing.
func (t *Telemetry) StartDelivery(ctx context.Context, r *http.Request, e event.Event, function string) (context.Context, trace.Span) {
	if !t.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	parent := t.propagator.Extract(ctx, eventCarrier{&e})
	if !trace.SpanContextFromContext(parent).IsValid() && r != nil {
		parent = t.propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	return t.tracer.Start(parent, e.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("faas.name", function), attribute.String("cloudevents.event_id", e.ID()),
			attribute.String("cloudevents.event_type", e.Type()), attribute.String("cloudevents.event_source", e.Source())))
}

// Inject writes the trace context of ctx into e's extensions, so that the step that
// receives e continues the trace. Nothing is written when ctx has no span.
func (t *Telemetry) Inject(ctx context.Context, e *event.Event) {
	if !t.tracing || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	t.propagator.Inject(ctx, eventCarrier{e})
}

// TraceParent is the traceparent of ctx's span, "" when there is none: an operation
// records it so that work done later for it (a tick's re-drive) joins its trace.
func (t *Telemetry) TraceParent(ctx context.Context) string {
	if !t.tracing || !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	t.propagator.Inject(ctx, c)
	return c[ExtTraceParent]
}

// Resume starts a span named name in the trace of an operation that recorded
// traceparent, linked to the span of ctx (a tick's delivery) that caused it.
func (t *Telemetry) Resume(ctx context.Context, traceparent, name string) (context.Context, trace.Span) {
	if !t.tracing || traceparent == "" {
		return ctx, trace.SpanFromContext(ctx)
	}
	sc := trace.SpanContextFromContext(t.propagator.Extract(context.Background(), propagation.MapCarrier{ExtTraceParent: traceparent}))
	if !sc.IsValid() {
		return ctx, trace.SpanFromContext(ctx)
	}
	// ctx keeps its deadline and values; only its parent span changes.
	return t.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, sc), name, trace.WithLinks(trace.LinkFromContext(ctx)))
}

// StartOperation starts the root span of a new operation's trace (one trace per
// operation), linked to the span of ctx (the delivery of its request).
func (t *Telemetry) StartOperation(ctx context.Context, name string, kv ...attribute.KeyValue) (context.Context, trace.Span) {
	if !t.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, name, trace.WithNewRoot(), trace.WithLinks(trace.LinkFromContext(ctx)), trace.WithAttributes(kv...))
}

// Start starts a span named name under ctx's span.
func (t *Telemetry) Start(ctx context.Context, name string, kv ...attribute.KeyValue) (context.Context, trace.Span) {
	if !t.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, name, trace.WithAttributes(kv...))
}

// End ends span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Transport wraps base (nil: http.DefaultTransport) so that every call to peer (swift,
// cinder, kubernetes, ...) is a client span of the caller's trace, with the trace context
// sent in the traceparent header. When tracing is off base is returned as it is.
func (t *Telemetry) Transport(base http.RoundTripper, peer string) http.RoundTripper {
	if !t.tracing {
		return base
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.tracers),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return peer + " " + r.Method }),
		otelhttp.WithSpanOptions(trace.WithAttributes(attribute.String("peer.service", peer))),
	)
}
