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

// deniedError marks a request refused for who sent it: 401 (no valid credentials) or
// 403 (a valid caller without the right). Neither is retried by the broker.
type deniedError struct {
	status int
	err    error
}

func (e *deniedError) Error() string { return e.err.Error() }
func (e *deniedError) Unwrap() error { return e.err }

// Unauthenticated marks err as a request without valid credentials: answered 401 with
// err's text as the reason.
func Unauthenticated(err error) error {
	if err == nil {
		return nil
	}
	return &deniedError{status: http.StatusUnauthorized, err: err}
}

// Forbidden marks err as a request of a caller who may not do it: answered 403 with
// err's text (what is missing) as the reason.
func Forbidden(err error) error {
	if err == nil {
		return nil
	}
	return &deniedError{status: http.StatusForbidden, err: err}
}

// StatusOf maps a step's error to the status the broker acts on: 400 for permanent
// errors, 401 and 403 for refused callers, 503 when the step ran out of time, 500 for
// anything else (all retried but 400, 401 and 403).
func StatusOf(err error) int {
	var denied *deniedError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &denied):
		return denied.status
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

// WriteError answers err with its status (StatusOf) and its text as the reason; a 401
// also says how to authenticate.
func WriteError(w http.ResponseWriter, err error) {
	status := StatusOf(err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="podguard"`)
	}
	http.Error(w, err.Error(), status)
}
