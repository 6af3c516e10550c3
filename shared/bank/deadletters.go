package bank

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/podguard/podguard/events"
)

// Dead letters are the events a broker gave up delivering, as its dead-letter sink (the
// dead-letters function) received them. As elsewhere in the bank nothing is
// read-modified-written:
//   - a dead letter's record is written create-only, under an id derived from the event's
//     source and id and the destination that failed, so a duplicate delivery of the same
//     dead letter finds the record there and keeps it;
//   - each failed delivery of the event is a marker named by the time the broker accepted
//     the event (knativearrivaltime): the sink's own redeliveries of one dead letter carry
//     the same time and write the same marker, while the event failing again after a
//     replay, or after its producer sent it again, adds one;
//   - each replay is a new marker named by time;
//   - index entries name the record's time, so listings are newest first.

// DeadLetter is an event a broker gave up delivering, as the dead-letter sink received it.
type DeadLetter struct {
	// ID names the dead letter (DeadLetterID).
	ID string `json:"id"`
	// RecordedAt is when the sink first recorded it.
	RecordedAt time.Time `json:"recorded_at"`
	// Code is the last HTTP status of the failed delivery (knativeerrorcode; 0 unknown).
	Code int `json:"code,omitempty"`
	// Destination is where the delivery failed (knativeerrordest).
	Destination string `json:"destination,omitempty"`
	// Error is the start of the last response (knativeerrordata, decoded).
	Error string `json:"error,omitempty"`
	// ArrivedAt is when the broker accepted the event (knativearrivaltime), zero when the
	// broker did not say.
	ArrivedAt time.Time `json:"arrived_at,omitzero"`
	// Event is the event as the sink got it: every attribute and extension, and its data
	// (JSON data as the same JSON value, anything else byte for byte).
	Event event.Event `json:"event"`
}

// DeadLetterFailure is one failed delivery of a dead letter's event.
type DeadLetterFailure struct {
	At   time.Time `json:"at"`
	Code int       `json:"code,omitempty"`
}

// DeadLetterRecord is a dead letter with every failed delivery of its event (the first
// included) and every replay, oldest first.
type DeadLetterRecord struct {
	DeadLetter
	Failures []DeadLetterFailure `json:"failures"`
	Replays  []time.Time         `json:"replays"`
}

// deadLetterSpace is the UUID namespace of dead letter ids.
var deadLetterSpace = uuid.MustParse("8a0c6f4e-1b9d-5e27-a3c4-6d5f7e8091ab")

// DeadLetterID names the dead letter of the event (source, id) whose delivery to
// destination failed: the same for every delivery of that dead letter.
func DeadLetterID(source, id, destination string) string {
	return uuid.NewSHA1(deadLetterSpace, []byte(source+"\x00"+id+"\x00"+destination)).String()
}

// RecordDeadLetter stores d unless its dead letter is stored already (a duplicate
// delivery), and returns the stored one and whether d was new. Either way it records d as
// a failed delivery and writes the index entries, so a recording cut short is completed
// by the next delivery.
func (b *Bank) RecordDeadLetter(ctx context.Context, d DeadLetter) (*DeadLetter, bool, error) {
	d.Event = storable(d.Event)
	stored, created := &d, true
	err := b.putJSON(ctx, b.layout.DeadLetter(d.ID), d, true)
	if errors.Is(err, ErrExists) {
		var gerr error
		if stored, gerr = b.deadLetter(ctx, d.ID); gerr != nil {
			return nil, false, gerr
		}
		created = false
	} else if err != nil {
		return nil, false, err
	}
	failedAt := d.ArrivedAt
	if failedAt.IsZero() {
		failedAt = stored.RecordedAt // no arrival time: every delivery counts as the first
	}
	// The failure first, the index entries last: a dead letter that is listed is complete.
	failure := DeadLetterFailure{At: failedAt, Code: d.Code}
	if err := b.putJSON(ctx, b.layout.DeadLetterFailure(stored.ID, failedAt, d.Code), failure, false); err != nil {
		return nil, false, err
	}
	entry := map[string]string{"deadletter": stored.ID}
	for _, name := range []string{
		b.layout.DeadLettersIndex(stored.Event.Type(), stored.ID, stored.RecordedAt),
		b.layout.DeadLettersIndex("", stored.ID, stored.RecordedAt),
	} {
		if err := b.putJSON(ctx, name, entry, false); err != nil {
			return nil, false, err
		}
	}
	return stored, created, nil
}

func (b *Bank) deadLetter(ctx context.Context, id string) (*DeadLetter, error) {
	var d DeadLetter
	if err := b.getJSON(ctx, b.layout.DeadLetter(id), &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DeadLetter reads a dead letter with its failures and replays; ErrNotFound when there
// is none of that id.
func (b *Bank) DeadLetter(ctx context.Context, id string) (*DeadLetterRecord, error) {
	d, err := b.deadLetter(ctx, id)
	if err != nil {
		return nil, err
	}
	objs, err := b.listAll(ctx, b.layout.DeadLetterPrefix(id))
	if err != nil {
		return nil, err
	}
	r := &DeadLetterRecord{DeadLetter: *d, Failures: []DeadLetterFailure{}, Replays: []time.Time{}}
	failures, replays := b.layout.DeadLetterFailuresPrefix(id), b.layout.DeadLetterReplaysPrefix(id)
	for _, o := range objs {
		at, rest, ok := b.layout.ParseDeadLetterMarker(o.Name)
		switch {
		case !ok:
		case strings.HasPrefix(o.Name, failures):
			code, _ := strconv.Atoi(rest)
			r.Failures = append(r.Failures, DeadLetterFailure{At: at, Code: code})
		case strings.HasPrefix(o.Name, replays):
			r.Replays = append(r.Replays, at)
		}
	}
	return r, nil
}

// MarkReplayed records that a dead letter's event was sent again at a time, at the
// request of the event (source, id).
func (b *Bank) MarkReplayed(ctx context.Context, id string, at time.Time, source, requestID string) error {
	sum := sha256.Sum256([]byte(source + "\x00" + requestID))
	name := b.layout.DeadLetterReplay(id, at.UTC(), hex.EncodeToString(sum[:6]))
	return b.putJSON(ctx, name, map[string]any{"at": at.UTC(), "request": map[string]string{"source": source, "id": requestID}}, false)
}

// ListDeadLetters returns dead letter ids, of events of one type ("" for all), newest
// first, up to limit, after marker (a previous page's next).
func (b *Bank) ListDeadLetters(ctx context.Context, eventType string, limit int, marker string) (ids []string, next string, err error) {
	return b.indexPage(ctx, b.layout.DeadLettersIndexPrefix(eventType), limit, marker)
}

// DeadLetterReader reads dead letters (Bank).
type DeadLetterReader interface {
	ListDeadLetters(ctx context.Context, eventType string, limit int, marker string) ([]string, string, error)
	DeadLetter(ctx context.Context, id string) (*DeadLetterRecord, error)
}

// ListDeadLetterSummaries returns a page of dead letters, of events of one type ("" for
// all), newest first, and the marker of the next page ("" on the last one).
func ListDeadLetterSummaries(ctx context.Context, r DeadLetterReader, eventType string, limit int, marker string) ([]events.DeadLetterSummary, string, error) {
	ids, next, err := r.ListDeadLetters(ctx, eventType, limit, marker)
	if err != nil {
		return nil, "", err
	}
	out := make([]events.DeadLetterSummary, 0, len(ids))
	for _, id := range ids {
		d, err := r.DeadLetter(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, d.Summary())
	}
	return out, next, nil
}

// MaxSummaryError bounds the response text a summary shows; the record keeps all of it.
const MaxSummaryError = 256

// Summary is the dead letter as a list shows it.
func (r *DeadLetterRecord) Summary() events.DeadLetterSummary {
	s := events.DeadLetterSummary{
		ID: r.ID, RecordedAt: r.RecordedAt, Code: r.Code, Destination: r.Destination, Error: cut(r.Error, MaxSummaryError),
		Event:    events.EventRef{ID: r.Event.ID(), Source: r.Event.Source(), Type: r.Event.Type()},
		Failures: len(r.Failures), Replays: len(r.Replays),
	}
	if n := len(r.Failures); n > 0 {
		s.LastFailedAt = r.Failures[n-1].At
	}
	if n := len(r.Replays); n > 0 {
		s.LastReplayedAt = r.Replays[n-1]
	}
	return s
}

// cut shortens s to at most n bytes, on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// storable returns e ready to be stored as JSON without loss: JSON data stays JSON, any
// other data (text, binary, or malformed JSON) is kept as base64.
func storable(e event.Event) event.Event {
	e = e.Clone()
	if len(e.Data()) == 0 || e.DataBase64 {
		return e
	}
	media := e.DataContentType()
	if i := strings.IndexByte(media, ';'); i >= 0 {
		media = media[:i]
	}
	switch strings.ToLower(strings.TrimSpace(media)) {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		e.DataBase64 = !json.Valid(e.Data())
	default:
		e.DataBase64 = true
	}
	return e
}
