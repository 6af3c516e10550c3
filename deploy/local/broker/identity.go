package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
)

// TokenVerifier checks a bearer token sent to the broker's ingress and says whose it is;
// access.Verifier is one. Its audience is the broker's (events.BrokerAudience of the
// namespace). An error wrapping access.ErrUnauthenticated refuses the token; any other is
// a failure to verify it (the issuer's keys cannot be fetched), which the ingress answers
// 503 so that the sender retries.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (access.Caller, error)
}

// TokenSource gives a token of service account (a name in the broker's namespace) for
// audience; caching is its business. ServiceAccountTokens is one.
type TokenSource interface {
	Token(ctx context.Context, serviceAccount, audience string) (string, error)
}

// Identity turns on sender identity, as Knative Eventing's authentication-oidc feature:
//
//   - the ingress (ServeHTTP, SendAs) takes only events whose sender's bearer token
//     Verifier verifies (401 otherwise) and whose sender and event the Policies admit
//     (403 otherwise; with no policy, any service account of Namespace);
//   - each Trigger delivers, and sends its dead letters, as its OIDC service account
//     (events.TriggerServiceAccount of its name), with a token from Tokens for the
//     audience of its subscriber (of its dead-letter sink); a destination without an
//     audience gets no token;
//   - a subscriber's reply is admitted as sent by that same identity, by the Policies.
//
// Send, Replay and RunTicker stay trusted: they are for code of the broker's own process;
// SendAs and RunTickerAs are for senders with an identity of their own.
type Identity struct {
	// Namespace is the one the broker runs in: of the Triggers' service accounts, and of
	// the senders admitted when no policy applies.
	Namespace string
	// Policies are the EventPolicies that apply to the Broker (LoadPolicies, with the
	// same namespace), in the order they are tried.
	Policies []Policy
	// Verifier checks the tokens of senders.
	Verifier TokenVerifier
	// Tokens gives the tokens of deliveries; it may be nil when no destination names an
	// audience.
	Tokens TokenSource
}

// RefusedError is the refusal of an event for its sender: Status is 401 (no token, or one
// that does not verify) or 403 (the sender may not send that event); Reason says why.
// ServeHTTP answers with the status and the reason; SendAs returns it wrapped.
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
}

func unauthenticated(format string, args ...any) error {
	return &RefusedError{Status: http.StatusUnauthorized, Reason: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &RefusedError{Status: http.StatusForbidden, Reason: fmt.Sprintf(format, args...)}
}

// guard is the broker's side of Identity.
type guard struct {
	namespace string
	policies  []Policy
	verifier  TokenVerifier
	tokens    TokenSource
}

func newGuard(id *Identity) (*guard, error) {
	switch {
	case !isDNSLabel(id.Namespace):
		return nil, fmt.Errorf("identity: namespace %q is not a DNS-1123 label", id.Namespace)
	case id.Verifier == nil:
		return nil, errors.New("identity: no token verifier")
	}
	return &guard{namespace: id.Namespace, policies: id.Policies, verifier: id.Verifier, tokens: id.Tokens}, nil
}

// authenticate returns the subject of token: a *RefusedError (401) when there is none or
// it does not verify, another error when it cannot be verified now.
func (g *guard) authenticate(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", unauthenticated("no bearer token: with sender identity on, events are sent with a token for audience %q", events.BrokerAudience(g.namespace))
	}
	c, err := g.verifier.Verify(ctx, token)
	switch {
	case errors.Is(err, access.ErrUnauthenticated):
		return "", unauthenticated("%v", err)
	case err != nil:
		return "", fmt.Errorf("verify the sender's token: %w", err)
	case c.Username == "":
		return "", unauthenticated("the token names no subject")
	}
	return c.Username, nil
}

// authorize admits e from subject, or refuses it with a *RefusedError (403): the first
// policy that names subject must accept e; with no policy, subject must be a service
// account of the namespace (Knative's allow-same-namespace).
func (g *guard) authorize(subject string, e event.Event) error {
	if len(g.policies) == 0 {
		if !strings.HasPrefix(subject, events.ServiceAccountUser(g.namespace, "")) {
			return forbidden("no EventPolicy applies to the broker, and the default allow-same-namespace admits only service accounts of namespace %q, not %q",
				g.namespace, subject)
		}
		return nil
	}
	for _, p := range g.policies {
		if !p.admits(subject) {
			continue
		}
		if !p.accepts(e) {
			return forbidden("EventPolicy %q admits %q, but its filters refuse the event (type %q, source %q)", p.Name, subject, e.Type(), e.Source())
		}
		return nil
	}
	return forbidden("no EventPolicy of the broker admits %q", subject)
}

// admit authenticates token and authorizes e from its subject.
func (g *guard) admit(ctx context.Context, token string, e event.Event) (string, error) {
	subject, err := g.authenticate(ctx, token)
	if err != nil {
		return "", err
	}
	return subject, g.authorize(subject, e)
}

// triggerSubject is the username of Trigger name's OIDC identity.
func (g *guard) triggerSubject(trigger string) string {
	return events.ServiceAccountUser(g.namespace, events.TriggerServiceAccount(trigger))
}

// SendAs accepts e as the ingress does from a sender with bearer token: refused with a
// *RefusedError (401 or 403, in the error's text too) unless the token verifies and the
// policies admit its subject and e. Without Options.Identity, it is Send.
func (b *Broker) SendAs(ctx context.Context, e event.Event, token string) error {
	return b.send(ctx, e, fromOutside, &token)
}

// SendFromSubscriber is SendAs for an event a subscriber sends while it handles a
// delivery (a step's result, the choreographer's next requests): Close takes it while it
// drains, since the delivery that caused it is part of the drain, so that a clean stop
// loses nothing. The local runner's functions send this way; without Options.Identity
// the token is not looked at.
func (b *Broker) SendFromSubscriber(ctx context.Context, e event.Event, token string) error {
	return b.send(ctx, e, fromSubscriber, &token)
}

// logRefusal logs why an event was refused for its sender, with fields (never the
// token).
func (b *Broker) logRefusal(err error, fields ...any) {
	fields = append(fields, zap.Error(err))
	var refused *RefusedError
	if errors.As(err, &refused) {
		b.log.Infow("event refused for its sender", fields...)
		return
	}
	b.log.Warnw("the sender's token could not be verified", fields...)
}
