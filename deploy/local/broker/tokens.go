package broker

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// tokenRequester creates TokenRequests for the service accounts of one namespace;
// CoreV1().ServiceAccounts(namespace) of a client-go clientset is one.
type tokenRequester interface {
	CreateToken(ctx context.Context, serviceAccount string, tr *authenticationv1.TokenRequest, opts metav1.CreateOptions) (*authenticationv1.TokenRequest, error)
}

// TokenOptions tune ServiceAccountTokens; the zero value is the defaults.
type TokenOptions struct {
	// Expiry is the lifetime asked of each token (1h when 0); the apiserver allows no
	// less than 10 minutes and may give more or less than asked.
	Expiry time.Duration
	// Size is how many tokens are kept at most (1024 when 0); the least recently used
	// go first.
	Size int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// ServiceAccountTokens is a TokenSource of the service accounts of a namespace, through
// the TokenRequest API: each token is kept per (service account, audience) until 80% of
// its lifetime has passed, and concurrent requests of a token not kept share one
// TokenRequest.
type ServiceAccountTokens struct {
	client    tokenRequester
	namespace string
	expiry    time.Duration
	size      int
	now       func() time.Time

	mu      sync.Mutex
	kept    map[tokenKey]*list.Element // values are *keptToken
	order   *list.List                 // least recently used first
	flights map[tokenKey]*tokenFlight
}

type tokenKey struct{ serviceAccount, audience string }

type keptToken struct {
	key     tokenKey
	token   string
	refresh time.Time // when it is requested anew
}

// tokenFlight is a TokenRequest under way; done is closed once token and err are set.
type tokenFlight struct {
	done    chan struct{}
	token   string
	err     error
	waiters int // callers waiting for it besides the one requesting
}

// minExpiry is the least lifetime the apiserver grants a requested token.
const minExpiry = 10 * time.Minute

// NewServiceAccountTokens returns the tokens of the service accounts of namespace,
// requested through client.
func NewServiceAccountTokens(client kubernetes.Interface, namespace string, o TokenOptions) (*ServiceAccountTokens, error) {
	switch {
	case client == nil:
		return nil, errors.New("service account tokens: no Kubernetes client")
	case !isDNSLabel(namespace):
		return nil, fmt.Errorf("service account tokens: namespace %q is not a DNS-1123 label", namespace)
	case o.Expiry != 0 && o.Expiry < minExpiry:
		return nil, fmt.Errorf("service account tokens: expiry %s is less than the %s the apiserver allows", o.Expiry, minExpiry)
	case o.Size < 0:
		return nil, fmt.Errorf("service account tokens: size %d is negative", o.Size)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &ServiceAccountTokens{
		client: client.CoreV1().ServiceAccounts(namespace), namespace: namespace,
		expiry: cmp.Or(o.Expiry, time.Hour), size: cmp.Or(o.Size, 1024), now: o.Now,
		kept: map[tokenKey]*list.Element{}, order: list.New(), flights: map[tokenKey]*tokenFlight{},
	}, nil
}

// Token returns a token of serviceAccount for audience: the one kept, or a new one. A
// caller that finds the same request under way waits for it; if that request failed only
// because its own caller's context ended, the waiter requests again with its own.
func (s *ServiceAccountTokens) Token(ctx context.Context, serviceAccount, audience string) (string, error) {
	switch {
	case !isDNSSubdomain(serviceAccount):
		return "", fmt.Errorf("token of service account %q: not a valid service account name", serviceAccount)
	case audience == "":
		return "", fmt.Errorf("token of service account %s/%s: no audience (the token would be good for the apiserver itself)", s.namespace, serviceAccount)
	}
	key := tokenKey{serviceAccount: serviceAccount, audience: audience}
	for {
		s.mu.Lock()
		if token, ok := s.lookup(key); ok {
			s.mu.Unlock()
			return token, nil
		}
		if f, ok := s.flights[key]; ok {
			f.waiters++
			s.mu.Unlock()
			select {
			case <-f.done:
				if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
					continue
				}
				return f.token, f.err
			case <-ctx.Done():
				return "", fmt.Errorf("wait for a token of service account %s/%s for audience %q: %w", s.namespace, serviceAccount, audience, ctx.Err())
			}
		}
		f := &tokenFlight{done: make(chan struct{})}
		s.flights[key] = f
		s.mu.Unlock()
		return s.lead(ctx, key, f)
	}
}

// lead requests the token of key for the callers of key, keeps it, and hands it to those
// waiting.
func (s *ServiceAccountTokens) lead(ctx context.Context, key tokenKey, f *tokenFlight) (string, error) {
	var refresh time.Time
	f.err = errors.New("token request abandoned")
	defer func() {
		s.mu.Lock()
		delete(s.flights, key)
		if f.err == nil {
			s.store(key, f.token, refresh)
		}
		s.mu.Unlock()
		close(f.done)
	}()
	f.token, refresh, f.err = s.request(ctx, key)
	return f.token, f.err
}

// request asks the apiserver for a token of key, and says when to ask again.
func (s *ServiceAccountTokens) request(ctx context.Context, key tokenKey) (string, time.Time, error) {
	asked := s.now()
	seconds := int64(s.expiry / time.Second)
	tr, err := s.client.CreateToken(ctx, key.serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{key.audience}, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("request a token of service account %s/%s for audience %q: %w", s.namespace, key.serviceAccount, key.audience, err)
	}
	if tr == nil || tr.Status.Token == "" {
		return "", time.Time{}, fmt.Errorf("request a token of service account %s/%s for audience %q: the apiserver returned none", s.namespace, key.serviceAccount, key.audience)
	}
	expires := tr.Status.ExpirationTimestamp.Time
	if expires.IsZero() {
		expires = asked.Add(s.expiry)
	}
	return tr.Status.Token, asked.Add(expires.Sub(asked) * 8 / 10), nil
}

// lookup returns the token kept for key, unless it is due for a refresh. s.mu is held.
func (s *ServiceAccountTokens) lookup(key tokenKey) (string, bool) {
	el, ok := s.kept[key]
	if !ok {
		return "", false
	}
	k := el.Value.(*keptToken)
	if !s.now().Before(k.refresh) {
		s.order.Remove(el)
		delete(s.kept, key)
		return "", false
	}
	s.order.MoveToBack(el)
	return k.token, true
}

// store keeps token for key until refresh, unless that has passed, and drops the least
// recently used tokens beyond the size. s.mu is held.
func (s *ServiceAccountTokens) store(key tokenKey, token string, refresh time.Time) {
	if !s.now().Before(refresh) {
		return
	}
	if el, ok := s.kept[key]; ok {
		s.order.Remove(el)
	}
	s.kept[key] = s.order.PushBack(&keptToken{key: key, token: token, refresh: refresh})
	for s.order.Len() > s.size {
		oldest := s.order.Front()
		s.order.Remove(oldest)
		delete(s.kept, oldest.Value.(*keptToken).key)
	}
}

// isDNSSubdomain reports whether s is a DNS-1123 subdomain, as service account names are.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}
