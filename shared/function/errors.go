package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
)

// permanentError marks a request that can never succeed: the broker must not retry it.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: the event is answered 400 with err's text as the
// reason, and not retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// StatusOf maps a step's error to the status the broker acts on: 400 for permanent
// errors, 503 when the step ran out of time, 500 for anything else (all retried but 400).
func StatusOf(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case IsPermanent(err):
		return http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Reply builds a reply event of type typ with JSON data; the runtime fills in the rest.
func Reply(typ string, data any) (*event.Event, error) {
	r := event.New()
	r.SetType(typ)
	if err := r.SetData(event.ApplicationJSON, data); err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	return &r, nil
}

// Decode reads an event's data into v; data that does not decode is a permanent error
// (400) naming the event type.
func Decode(e event.Event, v any) error {
	if err := e.DataAs(v); err != nil {
		return Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	return nil
}
