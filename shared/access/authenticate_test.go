package access_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podguard/podguard/shared/access"
)

const audience = "podguard"

// clock is a settable time for the caches.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// jwt is an unsigned token whose payload has the claim exp (none when zero) and a sub
// that tells tokens apart.
func jwt(sub string, exp time.Time) string {
	payload := fmt.Sprintf(`{"sub":%q}`, sub)
	if !exp.IsZero() {
		payload = fmt.Sprintf(`{"sub":%q,"exp":%d}`, sub, exp.Unix())
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2lnbmF0dXJl"
}

// tokenReviews is a fake clientset whose TokenReviews answer with respond; reviews
// counts them.
func tokenReviews(t *testing.T, respond func(*authenticationv1.TokenReview) (authenticationv1.TokenReviewStatus, error)) (*fake.Clientset, *atomic.Int32) {
	t.Helper()
	cs := fake.NewClientset()
	var reviews atomic.Int32
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		st, err := respond(tr)
		if err != nil {
			return true, nil, err
		}
		tr.Status = st
		return true, tr, nil
	})
	return cs, &reviews
}

var viewer = authenticationv1.UserInfo{
	Username: "system:serviceaccount:team-a:viewer",
	UID:      "0b7f4c6e-4d1e-4f7a-9a57-3f2d1c9e8b10",
	Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"},
	Extra:    map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/credential-id": {"JTI=42"}},
}

// authenticated accepts every token for the audiences it is reviewed for.
func authenticated(tr *authenticationv1.TokenReview) (authenticationv1.TokenReviewStatus, error) {
	return authenticationv1.TokenReviewStatus{Authenticated: true, User: viewer, Audiences: tr.Spec.Audiences}, nil
}

func TestAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		token  string
		status authenticationv1.TokenReviewStatus
		want   string // the refusal's message; none for success
	}{
		{name: "no token", want: "unauthenticated: no bearer token"},
		{
			name: "expired", token: "t1",
			status: authenticationv1.TokenReviewStatus{Error: "token has expired"},
			want:   "unauthenticated: token has expired",
		},
		{
			name: "audiences refused by the apiserver", token: "t2",
			status: authenticationv1.TokenReviewStatus{Error: `token audiences ["other"] is invalid for the target audiences ["podguard"]`},
			want:   `unauthenticated: token audiences ["other"] is invalid for the target audiences ["podguard"]`,
		},
		{
			name: "unauthenticated without a reason", token: "t3",
			want: "unauthenticated: the apiserver does not authenticate the token",
		},
		{
			name: "another audience in the status", token: "t4",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: viewer, Audiences: []string{"https://kubernetes.default.svc"}},
			want:   `unauthenticated: the token is not for audience "podguard" (the apiserver found audiences ["https://kubernetes.default.svc"] in it)`,
		},
		{
			name: "no audience in the status", token: "t5",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: viewer},
			want:   `unauthenticated: the token is not for audience "podguard" (the apiserver found audiences [] in it)`,
		},
		{
			name: "no username", token: "t6",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{audience}},
			want:   "unauthenticated: the apiserver names no user for the token",
		},
		{
			name: "authenticated", token: "t7",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: viewer, Audiences: []string{"other", audience}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec authenticationv1.TokenReviewSpec
			cs, reviews := tokenReviews(t, func(tr *authenticationv1.TokenReview) (authenticationv1.TokenReviewStatus, error) {
				spec = tr.Spec
				return tc.status, nil
			})
			r := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{})
			c, err := r.Authenticate(context.Background(), tc.token)
			if tc.want != "" {
				if !errors.Is(err, access.ErrUnauthenticated) || err.Error() != tc.want {
					t.Fatalf("got %+v, %v; want %q", c, err, tc.want)
				}
				if strings.Contains(err.Error(), tc.token) && tc.token != "" {
					t.Errorf("the error names the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec.Token != tc.token || !slices.Equal(spec.Audiences, []string{audience}) {
				t.Errorf("reviewed %+v", spec)
			}
			if c.Username != viewer.Username || c.UID != viewer.UID || !slices.Equal(c.Groups, viewer.Groups) ||
				!slices.Equal(c.Extra["authentication.kubernetes.io/credential-id"], []string{"JTI=42"}) {
				t.Errorf("caller %+v", c)
			}
			if reviews.Load() != 1 {
				t.Errorf("%d reviews", reviews.Load())
			}
		})
	}
}

func TestAuthenticateKeepsSuccesses(t *testing.T) {
	cs, reviews := tokenReviews(t, authenticated)
	r := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{})
	ctx := context.Background()
	first, err := r.Authenticate(ctx, "tok")
	if err != nil {
		t.Fatal(err)
	}
	first.Groups[0] = "system:masters" // the caller's copy is its own
	second, err := r.Authenticate(ctx, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if reviews.Load() != 1 {
		t.Fatalf("%d reviews for one token, want 1", reviews.Load())
	}
	if !slices.Equal(second.Groups, viewer.Groups) {
		t.Fatalf("kept caller changed: %v", second.Groups)
	}
	if _, err := r.Authenticate(ctx, "another"); err != nil || reviews.Load() != 2 {
		t.Fatalf("another token: %v, %d reviews", err, reviews.Load())
	}
}

func TestAuthenticateKeepsNoLongerThanTTLNorExpiry(t *testing.T) {
	clk := newClock()
	cs, reviews := tokenReviews(t, authenticated)
	r := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{Now: clk.now})
	ctx := context.Background()
	check := func(token string, want int32) {
		t.Helper()
		if _, err := r.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
		if reviews.Load() != want {
			t.Fatalf("at %s: %d reviews, want %d", clk.t.Format(time.TimeOnly), reviews.Load(), want)
		}
	}

	soon := jwt("soon", clk.t.Add(5*time.Second)) // expires before the TTL
	check(soon, 1)
	clk.advance(4 * time.Second)
	check(soon, 1)
	clk.advance(time.Second)
	check(soon, 2) // expired: reviewed again (and not kept, its exp having passed)
	check(soon, 3)

	reviews.Store(0)
	late := jwt("late", clk.t.Add(time.Hour)) // the TTL bounds it
	opaque := "not-a-jwt"                     // the TTL bounds it
	check(late, 1)
	check(opaque, 2)
	clk.advance(29 * time.Second)
	check(late, 2)
	check(opaque, 2)
	clk.advance(time.Second)
	check(late, 3)
	check(opaque, 4)
}

func TestAuthenticateKeepsABoundedNumber(t *testing.T) {
	cs, reviews := tokenReviews(t, authenticated)
	r := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{Size: 2})
	ctx := context.Background()
	for _, tok := range []string{"a", "b", "c", "c", "b", "a"} {
		if _, err := r.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if reviews.Load() != 4 { // a, b, c, then a again: the oldest went when c came
		t.Fatalf("%d reviews, want 4", reviews.Load())
	}
}

func TestAuthenticateKeepsNoFailures(t *testing.T) {
	down := errors.New("connection refused")
	var fail atomic.Bool
	fail.Store(true)
	cs, reviews := tokenReviews(t, func(tr *authenticationv1.TokenReview) (authenticationv1.TokenReviewStatus, error) {
		if fail.Load() {
			return authenticationv1.TokenReviewStatus{}, down
		}
		return authenticated(tr)
	})
	r := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{})
	ctx := context.Background()
	_, err := r.Authenticate(ctx, "tok")
	if !errors.Is(err, down) || errors.Is(err, access.ErrUnauthenticated) {
		t.Fatalf("apiserver down: %v", err)
	}
	if want := `review a token for audience "podguard": connection refused`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	fail.Store(false)
	if _, err := r.Authenticate(ctx, "tok"); err != nil || reviews.Load() != 2 {
		t.Fatalf("after recovery: %v, %d reviews", err, reviews.Load())
	}

	refused, reviews := tokenReviews(t, func(*authenticationv1.TokenReview) (authenticationv1.TokenReviewStatus, error) {
		return authenticationv1.TokenReviewStatus{Error: "token has expired"}, nil
	})
	r = access.NewTokenReviewer(refused.AuthenticationV1().TokenReviews(), audience, access.ReviewOptions{})
	for range 2 {
		if _, err := r.Authenticate(ctx, "tok"); !errors.Is(err, access.ErrUnauthenticated) {
			t.Fatal(err)
		}
	}
	if reviews.Load() != 2 {
		t.Fatalf("%d reviews of a refused token, want 2", reviews.Load())
	}
}

func TestTokenReviewFunc(t *testing.T) {
	r := access.NewTokenReviewer(access.TokenReviewFunc(func(_ context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
		tr.Status, _ = authenticated(tr)
		return tr, nil
	}), audience, access.ReviewOptions{})
	if c, err := r.Authenticate(context.Background(), "tok"); err != nil || c.Username != viewer.Username {
		t.Fatalf("%+v, %v", c, err)
	}
}

func TestBearerToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc.def.ghi": "abc.def.ghi",
		"bearer abc":         "abc",
		"BEARER   abc  ":     "abc",
		"Basic dXNlcjpwYXNz": "",
		"Bearer":             "",
		"Bearer ":            "",
		"Bearer abc def":     "",
		"Bearerabc":          "",
		"":                   "",
		"Token abc":          "",
		" Bearer\tabc":       "",
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		got, ok := access.BearerToken(r)
		if got != want || ok != (want != "") {
			t.Errorf("%q: got %q, %v; want %q", header, got, ok, want)
		}
	}
}
