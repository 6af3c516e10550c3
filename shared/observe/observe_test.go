package observe

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// scrape returns the Prometheus exposition of t.
func scrape(t *testing.T, tel *Telemetry) string {
	t.Helper()
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPrometheusNames pins the names and labels operators' rules and dashboards use
// (README, Monitoring; deploy/monitoring).
func TestPrometheusNames(t *testing.T) {
	ctx := context.Background()
	tel, err := New(ctx, "choreographer", Config{MetricsProtocol: "prometheus", MetricsEndpoint: "127.0.0.1:0", TracingProtocol: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	m := tel.Metrics
	m.EventHandled(ctx, "choreographer", "dev.podguard.protect.requested", 202, 20*time.Millisecond)
	m.EventHandled(ctx, "choreographer", "dev.podguard.protect.requested", 400, time.Millisecond)
	m.OperationStarted(ctx, Protect)
	m.OperationFinished(ctx, Protect, "available", 90*time.Second)
	m.ResourcesSettled(ctx, Protect, "OS::Kubernetes::Pod", "available", 3)
	now := time.Unix(1_800_000_000, 0)
	m.CinderDone(ctx, CinderBackup, "available", now.Add(-time.Minute), now, 2<<30)
	m.Retried(ctx, "dev.podguard.volume.backup", 2)
	m.DeadLetter(ctx, "dev.podguard.volume.backup")
	m.InFlight(Restore, Flights{Count: 2, DeadlineUsed: 0.5})
	m.UpdatePlan("shop", func(p *Plan) {
		p.LastAvailable, p.LastFailed, p.Available, p.Interval = now, now.Add(-time.Hour), 2, time.Hour
	})
	out := scrape(t, tel)
	for _, want := range []string{
		`podguard_events_handled_total{event_type="dev.podguard.protect.requested",function="choreographer",outcome="2xx"} 1`,
		`podguard_events_handled_total{event_type="dev.podguard.protect.requested",function="choreographer",outcome="400"} 1`,
		`podguard_event_duration_seconds_count{event_type="dev.podguard.protect.requested",function="choreographer",outcome="2xx"} 1`,
		`podguard_operations_started_total{kind="protect"} 1`,
		`podguard_operations_finished_total{kind="protect",status="available"} 1`,
		`podguard_operation_duration_seconds_sum{kind="protect",status="available"} 90`,
		`podguard_resources_total{kind="protect",resource_type="OS::Kubernetes::Pod",status="available"} 3`,
		`podguard_cinder_duration_seconds_sum{operation="backup",status="available"} 60`,
		`podguard_volumes_moved_bytes_total{operation="backup"} 2.147483648e+09`,
		`podguard_retries_total{event_type="dev.podguard.volume.backup"} 2`,
		`podguard_dead_letters_total{event_type="dev.podguard.volume.backup"} 1`,
		`podguard_operations_in_flight{kind="restore"} 2`,
		`podguard_operation_deadline_used_ratio{kind="restore"} 0.5`,
		`podguard_plan_last_available_timestamp_seconds{plan="shop"} 1.8e+09`,
		`podguard_plan_last_failed_timestamp_seconds{plan="shop"} 1.7999964e+09`,
		`podguard_plan_available_checkpoints{plan="shop"} 2`,
		`podguard_plan_schedule_interval_seconds{plan="shop"} 3600`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks\n  %s", want)
		}
	}
	// Nothing but podguard's own series and the exporter's target_info; no ids as labels.
	names := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names[regexp.MustCompile(`^[a-z_:]+`).FindString(line)] = true
	}
	var got []string
	for n := range names {
		if !strings.HasPrefix(n, "podguard_") && n != "target_info" {
			got = append(got, n)
		}
	}
	sort.Strings(got)
	if len(got) > 0 {
		t.Errorf("unexpected series %v", got)
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestOutcome(t *testing.T) {
	for status, want := range map[int]string{200: "2xx", 202: "2xx", 400: "400", 401: "4xx", 413: "4xx", 500: "5xx", 502: "5xx"} {
		if got := Outcome(status); got != want {
			t.Errorf("Outcome(%d) = %s, want %s", status, got, want)
		}
	}
}

func TestConfigRefusesWhatKnativeRefuses(t *testing.T) {
	for _, c := range []Config{
		{MetricsProtocol: "carrier-pigeon", TracingProtocol: "none"},
		{MetricsProtocol: "none", TracingProtocol: "grpc"}, // no endpoint
		{MetricsProtocol: "none", TracingProtocol: "none", TracingSamplingRate: 2},
	} {
		if _, err := New(context.Background(), "x", c); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}

// traced is telemetry whose spans are kept in memory.
func traced(t *testing.T) (*Telemetry, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel := Noop()
	tel.tracers, tel.tracer, tel.tracing = tp, tp.Tracer(scope), true
	return tel, exp
}

// TestTraceFollowsEvents: an operation's root span, the delivery of an event sent under
// it, and a tick's work resumed from the recorded traceparent share one trace id.
func TestTraceFollowsEvents(t *testing.T) {
	tel, exp := traced(t)
	ctx, root := tel.StartOperation(context.Background(), "podguard.protect")
	recorded := tel.TraceParent(ctx)
	e := event.New()
	e.SetID("1")
	e.SetType("dev.podguard.pods.list")
	e.SetSource("test")
	tel.Inject(ctx, &e)
	root.End()
	if e.Extensions()[ExtTraceParent] == nil {
		t.Fatalf("no traceparent extension on the event: %v", e.Extensions())
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	_, delivery := tel.StartDelivery(context.Background(), r, e, "list-pods")
	delivery.End()
	tick, tickSpan := tel.StartOperation(context.Background(), "tick")
	_, resumed := tel.Resume(tick, recorded, "podguard.check")
	resumed.End()
	tickSpan.End()

	spans := exp.GetSpans()
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	want := byName["podguard.protect"].SpanContext.TraceID()
	for _, n := range []string{"dev.podguard.pods.list", "podguard.check"} {
		if got := byName[n].SpanContext.TraceID(); got != want {
			t.Errorf("span %s in trace %s, want %s", n, got, want)
		}
	}
	if byName["dev.podguard.pods.list"].Parent.SpanID() != byName["podguard.protect"].SpanContext.SpanID() {
		t.Error("the delivery is not a child of the operation's span")
	}
	if byName["tick"].SpanContext.TraceID() == want {
		t.Error("the tick's own span joined the operation's trace")
	}
	if links := byName["podguard.check"].Links; len(links) != 1 || links[0].SpanContext.SpanID() != byName["tick"].SpanContext.SpanID() {
		t.Errorf("the resumed span is not linked to the tick: %+v", links)
	}
}

// TestOffCostsNothing: with tracing off, nothing is written into events and transports
// are left as they are.
func TestOffCostsNothing(t *testing.T) {
	tel := Noop()
	ctx, span := tel.StartOperation(context.Background(), "podguard.protect")
	defer span.End()
	e := event.New()
	tel.Inject(ctx, &e)
	if len(e.Extensions()) != 0 {
		t.Errorf("extensions written with tracing off: %v", e.Extensions())
	}
	if tel.Transport(http.DefaultTransport, "swift") != http.DefaultTransport {
		t.Error("transport wrapped with tracing off")
	}
	if tel.TraceParent(ctx) != "" {
		t.Error("a traceparent with tracing off")
	}
}
