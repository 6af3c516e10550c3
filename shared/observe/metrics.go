package observe

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Operation kinds, the `kind` label.
const (
	Protect = "protect"
	Restore = "restore"
	Delete  = "delete"
)

// Cinder operations, the `operation` label.
const (
	CinderBackup  = "backup"
	CinderRestore = "restore"
)

// Metrics are podguard's instruments. Their labels are bounded: functions, event types,
// operation kinds, statuses, resource types and plan ids; never a checkpoint, restore,
// pod or volume id. The Prometheus names (with the exporter's suffixes) are in the
// README's Monitoring section.
type Metrics struct {
	events      metric.Int64Counter
	eventTime   metric.Float64Histogram
	started     metric.Int64Counter
	finished    metric.Int64Counter
	opTime      metric.Float64Histogram
	resources   metric.Int64Counter
	cinderTime  metric.Float64Histogram
	moved       metric.Int64Counter
	retries     metric.Int64Counter
	deadLetters metric.Int64Counter

	mu      sync.Mutex
	flights map[string]Flights
	plans   map[string]Plan
}

// Flights are the operations of one kind in flight, as the choreographer's tick found
// them.
type Flights struct {
	// Count is how many are in flight.
	Count int
	// DeadlineUsed is the largest fraction of its deadline one of them has used.
	DeadlineUsed float64
}

// Plan is what the metrics say of one plan. Zero times and intervals are not reported.
type Plan struct {
	LastAvailable time.Time
	LastFailed    time.Time
	// Available is how many available checkpoints of the plan are kept; negative when
	// unknown.
	Available int
	// Interval is the interval of the plan's schedule.
	Interval time.Duration
}

var (
	eventBuckets     = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	operationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}
	cinderBuckets    = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}
)

func newMetrics(m metric.Meter) (*Metrics, error) {
	x := &Metrics{flights: map[string]Flights{}, plans: map[string]Plan{}}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	x.events = counter("podguard.events.handled", "", "CloudEvents handled, by function, type and outcome (2xx, 400, 4xx, 5xx).")
	x.eventTime = histogram("podguard.event.duration", "Time to handle one CloudEvent.", eventBuckets)
	x.started = counter("podguard.operations.started", "", "Operations started, by kind (protect, restore, delete).")
	x.finished = counter("podguard.operations.finished", "", "Operations finished, by kind and final status.")
	x.opTime = histogram("podguard.operation.duration", "Time from an operation's request to its end, by kind and final status.", operationBuckets)
	x.resources = counter("podguard.resources", "", "Resources settled by finished operations, by kind, resource type and status.")
	x.cinderTime = histogram("podguard.cinder.duration", "Time of one Cinder backup, restore or backup deletion, from request to its end.", cinderBuckets)
	x.moved = counter("podguard.volumes.moved", "By", "Size of the volumes backed up or restored.")
	x.retries = counter("podguard.retries", "", "Step requests the choreographer sent again, by type.")
	x.deadLetters = counter("podguard.dead_letters", "", "Dead letters recorded, by event type.")

	gauge := func(name, unit, desc string, cb metric.Int64Callback) {
		_, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithInt64Callback(cb))
		errs = append(errs, err)
	}
	fgauge := func(name, unit, desc string, cb metric.Float64Callback) {
		_, err := m.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithFloat64Callback(cb))
		errs = append(errs, err)
	}
	gauge("podguard.operations.in_flight", "", "Operations in flight, by kind, as of the last tick.", func(_ context.Context, o metric.Int64Observer) error {
		for kind, f := range x.snapshotFlights() {
			o.Observe(int64(f.Count), metric.WithAttributes(attribute.String("kind", kind)))
		}
		return nil
	})
	fgauge("podguard.operation.deadline_used_ratio", "", "The largest fraction of its deadline an operation in flight has used, by kind.", func(_ context.Context, o metric.Float64Observer) error {
		for kind, f := range x.snapshotFlights() {
			o.Observe(f.DeadlineUsed, metric.WithAttributes(attribute.String("kind", kind)))
		}
		return nil
	})
	fgauge("podguard.plan.last_available_timestamp", "s", "Unix time of the plan's newest available checkpoint.", func(_ context.Context, o metric.Float64Observer) error {
		for id, p := range x.snapshotPlans() {
			if !p.LastAvailable.IsZero() {
				o.Observe(unix(p.LastAvailable), metric.WithAttributes(attribute.String("plan", id)))
			}
		}
		return nil
	})
	fgauge("podguard.plan.last_failed_timestamp", "s", "Unix time of the plan's newest failed protect.", func(_ context.Context, o metric.Float64Observer) error {
		for id, p := range x.snapshotPlans() {
			if !p.LastFailed.IsZero() {
				o.Observe(unix(p.LastFailed), metric.WithAttributes(attribute.String("plan", id)))
			}
		}
		return nil
	})
	gauge("podguard.plan.available_checkpoints", "", "Available checkpoints of the plan kept in the bank.", func(_ context.Context, o metric.Int64Observer) error {
		for id, p := range x.snapshotPlans() {
			if p.Available >= 0 {
				o.Observe(int64(p.Available), metric.WithAttributes(attribute.String("plan", id)))
			}
		}
		return nil
	})
	fgauge("podguard.plan.schedule_interval", "s", "Interval of the plan's schedule.", func(_ context.Context, o metric.Float64Observer) error {
		for id, p := range x.snapshotPlans() {
			if p.Interval > 0 {
				o.Observe(p.Interval.Seconds(), metric.WithAttributes(attribute.String("plan", id)))
			}
		}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("instruments: %w", err)
		}
	}
	return x, nil
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Outcome is the `outcome` label of an HTTP answer: 2xx, 400, 4xx or 5xx.
func Outcome(status int) string {
	switch {
	case status == http.StatusBadRequest:
		return "400"
	case status >= 500:
		return "5xx"
	case status >= 400:
		return "4xx"
	}
	return "2xx"
}

// EventHandled counts one CloudEvent a function answered with status, and its time.
func (x *Metrics) EventHandled(ctx context.Context, function, eventType string, status int, took time.Duration) {
	a := attrs("function", function, "event_type", eventType, "outcome", Outcome(status))
	x.events.Add(ctx, 1, a)
	x.eventTime.Record(ctx, took.Seconds(), a)
}

// OperationStarted counts an operation of kind that was started (not its duplicates).
func (x *Metrics) OperationStarted(ctx context.Context, kind string) {
	x.started.Add(ctx, 1, attrs("kind", kind))
}

// OperationFinished counts an operation that ended (once) with status, after took.
func (x *Metrics) OperationFinished(ctx context.Context, kind, status string, took time.Duration) {
	a := attrs("kind", kind, "status", status)
	x.finished.Add(ctx, 1, a)
	x.opTime.Record(ctx, took.Seconds(), a)
}

// ResourcesSettled counts n resources of type typ that an operation of kind settled with
// status.
func (x *Metrics) ResourcesSettled(ctx context.Context, kind, typ, status string, n int) {
	if n > 0 {
		x.resources.Add(ctx, int64(n), attrs("kind", kind, "resource_type", typ, "status", status))
	}
}

// CinderDone records one Cinder backup or restore that ended with status: its time
// from started (its creation; not recorded when unknown) to ended (when a step saw it
// end), and bytes, the size of the volume moved (0 for a failure).
func (x *Metrics) CinderDone(ctx context.Context, operation, status string, started, ended time.Time, bytes int64) {
	if !started.IsZero() && !ended.Before(started) {
		x.cinderTime.Record(ctx, ended.Sub(started).Seconds(), attrs("operation", operation, "status", status))
	}
	if bytes > 0 {
		x.moved.Add(ctx, bytes, attrs("operation", operation))
	}
}

// Retried counts n step requests of type eventType sent again.
func (x *Metrics) Retried(ctx context.Context, eventType string, n int) {
	if n > 0 {
		x.retries.Add(ctx, int64(n), attrs("event_type", eventType))
	}
}

// DeadLetter counts a dead letter recorded for an event of type eventType.
func (x *Metrics) DeadLetter(ctx context.Context, eventType string) {
	x.deadLetters.Add(ctx, 1, attrs("event_type", eventType))
}

// InFlight sets the operations of kind in flight.
func (x *Metrics) InFlight(kind string, f Flights) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.flights[kind] = f
}

// UpdatePlan changes what the metrics say of plan id.
func (x *Metrics) UpdatePlan(id string, update func(*Plan)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.plans[id]
	if !ok {
		p.Available = -1
	}
	update(&p)
	x.plans[id] = p
}

// KnowsPlan reports whether the metrics say anything of plan id yet.
func (x *Metrics) KnowsPlan(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.plans[id]
	return ok
}

// ForgetPlan drops plan id (its schedule and checkpoints are gone).
func (x *Metrics) ForgetPlan(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.plans, id)
}

func (x *Metrics) snapshotFlights() map[string]Flights {
	x.mu.Lock()
	defer x.mu.Unlock()
	return maps.Clone(x.flights)
}

func (x *Metrics) snapshotPlans() map[string]Plan {
	x.mu.Lock()
	defer x.mu.Unlock()
	return maps.Clone(x.plans)
}
