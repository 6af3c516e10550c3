package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tokenRequest is a TokenRequest the fake apiserver answered.
type tokenRequest struct {
	namespace, serviceAccount, audience string
	seconds                             int64
}

// apiserver is a fake clientset whose TokenRequests answer with respond (the token, its
// lifetime; a zero lifetime leaves the expiry out).
type apiserver struct {
	*fake.Clientset
	mu       sync.Mutex
	requests []tokenRequest
}

func newAPIServer(t *testing.T, respond func(tokenRequest) (string, time.Duration, error), now func() time.Time) *apiserver {
	t.Helper()
	a := &apiserver{Clientset: fake.NewClientset()}
	a.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, k8sruntime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		create := action.(k8stesting.CreateActionImpl)
		tr := create.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		req := tokenRequest{namespace: create.GetNamespace(), serviceAccount: create.Name}
		if len(tr.Spec.Audiences) == 1 {
			req.audience = tr.Spec.Audiences[0]
		}
		if tr.Spec.ExpirationSeconds != nil {
			req.seconds = *tr.Spec.ExpirationSeconds
		}
		a.mu.Lock()
		a.requests = append(a.requests, req)
		a.mu.Unlock()
		token, life, err := respond(req)
		if err != nil {
			return true, nil, err
		}
		tr.Status.Token = token
		if life > 0 {
			tr.Status.ExpirationTimestamp = metav1.NewTime(now().Add(life))
		}
		return true, tr, nil
	})
	return a
}

func (a *apiserver) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

// issue answers every request with a token naming it and the number of requests so far,
// for the lifetime asked.
func issue(a **apiserver) func(tokenRequest) (string, time.Duration, error) {
	return func(r tokenRequest) (string, time.Duration, error) {
		return fmt.Sprintf("%s@%s#%d", r.serviceAccount, r.audience, (*a).count()), time.Duration(r.seconds) * time.Second, nil
	}
}

func newTokens(t *testing.T, a *apiserver, o TokenOptions) *ServiceAccountTokens {
	t.Helper()
	s, err := NewServiceAccountTokens(a, localNamespace, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func token(t *testing.T, s *ServiceAccountTokens, sa, aud string) string {
	t.Helper()
	tok, err := s.Token(context.Background(), sa, aud)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestServiceAccountTokens(t *testing.T) {
	c := newClock()
	var a *apiserver
	a = newAPIServer(t, issue(&a), c.now)
	s := newTokens(t, a, TokenOptions{Now: c.now})

	if got := token(t, s, "sa-1", "aud-a"); got != "sa-1@aud-a#1" {
		t.Errorf("token %q", got)
	}
	if want := (tokenRequest{namespace: localNamespace, serviceAccount: "sa-1", audience: "aud-a", seconds: 3600}); a.requests[0] != want {
		t.Errorf("request %+v, want %+v", a.requests[0], want)
	}
	if got := token(t, s, "sa-1", "aud-a"); got != "sa-1@aud-a#1" || a.count() != 1 {
		t.Errorf("second call: token %q after %d requests, want the one kept", got, a.count())
	}
	if got := token(t, s, "sa-1", "aud-b"); got != "sa-1@aud-b#2" {
		t.Errorf("another audience: token %q", got)
	}
	if got := token(t, s, "sa-2", "aud-a"); got != "sa-2@aud-a#3" {
		t.Errorf("another service account: token %q", got)
	}

	// Kept until 80% of its hour: 48 minutes.
	c.advance(48*time.Minute - time.Second)
	if got := token(t, s, "sa-1", "aud-a"); got != "sa-1@aud-a#1" {
		t.Errorf("before 80%% of its lifetime: token %q", got)
	}
	c.advance(time.Second)
	if got := token(t, s, "sa-1", "aud-a"); got != "sa-1@aud-a#4" {
		t.Errorf("at 80%% of its lifetime: token %q, want a new one", got)
	}
}

// TestServiceAccountTokensLifetime: the lifetime is the one the apiserver gives.
func TestServiceAccountTokensLifetime(t *testing.T) {
	c := newClock()
	a := newAPIServer(t, func(r tokenRequest) (string, time.Duration, error) {
		return "short", 10 * time.Minute, nil
	}, c.now)
	s := newTokens(t, a, TokenOptions{Expiry: 2 * time.Hour, Now: c.now})
	token(t, s, "sa", "aud")
	if a.requests[0].seconds != 7200 {
		t.Errorf("asked %ds", a.requests[0].seconds)
	}
	c.advance(8*time.Minute - time.Second)
	token(t, s, "sa", "aud")
	if a.count() != 1 {
		t.Errorf("%d requests before 80%% of the given 10 minutes", a.count())
	}
	c.advance(time.Second)
	token(t, s, "sa", "aud")
	if a.count() != 2 {
		t.Errorf("%d requests at 80%% of the given 10 minutes, want 2", a.count())
	}
}

func TestServiceAccountTokensBounded(t *testing.T) {
	c := newClock()
	var a *apiserver
	a = newAPIServer(t, issue(&a), c.now)
	s := newTokens(t, a, TokenOptions{Size: 2, Now: c.now})
	token(t, s, "a", "aud")
	token(t, s, "b", "aud")
	token(t, s, "a", "aud") // a is now the most recently used
	token(t, s, "c", "aud") // drops b
	if a.count() != 3 {
		t.Fatalf("%d requests, want 3", a.count())
	}
	token(t, s, "a", "aud")
	token(t, s, "c", "aud")
	if a.count() != 3 {
		t.Errorf("a or c was dropped: %d requests", a.count())
	}
	token(t, s, "b", "aud")
	if a.count() != 4 {
		t.Errorf("b was kept beyond the size: %d requests", a.count())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.kept) != 2 || s.order.Len() != 2 {
		t.Errorf("%d tokens kept, want 2", len(s.kept))
	}
}

func TestServiceAccountTokensErrors(t *testing.T) {
	c := newClock()
	fail := true
	a := newAPIServer(t, func(r tokenRequest) (string, time.Duration, error) {
		if fail {
			return "", 0, errors.New(`serviceaccounts "sa" not found`)
		}
		return "", 0, nil
	}, c.now)
	s := newTokens(t, a, TokenOptions{Now: c.now})
	_, err := s.Token(context.Background(), "sa", "aud")
	if err == nil || !strings.Contains(err.Error(), `request a token of service account pg-local/sa for audience "aud"`) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("error %v", err)
	}
	fail = false
	if _, err := s.Token(context.Background(), "sa", "aud"); err == nil || !strings.Contains(err.Error(), "returned none") || a.count() != 2 {
		t.Errorf("a failure was kept, or an empty token taken: %v after %d requests", err, a.count())
	}
	if _, err := s.Token(context.Background(), "sa", ""); err == nil || !strings.Contains(err.Error(), "no audience") {
		t.Errorf("no audience: %v", err)
	}
	if _, err := s.Token(context.Background(), "Not/A/Name", "aud"); err == nil {
		t.Error("a bad service account name is no error")
	}
	for _, tc := range []struct {
		name string
		ns   string
		o    TokenOptions
	}{
		{"bad namespace", "Bad_NS", TokenOptions{}},
		{"short expiry", localNamespace, TokenOptions{Expiry: time.Minute}},
		{"negative size", localNamespace, TokenOptions{Size: -1}},
	} {
		if _, err := NewServiceAccountTokens(fake.NewClientset(), tc.ns, tc.o); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := NewServiceAccountTokens(nil, localNamespace, TokenOptions{}); err == nil {
		t.Error("no client: no error")
	}
}

// waitForTokenWaiters returns once n callers wait for the request under way for key.
func waitForTokenWaiters(t *testing.T, s *ServiceAccountTokens, key tokenKey, n int) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		s.mu.Lock()
		got := 0
		if f := s.flights[key]; f != nil {
			got = f.waiters
		}
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d callers wait for the token request, want %d", got, n)
		}
		runtime.Gosched()
	}
}

func TestServiceAccountTokensShareARequest(t *testing.T) {
	release := make(chan struct{})
	a := newAPIServer(t, func(r tokenRequest) (string, time.Duration, error) {
		<-release
		return "shared", time.Hour, nil
	}, time.Now)
	s := newTokens(t, a, TokenOptions{})
	const callers = 5
	results := make(chan string, callers)
	for range callers {
		go func() {
			tok, err := s.Token(context.Background(), "sa", "aud")
			results <- fmt.Sprintf("%s %v", tok, err)
		}()
	}
	waitForTokenWaiters(t, s, tokenKey{serviceAccount: "sa", audience: "aud"}, callers-1)
	close(release)
	for range callers {
		select {
		case r := <-results:
			if r != "shared <nil>" {
				t.Errorf("got %s", r)
			}
		case <-time.After(deadline):
			t.Fatal("a caller did not return")
		}
	}
	if a.count() != 1 {
		t.Errorf("%d requests, want 1", a.count())
	}
}

// TestServiceAccountTokensLeaderGone: when the caller whose request others wait for
// gives up, a waiter requests again with its own context.
func TestServiceAccountTokensLeaderGone(t *testing.T) {
	s := newTokens(t, newAPIServer(t, nil, time.Now), TokenOptions{})
	s.client = &firstWaits{}
	leaderCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader := make(chan error, 1)
	go func() {
		_, err := s.Token(leaderCtx, "sa", "aud")
		leader <- err
	}()
	key := tokenKey{serviceAccount: "sa", audience: "aud"}
	waitForFlight(t, s, key)
	waiter := make(chan string, 1)
	go func() {
		tok, err := s.Token(context.Background(), "sa", "aud")
		waiter <- fmt.Sprintf("%s %v", tok, err)
	}()
	waitForTokenWaiters(t, s, key, 1)
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v", err)
	}
	select {
	case r := <-waiter:
		if r != "second <nil>" {
			t.Errorf("waiter got %s", r)
		}
	case <-time.After(deadline):
		t.Fatal("the waiter did not return")
	}
}

// firstWaits makes the first request last until its context ends, and answers the next
// ones with the token "second".
type firstWaits struct {
	mu    sync.Mutex
	calls int
}

func (f *firstWaits) CreateToken(ctx context.Context, _ string, tr *authenticationv1.TokenRequest, _ metav1.CreateOptions) (*authenticationv1.TokenRequest, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.mu.Unlock()
	if n == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	out := tr.DeepCopy()
	out.Status.Token = "second"
	return out, nil
}

// waitForFlight returns once a request for key is under way.
func waitForFlight(t *testing.T, s *ServiceAccountTokens, key tokenKey) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		s.mu.Lock()
		_, ok := s.flights[key]
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatal("no token request under way")
		}
		runtime.Gosched()
	}
}
