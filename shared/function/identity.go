package function

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
)

// TokenVerifier tells who holds a bearer token: an error wrapping access.ErrUnauthenticated
// refuses it, any other is a failure to tell, worth retrying. *access.Verifier is one.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (access.Caller, error)
}

// DeliveryGate admits only the broker's deliveries to one function, with sender identity
// on (Knative Eventing's authentication-oidc): each must carry a token, for the function's
// audience, of the Trigger that routes the event's type to it (events.Deliverers). It is
// a Gate and an EventGate: Admit verifies the token before the event is read, AdmitEvent
// checks its subject against the event's type once it is decoded.
type DeliveryGate struct {
	verifier  TokenVerifier
	namespace string
	fn        string
}

// NewDeliveryGate admits the deliveries to function fn of podguard in namespace whose
// tokens v verifies (v checks the issuer and the audience, events.FunctionAudience(fn)).
func NewDeliveryGate(v TokenVerifier, namespace, fn string) *DeliveryGate {
	return &DeliveryGate{verifier: v, namespace: namespace, fn: fn}
}

type delivererKey struct{}

// Deliverer is who delivered the event being handled, as a DeliveryGate verified it.
func Deliverer(ctx context.Context) (access.Caller, bool) {
	c, ok := ctx.Value(delivererKey{}).(access.Caller)
	return c, ok && c.Username != ""
}

// Admit verifies the delivery's bearer token: none, or one refused, is Unauthenticated
// (401, with the reason); a failure to verify it (the issuer's keys out of reach) is a
// plain error (5xx), so the broker retries.
func (g *DeliveryGate) Admit(ctx context.Context, r *http.Request) (context.Context, error) {
	token, ok := access.BearerToken(r)
	if !ok {
		return nil, Unauthenticated(fmt.Errorf("no bearer token: deliveries to %s must carry a token of the broker's Trigger", g.fn))
	}
	c, err := g.verifier.Verify(ctx, token)
	if errors.Is(err, access.ErrUnauthenticated) {
		return nil, Unauthenticated(fmt.Errorf("delivery to %s: %w", g.fn, err))
	}
	if err != nil {
		return nil, fmt.Errorf("verify the token of a delivery to %s: %w", g.fn, err)
	}
	return context.WithValue(ctx, delivererKey{}, c), nil
}

// AdmitEvent refuses, Forbidden (403), a delivery of e from another subject than the
// Trigger that routes e's type to the function; ctx is the one Admit returned.
func (g *DeliveryGate) AdmitEvent(ctx context.Context, e event.Event) error {
	c, ok := Deliverer(ctx)
	if !ok {
		return Unauthenticated(fmt.Errorf("delivery of %s to %s: no verified deliverer", e.Type(), g.fn))
	}
	want := events.Deliverers(g.namespace, g.fn, e.Type())
	if slices.Contains(want, c.Username) {
		return nil
	}
	switch len(want) {
	case 0:
		return Forbidden(fmt.Errorf("%s may not deliver %s to %s: no Trigger of podguard's routes it there", c.Username, e.Type(), g.fn))
	case 1:
		return Forbidden(fmt.Errorf("%s may not deliver %s to %s: only the Trigger %s (%s) does",
			c.Username, e.Type(), g.fn, events.TriggerName(g.fn, e.Type()), want[0]))
	}
	return Forbidden(fmt.Errorf("%s may not deliver %s to %s: only podguard's Triggers in %s do, each as its own service account (%s and %d more)",
		c.Username, e.Type(), g.fn, g.namespace, want[0], len(want)-1))
}

// TokenSource gives the bearer token a sender presents, fresh enough to be accepted.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// tokenFileMaxAge is how long a FileTokenSource trusts what it read when the file looks
// unchanged.
const tokenFileMaxAge = time.Minute

// maxTokenFileSize bounds a token file; the apiserver's tokens are about 1 KiB.
const maxTokenFileSize = 64 << 10

// FileTokenSource is the token in a file, as a projected service-account token volume
// holds it: the kubelet writes a new token well before the old one expires. The file is
// read again when it changed (another file, size or modification time, which the
// kubelet's atomic rewrite changes) and at least every minute. A missing or empty file is
// an error, so that what depends on the token fails and is retried; the token never
// appears in an error.
type FileTokenSource struct {
	path   string
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	token string
	info  os.FileInfo // of the file the token was read from
	read  time.Time
}

// NewFileTokenSource reads the token in the file at path.
func NewFileTokenSource(path string) *FileTokenSource {
	return &FileTokenSource{path: path, maxAge: tokenFileMaxAge, now: time.Now}
}

// Token is the file's token.
func (f *FileTokenSource) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("read the token file %s: %w", f.path, err)
	}
	if f.token != "" && f.now().Sub(f.read) < f.maxAge && os.SameFile(info, f.info) &&
		info.Size() == f.info.Size() && info.ModTime().Equal(f.info.ModTime()) {
		return f.token, nil
	}
	token, err := readToken(f.path)
	if err != nil {
		return "", fmt.Errorf("read the token file %s: %w", f.path, err)
	}
	f.token, f.info, f.read = token, info, f.now()
	return token, nil
}

// readToken reads the one token a file holds, with nothing but white space around it.
func readToken(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, maxTokenFileSize+1))
	if err != nil {
		return "", err
	}
	switch b = bytes.TrimSpace(b); {
	case len(b) == 0:
		return "", errors.New("the file is empty")
	case len(b) > maxTokenFileSize:
		return "", fmt.Errorf("more than %d bytes, not a token", maxTokenFileSize)
	case bytes.ContainsFunc(b, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", errors.New("the file holds more than one token, or control characters")
	}
	return string(b), nil
}

// serviceAccountNamespace is where Kubernetes mounts the namespace of a pod's service
// account token.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// PodNamespace is the namespace podguard runs in: configured (POD_NAMESPACE) when set,
// else the namespace of the pod's mounted service-account token; empty when neither says
// (outside a cluster).
func PodNamespace(configured string) string {
	return podNamespace(configured, serviceAccountNamespace)
}

func podNamespace(configured, file string) string {
	if ns := strings.TrimSpace(configured); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}
