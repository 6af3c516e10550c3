// Package deadletters is the dead-letters function: the dead-letter sink every Trigger
// names. A broker sends it an event once the event's delivery failed for good, with the
// extensions knativeerrordest, knativeerrorcode and knativeerrordata; the function
// records it in the bank, whatever its type and data (a dead letter is often an event
// whose data failed validation), and answers 2xx once it is recorded, 5xx when the bank
// is out of reach, so the broker tries again. A duplicate delivery of a dead letter (same
// event source and id, same failed destination) is one record.
//
// Users list dead letters at the front door (which reads them from the bank) and replay
// them with a request the front door authorizes and forwards, routed to this function
// by its Trigger:
//
//	dev.podguard.deadletter.replay  {"deadletter": "<id>"}
//
// A replay sends the original event (its id, source, type, extensions and data) to the
// broker (K_SINK) again, without the broker's knativeerror*, arrival and TTL extensions,
// and records the replay; each request sends again.
//
// A dead letter is told from a request by its error extensions: any event that carries
// one of knativeerrordest, knativeerrorcode or knativeerrordata is a dead letter, whatever
// its type, so a replay request that failed is recorded like any other. An event
// without them is a request when its type is one of Accepts, and recorded otherwise. Both
// Knative's broker and the local one set all three on every dead letter, so this does not
// depend on the sink's URL or on how the Triggers are written.
package deadletters

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/openstack"
)

// Accepts are the requests dead-letters answers. As a dead-letter sink it takes every
// event (function.ServerOptions.AcceptAny) and checks these itself.
var Accepts = []string{events.DeadLetterReplay}

// Config is the dead-letters function's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// store is where dead letters are kept (bank.Bank).
type store interface {
	RecordDeadLetter(ctx context.Context, d bank.DeadLetter) (*bank.DeadLetter, bool, error)
	DeadLetter(ctx context.Context, id string) (*bank.DeadLetterRecord, error)
	ListDeadLetters(ctx context.Context, eventType string, limit int, marker string) ([]string, string, error)
	MarkReplayed(ctx context.Context, id string, at time.Time, source, requestID string) error
}

// validator checks a request's data against its schema (events.Validator).
type validator interface {
	Validate(e event.Event) error
}

// Step is the dead-letters function.
type Step struct {
	store     store
	sink      function.Sender
	validator validator
	now       func() time.Time
}

// New builds the function from its configuration; replays are sent to sink.
func New(ctx context.Context, cfg *Config, sink function.Sender) (*Step, error) {
	if sink == nil {
		return nil, errors.New("dead-letters sends replays to the broker: set K_SINK to the broker")
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	return NewStep(b, sink, v, time.Now), nil
}

// NewStep builds the function from its dependencies: where dead letters are kept, where
// replays go, how requests are validated, and the clock.
func NewStep(s store, sink function.Sender, v validator, now func() time.Time) *Step {
	return &Step{store: s, sink: sink, validator: v, now: now}
}

// IsDeadLetter reports whether e came as a dead letter: it carries one of the error
// extensions a broker sets when it gives up a delivery.
func IsDeadLetter(e event.Event) bool {
	ext := e.Extensions()
	for _, k := range []string{events.ExtErrorDest, events.ExtErrorCode, events.ExtErrorData} {
		if _, ok := ext[k]; ok {
			return true
		}
	}
	return false
}

// Handle records a dead letter, or replays one.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	if IsDeadLetter(e) || !slices.Contains(Accepts, e.Type()) {
		return nil, s.record(ctx, e)
	}
	if err := s.validator.Validate(e); err != nil {
		return nil, function.Permanent(err)
	}
	var req events.DeadLetterReplayRequest
	if err := function.Decode(e, &req); err != nil {
		return nil, err
	}
	return s.replay(ctx, req.DeadLetter, e)
}

// record keeps e as a dead letter.
func (s *Step) record(ctx context.Context, e event.Event) error {
	d := Letter(e, s.now().UTC())
	stored, created, err := s.store.RecordDeadLetter(ctx, d)
	if err != nil {
		return fmt.Errorf("record dead letter of %s %s: %w", e.Type(), e.ID(), err)
	}
	if created {
		observe.FromContext(ctx).Metrics.DeadLetter(ctx, events.Label(e.Type()))
	}
	logging.FromContext(ctx).Infow("dead letter recorded", zap.String("deadletter", stored.ID), zap.Bool("duplicate", !created),
		zap.Int("code", d.Code), zap.String("destination", d.Destination))
	return nil
}

// Letter is the dead letter of e, received at now: its id, and what the broker said of
// the failure in e's extensions. Extensions that are missing or malformed are left out.
func Letter(e event.Event, now time.Time) bank.DeadLetter {
	ext := e.Extensions()
	d := bank.DeadLetter{RecordedAt: now, Event: e.Clone()}
	if v, ok := ext[events.ExtErrorDest]; ok {
		d.Destination, _ = types.ToString(v)
	}
	if v, ok := ext[events.ExtErrorCode]; ok {
		if n, err := types.ToInteger(v); err == nil {
			d.Code = int(n)
		}
	}
	if v, ok := ext[events.ExtErrorData]; ok {
		if s, err := types.ToString(v); err == nil {
			d.Error = DecodeErrorData(s)
		}
	}
	if v, ok := ext[events.ExtArrivalTime]; ok {
		if t, err := types.ToTime(v); err == nil {
			d.ArrivedAt = t.UTC()
		}
	}
	d.ID = bank.DeadLetterID(e.Source(), e.ID(), d.Destination)
	return d
}

// DecodeErrorData decodes knativeerrordata: base64 of the start of a response body,
// possibly cut short in the middle of a base64 group, whose whole groups are decoded.
// Text that is not base64 is returned as it is; bytes that are not UTF-8 are replaced.
func DecodeErrorData(s string) string {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.StdEncoding.DecodeString(s[:len(s)/4*4])
	}
	if err != nil {
		return s
	}
	if !utf8.Valid(b) {
		b = []byte(strings.ToValidUTF8(string(b), "\uFFFD"))
	}
	return string(b)
}

// replay sends a dead letter's event to the broker again and records it.
func (s *Step) replay(ctx context.Context, id string, req event.Event) (*event.Event, error) {
	d, err := s.store.DeadLetter(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, function.Permanent(fmt.Errorf("dead letter %s does not exist: list them with %s at the front door", id, events.DeadLettersList))
	}
	if err != nil {
		return nil, err
	}
	out := Original(d.Event)
	if err := out.Validate(); err != nil {
		return nil, function.Permanent(fmt.Errorf("dead letter %s holds no valid CloudEvent: %w", id, err))
	}
	if err := s.sink.Send(ctx, out); err != nil {
		return nil, fmt.Errorf("replay dead letter %s: %w", id, err)
	}
	at := s.now().UTC()
	if err := s.store.MarkReplayed(ctx, id, at, req.Source(), req.ID()); err != nil {
		return nil, err
	}
	logging.FromContext(ctx).Infow("dead letter replayed", zap.String("deadletter", id),
		zap.String("event-type", out.Type()), zap.String("event-id", out.ID()))
	return function.Reply(events.DeadLetterReplayed, events.DeadLetterReplayedResult{DeadLetter: id,
		Event: events.EventRef{ID: out.ID(), Source: out.Source(), Type: out.Type()}, ReplayedAt: at})
}

// Original is a dead letter's event as it was first sent: without the extensions the
// broker added (the error ones, arrival time and TTL).
func Original(e event.Event) event.Event {
	out := e.Clone()
	for _, k := range []string{events.ExtErrorDest, events.ExtErrorCode, events.ExtErrorData, events.ExtArrivalTime, events.ExtBrokerTTL} {
		out.SetExtension(k, nil)
	}
	return out
}
