package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/observe"
)

// Handler is one step: it consumes one event and may answer with one.
type Handler interface {
	Handle(ctx context.Context, e event.Event) (*event.Event, error)
}

// Sender delivers an event to the broker (K_SINK).
type Sender interface {
	Send(ctx context.Context, e event.Event) error
}

// Gate admits a request before its event is decoded: it establishes who sent it and
// returns the context the handler runs in (carrying the caller), or an error marked
// Unauthenticated or Forbidden. A step that is a Gate is gated by the runtime.
type Gate interface {
	Admit(ctx context.Context, r *http.Request) (context.Context, error)
}

// EventGate is implemented by a Gate that also admits the event itself, which may depend
// on its type (a DeliveryGate): the runtime calls AdmitEvent with the context Admit
// returned, once the event is decoded and its type is one the step takes, before its data
// is checked against the schema or the step sees it. An error marked Unauthenticated or
// Forbidden refuses it; any other is answered as a step's would be.
type EventGate interface {
	AdmitEvent(ctx context.Context, e event.Event) error
}

// Validator checks event data against the catalog's schemas.
type Validator interface {
	Validate(e event.Event) error
}

// MaxEventBytes bounds an incoming request body. CloudEvents intermediaries only promise
// 64 KiB; podguard's own requests stay well below this.
const MaxEventBytes = 1 << 20

// Server is the HTTP CloudEvents endpoint of one function.
type Server struct {
	name      string
	accepts   []string
	handler   Handler
	validator Validator
	sink      Sender // nil: replies go back in the HTTP response
	acceptAny bool
	overrides map[string]any
	timeout   time.Duration
	logger    *zap.SugaredLogger
	telemetry *observe.Telemetry
	gate      Gate
	eventGate EventGate // the gate, when it is one
}

// ServerOptions configures a Server.
type ServerOptions struct {
	// Sink, when set, receives reply events; the request is then answered 202.
	Sink Sender
	// Overrides are extension attributes set on every reply (K_CE_OVERRIDES).
	Overrides map[string]any
	// Timeout bounds one Handle call; zero means 5 minutes.
	Timeout time.Duration
	Logger  *zap.SugaredLogger
	// AcceptAny hands the step every well-formed CloudEvent, whatever its type and data:
	// neither the accepted types nor the catalog's schemas are checked, so the step must
	// check what it needs itself. A dead-letter sink takes this, since what it records is
	// often an event that failed those very checks.
	AcceptAny bool
	// Telemetry counts and times each event and traces its delivery; nil records
	// nothing.
	Telemetry *observe.Telemetry
	// Gate, when set, admits each request before it is decoded; and each event once
	// decoded, when it is an EventGate too.
	Gate Gate
}

// NewServer builds the endpoint of function name, which handles the given event types.
func NewServer(name string, accepts []string, h Handler, v Validator, o ServerOptions) *Server {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
	if o.Telemetry == nil {
		o.Telemetry = observe.Noop()
	}
	eg, _ := o.Gate.(EventGate)
	return &Server{name: name, accepts: accepts, handler: h, validator: v, sink: o.Sink, acceptAny: o.AcceptAny,
		overrides: o.Overrides, timeout: o.Timeout, logger: o.Logger.With(zap.String("function", name)),
		telemetry: o.Telemetry, gate: o.Gate, eventGate: eg}
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ServeHTTP receives one CloudEvent.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	typ := "invalid"
	defer func() { s.telemetry.Metrics.EventHandled(r.Context(), s.name, typ, sw.status, time.Since(start)) }()
	defer func() {
		if p := recover(); p != nil {
			s.logger.Errorw("handler panicked", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "CloudEvents are delivered with POST", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	if s.gate != nil {
		var err error
		if ctx, err = s.gate.Admit(ctx, r); err != nil {
			status := StatusOf(err)
			s.logger.Warnw("refused request", zap.Int("status", status), zap.Error(err))
			WriteError(w, err)
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxEventBytes)
	e, status, err := s.decode(r)
	if err != nil {
		s.logger.Warnw("rejected request", zap.Int("status", status), zap.Error(err))
		http.Error(w, err.Error(), status)
		return
	}
	log := s.logger.With(zap.String("ce-id", e.ID()), zap.String("ce-type", e.Type()), zap.String("ce-source", e.Source()))
	if s.eventGate != nil {
		if err := s.eventGate.AdmitEvent(ctx, *e); err != nil {
			typ = events.Label(e.Type())
			log.Warnw("refused event", zap.Int("status", StatusOf(err)), zap.Error(err))
			WriteError(w, err)
			return
		}
	}
	if err := s.checkData(*e); err != nil {
		log.Warnw("rejected request", zap.Int("status", http.StatusBadRequest), zap.Error(err))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	typ = events.Label(e.Type())
	ctx, span := s.telemetry.StartDelivery(observe.WithTelemetry(logging.WithLogger(ctx, log), s.telemetry), r, *e, s.name)
	defer func() { endDelivery(span, sw.status) }()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	reply, err := s.handler.Handle(ctx, *e)
	if err != nil {
		status := StatusOf(err)
		if status < http.StatusInternalServerError {
			log.Warnw("permanent failure", zap.Int("status", status), zap.Error(err), zap.Duration("took", time.Since(start)))
		} else {
			log.Errorw("transient failure, the broker will retry", zap.Error(err), zap.Duration("took", time.Since(start)))
		}
		WriteError(w, err)
		return
	}
	if reply == nil {
		log.Debugw("handled", zap.Duration("took", time.Since(start)))
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.complete(reply, e)
	s.telemetry.Inject(ctx, reply)
	if err := reply.Validate(); err != nil {
		log.Errorw("step produced an invalid reply", zap.Error(err))
		http.Error(w, "invalid reply event: "+err.Error(), http.StatusInternalServerError)
		return
	}
	log.Debugw("handled", zap.String("reply-type", reply.Type()), zap.Duration("took", time.Since(start)))
	if s.sink != nil {
		if err := s.sink.Send(ctx, *reply); err != nil {
			log.Errorw("sending reply to the sink failed, the broker will retry", zap.Error(err))
			http.Error(w, "sending reply: "+err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(reply), http.StatusOK, w); err != nil {
		log.Errorw("writing reply", zap.Error(err))
	}
}

// decode turns the request into a valid event of an accepted type (any valid event with
// AcceptAny); any failure is a 4xx with a reason. Its data is checked apart (checkData),
// once the gate has admitted the event.
func (s *Server) decode(r *http.Request) (*event.Event, int, error) {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, event.ApplicationCloudEventsBatchJSON) { // never retried: the batch would fail again
		return nil, http.StatusBadRequest, errors.New("batched CloudEvents are not supported: send one event per request")
	}
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("event larger than %d bytes: events carry references, not bulk data", MaxEventBytes)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("not a CloudEvent (binary or structured mode): %v", err)
	}
	if err := e.Validate(); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid CloudEvent: %v", err)
	}
	if s.acceptAny {
		return e, 0, nil
	}
	if !slices.Contains(s.accepts, e.Type()) {
		return nil, http.StatusBadRequest, fmt.Errorf("event type %q is not handled by %s (it accepts %s)", e.Type(), s.name, strings.Join(s.accepts, ", "))
	}
	return e, 0, nil
}

// checkData checks that e's data matches its type's schema (not with AcceptAny).
func (s *Server) checkData(e event.Event) error {
	if s.acceptAny || s.validator == nil {
		return nil
	}
	return s.validator.Validate(e)
}

// complete fills what a step may leave out of its reply: a deterministic id (derived from
// the request, so a redelivered request gives the same reply id), source, time,
// dataschema, the request's correlation extensions (flow, checkpoint) and the
// K_CE_OVERRIDES extensions.
func (s *Server) complete(reply *event.Event, req *event.Event) {
	if reply.ID() == "" {
		reply.SetID(DerivedID(req.Source(), req.ID(), reply.Type()))
	}
	if reply.Source() == "" {
		reply.SetSource(events.Source + s.name)
	}
	if reply.Time().IsZero() {
		reply.SetTime(time.Now().UTC())
	}
	if reply.DataSchema() == "" {
		reply.SetDataSchema(events.SchemaURL(reply.Type()))
	}
	for _, k := range []string{events.ExtFlow, events.ExtCheckpoint} {
		if v, ok := req.Extensions()[k]; ok {
			if _, set := reply.Extensions()[k]; !set {
				reply.SetExtension(k, v)
			}
		}
	}
	for k, v := range s.overrides {
		reply.SetExtension(k, v)
	}
}

// DerivedID is a deterministic event id: UUIDv5 over the parts, so the same
// (operation, checkpoint, resource, step) always names the same event.
func DerivedID(parts ...string) string {
	return uuid.NewSHA1(idNamespace, []byte(strings.Join(parts, "\x00"))).String()
}

var idNamespace = uuid.MustParse("5c2b8f6e-3c1a-5d0e-9a53-0f6f6a1d2b70")

// parseOverrides reads K_CE_OVERRIDES: {"extensions": {"name": "value"}}.
func parseOverrides(raw string) (map[string]any, error) {
	if raw == "" {
		return nil, nil
	}
	var o struct {
		Extensions map[string]any `json:"extensions"`
	}
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		return nil, fmt.Errorf("K_CE_OVERRIDES: %w", err)
	}
	return o.Extensions, nil
}

// endDelivery ends the span of a delivery with the status it was answered.
func endDelivery(span trace.Span, status int) {
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 400 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
