package access

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"
)

// Caller is an authenticated requester, as the apiserver knows them.
type Caller struct {
	Username string              `json:"username"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// clone is a copy of c that shares no slice or map with it.
func (c Caller) clone() Caller {
	c.Groups = slices.Clone(c.Groups)
	if c.Extra != nil {
		extra := make(map[string][]string, len(c.Extra))
		for k, v := range c.Extra {
			extra[k] = slices.Clone(v)
		}
		c.Extra = extra
	}
	return c
}

// ErrUnauthenticated is wrapped by the errors of Authenticate that refuse the token (as
// opposed to failing to review it); the rest of the message says why.
var ErrUnauthenticated = errors.New("unauthenticated")

// TokenReviewCreator creates TokenReviews; cs.AuthenticationV1().TokenReviews() of a
// client-go clientset is one.
type TokenReviewCreator interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// TokenReviewFunc is a function that creates TokenReviews, such as a test's stand-in
// for the apiserver.
type TokenReviewFunc func(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)

// Create calls f.
func (f TokenReviewFunc) Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	return f(ctx, review, opts)
}

// ReviewOptions tune a TokenReviewer; the zero value is the defaults.
type ReviewOptions struct {
	// TTL is how long a successful review is kept at most (30s when 0); never past the
	// token's own expiry.
	TTL time.Duration
	// Size is how many reviews are kept at most (1024 when 0); the oldest go first.
	Size int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// TokenReviewer authenticates bearer tokens with the apiserver's TokenReview API for one
// audience.
type TokenReviewer struct {
	client   TokenReviewCreator
	audience string
	ttl      time.Duration
	now      func() time.Time
	reviews  *cache[[sha256.Size]byte, Caller]
}

// NewTokenReviewer returns a TokenReviewer that reviews tokens through client for
// audience, podguard's audience; it panics when audience is empty, since every token
// would then be reviewed for the apiserver's own audiences.
func NewTokenReviewer(client TokenReviewCreator, audience string, o ReviewOptions) *TokenReviewer {
	if audience == "" {
		panic("access: NewTokenReviewer needs an audience")
	}
	o.TTL = cmp.Or(o.TTL, 30*time.Second)
	o.Size = cmp.Or(o.Size, 1024)
	if o.Now == nil {
		o.Now = time.Now
	}
	return &TokenReviewer{client: client, audience: audience, ttl: o.TTL, now: o.Now, reviews: newCache[[sha256.Size]byte, Caller](o.Size, o.Now)}
}

// Authenticate reviews a bearer token and returns who it belongs to. An error wrapping
// ErrUnauthenticated refuses the token: there is none, the apiserver does not
// authenticate it (its reason follows), or it is not for the reviewer's audience. Any
// other error is a failure to review it, worth retrying.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (Caller, error) {
	if token == "" {
		return Caller{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	c, err := r.reviews.do(ctx, sha256.Sum256([]byte(token)), func(ctx context.Context) (Caller, time.Time, error) {
		return r.review(ctx, token)
	})
	if err != nil {
		return Caller{}, err
	}
	return c.clone(), nil
}

// review asks the apiserver about token; a caller it returns is good until the time
// returned with it.
func (r *TokenReviewer) review(ctx context.Context, token string) (Caller, time.Time, error) {
	tr, err := r.client.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
		Token: token, Audiences: []string{r.audience},
	}}, metav1.CreateOptions{})
	if err != nil {
		return Caller{}, time.Time{}, fmt.Errorf("review a token for audience %q: %w", r.audience, err)
	}
	st := tr.Status
	var refusal string
	switch {
	case !st.Authenticated:
		refusal = cmp.Or(st.Error, "the apiserver does not authenticate the token")
	case !slices.Contains(st.Audiences, r.audience):
		refusal = fmt.Sprintf("the token is not for audience %q (the apiserver found audiences %q in it)", r.audience, st.Audiences)
	case st.User.Username == "":
		refusal = "the apiserver names no user for the token"
	}
	if refusal != "" {
		logging.FromContext(ctx).Debugw("token refused", zap.String("audience", r.audience), zap.String("reason", refusal))
		return Caller{}, time.Time{}, fmt.Errorf("%w: %s", ErrUnauthenticated, refusal)
	}
	c := Caller{Username: st.User.Username, UID: st.User.UID, Groups: st.User.Groups}
	if len(st.User.Extra) > 0 {
		c.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			c.Extra[k] = []string(v)
		}
	}
	until := r.now().Add(r.ttl)
	if exp, ok := expiry(token); ok && exp.Before(until) {
		until = exp
	}
	return c, until, nil
}

// expiry reads the exp claim of a JWT without verifying it, which the apiserver did; it
// only bounds how long a review is kept.
func expiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil || *claims.Exp <= 0 || *claims.Exp > 1e12 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(*claims.Exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// BearerToken is the token of a request's `Authorization: Bearer <token>` header (the
// scheme in any case), if it has one.
func BearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}
