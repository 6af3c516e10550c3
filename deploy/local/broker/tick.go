package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
)

// PingSourceType is the type of the events a Knative PingSource sends; it cannot be
// changed.
const PingSourceType = "dev.knative.sources.ping"

// RunTicker sends the event tick returns every interval, the first one interval after
// the start, until ctx ends (it then returns nil) or the broker closes (ErrClosed). It
// is the local stand-in for a PingSource. A tick that cannot be sent is logged and
// skipped: the next one follows.
func (b *Broker) RunTicker(ctx context.Context, interval time.Duration, tick func() event.Event) error {
	return b.runTicker(ctx, interval, tick, b.Send)
}

// RunTickerAs is RunTicker for a ticker with an identity, as a PingSource sends with its
// OIDC token: each tick is sent with SendAs and the token that token returns then (with
// Options.Identity, the policies must admit it from that token's subject). A tick that
// is refused, or for which there is no token, is logged and skipped like any other.
func (b *Broker) RunTickerAs(ctx context.Context, interval time.Duration, tick func() event.Event, token func(context.Context) (string, error)) error {
	return b.runTicker(ctx, interval, tick, func(ctx context.Context, e event.Event) error {
		tok, err := token(ctx)
		if err != nil {
			return fmt.Errorf("send %s %s: get the ticker's token: %w", e.Type(), e.ID(), err)
		}
		return b.SendAs(ctx, e, tok)
	})
}

func (b *Broker) runTicker(ctx context.Context, interval time.Duration, tick func() event.Event, send func(context.Context, event.Event) error) error {
	if interval <= 0 {
		return fmt.Errorf("ticker: interval %v is not positive", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		e := tick()
		if err := send(ctx, e); err != nil {
			if errors.Is(err, ErrClosed) {
				return fmt.Errorf("ticker: %w", err)
			}
			if ctx.Err() != nil {
				return nil
			}
			b.log.Warnw("tick not sent", append(eventFields(e), zap.Error(err))...)
		}
	}
}

// PingTick returns the events the PingSource name in namespace would send with
// contentType application/json and data {}: type PingSourceType, source
// /apis/v1/namespaces/<namespace>/pingsources/<name>, an id unique per tick time.
func PingTick(namespace, name string, now func() time.Time) func() event.Event {
	source := "/apis/v1/namespaces/" + namespace + "/pingsources/" + name
	return func() event.Event {
		t := now().UTC()
		e := event.New()
		e.SetID(fmt.Sprintf("%s-%d", name, t.UnixNano()))
		e.SetType(PingSourceType)
		e.SetSource(source)
		e.SetTime(t)
		_ = e.SetData(event.ApplicationJSON, []byte("{}"))
		return e
	}
}
