package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.uber.org/zap"

	"github.com/podguard/podguard/shared/access"
)

// Extension attributes the broker sets, as Knative's broker does.
const (
	// ExtTTL counts how many more times an event may be answered with a reply before the
	// broker drops the reply: a guard against reply loops. It is not delivered to
	// subscribers.
	ExtTTL = "knativebrokerttl"
	// ExtArrivalTime is when the broker accepted the event.
	ExtArrivalTime = "knativearrivaltime"
	// ExtErrorDest, ExtErrorCode and ExtErrorData are set on dead letters: the URL whose
	// delivery failed, the last HTTP status (500 when there was no response), and the
	// start of the last response body, base64-encoded and cut to MaxErrorData characters.
	ExtErrorDest = "knativeerrordest"
	ExtErrorCode = "knativeerrorcode"
	ExtErrorData = "knativeerrordata"
)

const (
	// DefaultTTL is the ExtTTL of an event that arrives without one.
	DefaultTTL = 255
	// MaxEventBytes bounds an event accepted on the HTTP ingress, and a reply.
	MaxEventBytes = 1 << 20
	// MaxErrorData bounds the base64 text of ExtErrorData.
	MaxErrorData = 1024
)

var (
	// ErrClosed is returned for events sent after Close began.
	ErrClosed = errors.New("broker is closed")
	// ErrFull is returned when Options.MaxPending deliveries are already waiting.
	ErrFull = errors.New("broker is full")
	// ErrTTLExhausted is returned for an event whose ExtTTL is 0 or less.
	ErrTTLExhausted = errors.New("event TTL exhausted: is a subscriber replying to its own events?")
)

// Options tune a Broker; the zero value is usable.
type Options struct {
	// Workers bounds concurrent delivery attempts; default 16.
	Workers int
	// MaxPending bounds the deliveries waiting, retrying or in flight before the ingress
	// answers 503; default 10000. Replies of subscribers are never refused.
	MaxPending int
	// Client delivers events; default: a client that does not follow redirects.
	Client *http.Client
	// Logger receives structured logs (never event data); default: none.
	Logger *zap.SugaredLogger
	// Sleep waits out the backoff before a retry and must return early, with an error,
	// when ctx ends; default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Identity turns on sender identity (Knative's authentication-oidc): tokens and
	// EventPolicies at the ingress, tokens on deliveries. Nil: none.
	Identity *Identity
}

// Stats counts what the broker did since it started.
type Stats struct {
	// Ingested counts events accepted: from the ingress, Send, replies and replays.
	Ingested uint64
	// Unrouted counts accepted events that no Trigger matched (they are dropped).
	Unrouted uint64
	// Delivered counts deliveries a subscriber answered with 2xx.
	Delivered uint64
	// Retried counts delivery attempts after the first, to subscribers and sinks.
	Retried uint64
	// DeadLettered counts deliveries given up: they went to the dead-letter recorder
	// and, if the Trigger has one, to its dead-letter sink.
	DeadLettered uint64
	// Pending is the number of deliveries queued, waiting to retry or in flight.
	Pending int
}

// Broker is podguard's embedded broker: an HTTP ingress that accepts CloudEvents and
// delivers each to the subscribers of the Triggers whose filters match it, with the
// Triggers' retry, backoff and dead-letter rules. Delivery is concurrent, unordered and
// at-least-once.
type Broker struct {
	routes   []*route
	recorder *Recorder
	client   *http.Client
	log      *zap.SugaredLogger
	sleep    func(ctx context.Context, d time.Duration) error
	now      func() time.Time
	max      int
	guard    *guard // nil: no sender identity

	ctx    context.Context // ends when the broker stops: aborts attempts and waits
	cancel context.CancelFunc

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*job
	pending int
	state   state
	drained chan struct{} // closed once nothing is pending after Close began
	once    sync.Once

	routines sync.WaitGroup // workers and backoff waits

	ingested, unrouted, delivered, retried, deadLettered atomic.Uint64
}

type state int

const (
	open state = iota
	closing
	stopped
)

// route is a Trigger with its resolved URLs.
type route struct {
	trigger    Trigger
	target     string
	deadLetter string // empty: the recorder only
}

// audience is the OIDC audience of the destination of a delivery of r (toSink: of a
// dead letter); empty for none.
func (r *route) audience(toSink bool) string {
	if !toSink {
		return r.trigger.Subscriber.Audience
	}
	if dls := r.trigger.Delivery.DeadLetterSink; dls != nil {
		return dls.Audience
	}
	return ""
}

// job is one delivery of an event to a subscriber, or of a dead letter to its sink.
type job struct {
	route    *route
	target   string
	toSink   bool
	event    event.Event
	ttl      int32
	attempts int
	last     outcome
}

// New starts a broker for triggers. resolve maps the names of the Services that
// Triggers reference (subscribers and dead-letter sinks) to their URLs; a subscriber
// missing from it is an error, a dead-letter sink missing from it leaves dead letters
// to recorder alone (the local stand-in for the sink). A nil recorder keeps dead letters
// in memory only; see Broker.Recorder.
func New(triggers []Trigger, resolve map[string]string, recorder *Recorder, o Options) (*Broker, error) {
	if recorder == nil {
		recorder = &Recorder{}
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10000
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		if tr, ok := http.DefaultTransport.(*http.Transport); ok {
			tr = tr.Clone()
			tr.MaxIdleConnsPerHost = o.Workers
			o.Client.Transport = tr
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Broker{recorder: recorder, client: o.Client, log: o.Logger, sleep: o.Sleep, now: o.Now,
		max: o.MaxPending, drained: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	if o.Identity != nil {
		g, err := newGuard(o.Identity)
		if err != nil {
			return nil, err
		}
		b.guard = g
	}
	recorderOnly := map[string]bool{}
	for _, t := range triggers {
		target, err := resolveDestination(t.Subscriber, resolve)
		if err != nil {
			return nil, fmt.Errorf("trigger %q: subscriber: %w", t.Name, err)
		}
		r := &route{trigger: t, target: target}
		if dls := t.Delivery.DeadLetterSink; dls != nil {
			r.deadLetter, err = resolveDestination(*dls, resolve)
			var unknown *unknownRefError
			switch {
			case errors.As(err, &unknown) && dls.URI == "":
				if !recorderOnly[dls.Ref] {
					recorderOnly[dls.Ref] = true
					b.log.Infow("dead-letter sink has no local address: its dead letters are kept by the recorder only",
						zap.String("sink", dls.Ref))
				}
			case err != nil:
				return nil, fmt.Errorf("trigger %q: dead-letter sink: %w", t.Name, err)
			}
		}
		if b.guard != nil && b.guard.tokens == nil {
			for _, aud := range []string{r.audience(false), r.audience(true)} {
				if aud != "" {
					return nil, fmt.Errorf("trigger %q: audience %q, but the identity has no token source", t.Name, aud)
				}
			}
		}
		b.routes = append(b.routes, r)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.routines.Add(o.Workers)
	for range o.Workers {
		go b.work()
	}
	return b, nil
}

type unknownRefError struct{ name string }

func (e *unknownRefError) Error() string {
	return fmt.Sprintf("service %q is not among the addresses given to the broker", e.name)
}

// resolveDestination turns a destination into an absolute http(s) URL.
func resolveDestination(d Destination, resolve map[string]string) (string, error) {
	raw := d.URI
	if d.Ref != "" {
		base, ok := resolve[d.Ref]
		if !ok {
			return "", &unknownRefError{name: d.Ref}
		}
		raw = base
		if d.URI != "" {
			b, err := url.Parse(base)
			if err != nil {
				return "", fmt.Errorf("service %q address %q: %w", d.Ref, base, err)
			}
			rel, err := url.Parse(d.URI)
			if err != nil {
				return "", fmt.Errorf("uri %q: %w", d.URI, err)
			}
			raw = b.ResolveReference(rel).String()
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("address %q is not an absolute http(s) URL", raw)
	}
	return u.String(), nil
}

// Recorder returns where the broker keeps its dead letters.
func (b *Broker) Recorder() *Recorder { return b.recorder }

// Stats returns the counters.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	pending := b.pending
	b.mu.Unlock()
	return Stats{
		Ingested:     b.ingested.Load(),
		Unrouted:     b.unrouted.Load(),
		Delivered:    b.delivered.Load(),
		Retried:      b.retried.Load(),
		DeadLettered: b.deadLettered.Load(),
		Pending:      pending,
	}
}

// ServeHTTP is the ingress: it accepts one CloudEvent in binary or structured mode and
// answers 202 once it is queued for delivery, 400 with the reason for a malformed
// event, 413 for one larger than MaxEventBytes, and 503 while full or closing. With
// Options.Identity, it first answers 401 with the reason to a request without a bearer
// token or with one that does not verify (503 when it cannot be verified now), and,
// once the event is read, 403 with the reason when the policies do not admit it from
// the token's subject. A refused event is the sender's failure: it is answered, neither
// delivered nor dead-lettered.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "POST, OPTIONS")
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions: // CloudEvents webhook validation
		w.Header().Set("WebHook-Allowed-Origin", "*")
		w.Header().Set("WebHook-Allowed-Rate", "*")
		w.WriteHeader(http.StatusOK)
		return
	default:
		http.Error(w, "CloudEvents are sent with POST", http.StatusMethodNotAllowed)
		return
	}
	var subject string
	if b.guard != nil {
		token, _ := access.BearerToken(r)
		s, err := b.guard.authenticate(r.Context(), token)
		if err != nil {
			b.logRefusal(err)
			refuse(w, err)
			return
		}
		subject = s
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), event.ApplicationCloudEventsBatchJSON) {
		http.Error(w, "batched CloudEvents are not supported: send one event per request", http.StatusBadRequest)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxEventBytes)
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("event larger than %d bytes", MaxEventBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "not a CloudEvent (binary or structured mode): "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := e.Validate(); err != nil {
		http.Error(w, "invalid CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	if b.guard != nil {
		if err := b.guard.authorize(subject, *e); err != nil {
			b.logRefusal(err, append(eventFields(*e), zap.String("subject", subject))...)
			refuse(w, err)
			return
		}
	}
	err = b.ingest(*e, fromOutside)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusAccepted)
	case errors.Is(err, ErrClosed), errors.Is(err, ErrFull):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

// refuse answers a request whose sender the broker does not admit: with the refusal's
// status and reason, or 503 when the token could not be verified.
func refuse(w http.ResponseWriter, err error) {
	var refused *RefusedError
	if !errors.As(err, &refused) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if refused.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	http.Error(w, err.Error(), refused.Status)
}

// Send accepts e as the ingress does, so that functions running in the same process
// can emit to the broker; it returns once e is queued. It is trusted: with
// Options.Identity, it checks no token nor policy (SendAs does).
func (b *Broker) Send(ctx context.Context, e event.Event) error {
	return b.send(ctx, e, fromOutside, nil)
}

// send validates e and, when token is not nil and the broker has Identity, admits it as
// the ingress admits a post with that bearer token (a nil token is a trusted in-process
// send), then ingests it as from allows.
func (b *Broker) send(ctx context.Context, e event.Event, from origin, token *string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s %s: %w", e.Type(), e.ID(), err)
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("send %s %s: invalid CloudEvent: %w", e.Type(), e.ID(), err)
	}
	if token != nil && b.guard != nil {
		subject, err := b.guard.admit(ctx, *token, e)
		if err != nil {
			b.logRefusal(err, append(eventFields(e), zap.String("subject", subject))...)
			return fmt.Errorf("send %s %s: %w", e.Type(), e.ID(), err)
		}
	}
	if err := b.ingest(e.Clone(), from); err != nil {
		return fmt.Errorf("send %s %s: %w", e.Type(), e.ID(), err)
	}
	return nil
}

// origin is where an event comes from, which decides when the broker takes it.
type origin int

const (
	// fromOutside: posted to the ingress or sent from outside; refused once Close began
	// or when the broker is full.
	fromOutside origin = iota
	// fromSubscriber: sent by a subscriber while it handles a delivery (SendFromSubscriber);
	// refused when full, taken while Close drains, since the delivery that caused it is
	// part of the drain.
	fromSubscriber
	// fromReply: a subscriber's reply or a dead letter; always taken until the broker
	// stops.
	fromReply
)

// ingest stamps e and queues one delivery per matching Trigger, as its origin allows.
func (b *Broker) ingest(e event.Event, from origin) error {
	ttl := int32(DefaultTTL)
	if v, ok := e.Extensions()[ExtTTL]; ok {
		n, err := types.ToInteger(v)
		if err != nil {
			return fmt.Errorf("extension %s: %w", ExtTTL, err)
		}
		ttl = n
	}
	if ttl <= 0 {
		return ErrTTLExhausted
	}
	e.SetExtension(ExtTTL, nil)
	e.SetExtension(ExtArrivalTime, types.Timestamp{Time: b.now().UTC()})
	var jobs []*job
	for _, r := range b.routes {
		if matches(r.trigger.Filter, e) {
			jobs = append(jobs, &job{route: r, target: r.target, event: e, ttl: ttl})
		}
	}
	if err := b.enqueue(jobs, from); err != nil {
		return err
	}
	b.ingested.Add(1)
	if len(jobs) == 0 {
		b.unrouted.Add(1)
		b.log.Debugw("no trigger matches the event", eventFields(e)...)
	}
	return nil
}

// matches reports whether e has every attribute of filter with the same value; an empty
// value in the filter matches any value, an empty filter every event.
func matches(filter map[string]string, e event.Event) bool {
	for name, want := range filter {
		if want == "" {
			continue
		}
		got, ok := attribute(e, name)
		if !ok || got != want {
			return false
		}
	}
	return true
}

// attribute is the canonical string of a context attribute or extension of e.
func attribute(e event.Event, name string) (string, bool) {
	switch name {
	case "specversion":
		return e.SpecVersion(), true
	case "id":
		return e.ID(), true
	case "source":
		return e.Source(), true
	case "type":
		return e.Type(), true
	case "subject":
		return e.Subject(), e.Subject() != ""
	case "datacontenttype":
		return e.DataContentType(), e.DataContentType() != ""
	case "dataschema":
		return e.DataSchema(), e.DataSchema() != ""
	case "time":
		return types.FormatTime(e.Time()), !e.Time().IsZero()
	}
	v, ok := e.Extensions()[name]
	if !ok {
		return "", false
	}
	s, err := types.Format(v)
	return s, err == nil
}

// enqueue adds jobs; a job that can no longer run is given up at once.
func (b *Broker) enqueue(jobs []*job, from origin) error {
	b.mu.Lock()
	switch {
	case from == fromOutside && b.state != open, from == fromSubscriber && b.state == stopped:
		b.mu.Unlock()
		return ErrClosed
	case from != fromReply && b.pending+len(jobs) > b.max:
		b.mu.Unlock()
		return ErrFull
	case b.state == stopped:
		b.pending += len(jobs)
		b.mu.Unlock()
		for _, j := range jobs {
			b.abandon(j)
		}
		return nil
	}
	b.pending += len(jobs)
	b.queue = append(b.queue, jobs...)
	b.mu.Unlock()
	if len(jobs) == 1 {
		b.cond.Signal()
	} else if len(jobs) > 1 {
		b.cond.Broadcast()
	}
	return nil
}

// requeue puts a job back after its backoff.
func (b *Broker) requeue(j *job) {
	b.mu.Lock()
	if b.state == stopped {
		b.mu.Unlock()
		b.abandon(j)
		return
	}
	b.queue = append(b.queue, j)
	b.mu.Unlock()
	b.cond.Signal()
}

// next blocks until a job is queued; false once the broker stopped.
func (b *Broker) next() (*job, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.queue) == 0 && b.state != stopped {
		b.cond.Wait()
	}
	if b.state == stopped {
		return nil, false
	}
	j := b.queue[0]
	b.queue[0] = nil
	b.queue = b.queue[1:]
	return j, true
}

// done marks a job finished.
func (b *Broker) done() {
	b.mu.Lock()
	b.pending--
	if b.pending == 0 && b.state != open {
		b.once.Do(func() { close(b.drained) })
	}
	b.mu.Unlock()
}

func (b *Broker) work() {
	defer b.routines.Done()
	for {
		j, ok := b.next()
		if !ok {
			return
		}
		b.attempt(j)
	}
}

// Close stops accepting events (the ingress answers 503 and Send fails with ErrClosed)
// and waits until every queued delivery, retry and reply has ended. If ctx ends first,
// the deliveries still pending are abandoned into the recorder (from where they can be
// replayed) and ctx's error is returned.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	was := b.state
	if was == open {
		b.state = closing
		if b.pending == 0 {
			b.once.Do(func() { close(b.drained) })
		}
	}
	b.mu.Unlock()
	if was == stopped {
		b.routines.Wait()
		return nil
	}
	var err error
	select {
	case <-b.drained:
	case <-ctx.Done():
		err = fmt.Errorf("close broker: %d deliveries abandoned to the dead-letter recorder: %w", b.Stats().Pending, ctx.Err())
	}
	b.mu.Lock()
	b.state = stopped
	left := b.queue
	b.queue = nil
	b.mu.Unlock()
	b.cancel()
	b.cond.Broadcast()
	for _, j := range left {
		b.abandon(j)
	}
	b.routines.Wait()
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// eventFields are the log fields naming an event (never its data).
func eventFields(e event.Event) []any {
	return []any{zap.String("ce-id", e.ID()), zap.String("ce-type", e.Type()), zap.String("ce-source", e.Source())}
}
