package access

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// KeySource fetches the JSON Web Key Set of an issuer: the raw JSON of the document at
// its jwks_uri.
type KeySource interface {
	Keys(ctx context.Context) ([]byte, error)
}

// KeySourceFunc is a function that fetches a JSON Web Key Set, such as a test's
// stand-in for the issuer.
type KeySourceFunc func(ctx context.Context) ([]byte, error)

// Keys calls f.
func (f KeySourceFunc) Keys(ctx context.Context) ([]byte, error) { return f(ctx) }

// VerifierOptions say which tokens a Verifier accepts; Issuer and Audience are
// required, the rest have defaults.
type VerifierOptions struct {
	// Issuer is the "iss" a token must have, such as
	// https://kubernetes.default.svc.cluster.local.
	Issuer string
	// Audience must be one of a token's "aud".
	Audience string
	// Leeway is the clock skew allowed on "exp", "nbf" and "iat" (30s when 0).
	Leeway time.Duration
	// Refresh is the least time between two fetches of the key set for a token that no
	// key known verifies (1m when 0).
	Refresh time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Verifier checks JWTs issued by one issuer for one audience against the issuer's
// keys, which it fetches once and again only for a token signed by a key it does not
// know, at most once per Refresh.
type Verifier struct {
	src      KeySource
	issuer   string
	audience string
	leeway   time.Duration
	refresh  time.Duration
	now      func() time.Time

	fetching chan struct{} // holds a token while a fetch of the key set is under way

	mu        sync.Mutex
	keys      *keySet   // nil until a fetch succeeds
	fetches   uint64    // fetches done, successful or not
	refetched time.Time // when the last fetch with keys known began
	failure   error     // of the last fetch, nil when it succeeded
}

// NewVerifier returns a Verifier of the tokens of o.Issuer for o.Audience, with the
// keys src fetches.
func NewVerifier(src KeySource, o VerifierOptions) (*Verifier, error) {
	switch {
	case src == nil:
		return nil, errors.New("a token verifier needs a key source")
	case o.Issuer == "":
		return nil, errors.New("a token verifier needs an issuer")
	case o.Audience == "":
		return nil, errors.New("a token verifier needs an audience")
	case o.Leeway < 0 || o.Refresh < 0:
		return nil, fmt.Errorf("a token verifier needs a leeway and a refresh period of 0 or more, not %s and %s", o.Leeway, o.Refresh)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Verifier{
		src: src, issuer: o.Issuer, audience: o.Audience,
		leeway: cmp.Or(o.Leeway, 30*time.Second), refresh: cmp.Or(o.Refresh, time.Minute), now: o.Now,
		fetching: make(chan struct{}, 1),
	}, nil
}

// maxTokenSize bounds the tokens a Verifier decodes; the apiserver's are about 1 KiB.
const maxTokenSize = 16 << 10

// The keys of the extra information of a service account's caller, as the apiserver
// names them.
const (
	extraPodName      = "authentication.kubernetes.io/pod-name"
	extraPodUID       = "authentication.kubernetes.io/pod-uid"
	extraNodeName     = "authentication.kubernetes.io/node-name"
	extraNodeUID      = "authentication.kubernetes.io/node-uid"
	extraCredentialID = "authentication.kubernetes.io/credential-id"
)

// Verify checks a bearer token, a JWT, and returns its caller: the "sub" claim is the
// username; a service account's token (with the claim "kubernetes.io", whose service
// account must be the subject) also gives the service account's UID, its groups
// (system:serviceaccounts, system:serviceaccounts:<namespace>, system:authenticated)
// and, as the apiserver does, the pod and node it is bound to and its "jti" as extra
// information. Another token gives its username only.
//
// An error wrapping ErrUnauthenticated refuses the token, saying why: it is malformed,
// is signed with an algorithm other than RS256, RS384, RS512 or ES256, by a key the
// issuer does not have, or not by the key it names; or it has another issuer, is not
// for the audience, has expired or is not valid yet, all with Leeway. Any other error is
// a failure to fetch the issuer's keys, worth retrying.
func (v *Verifier) Verify(ctx context.Context, token string) (Caller, error) {
	t, err := parseToken(token)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if err := v.verifySignature(ctx, t); err != nil {
		return Caller{}, err
	}
	c, err := v.caller(t.payload)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return c, nil
}

// jws is a token in JWS compact serialization, decoded.
type jws struct {
	alg, kid string
	signed   []byte // the header and payload as encoded, which the signature covers
	payload  []byte
	sig      []byte
}

// parseToken decodes a JWT and checks that its algorithm is one a Verifier accepts.
func parseToken(token string) (jws, error) {
	if token == "" {
		return jws{}, errors.New("no bearer token")
	}
	if len(token) > maxTokenSize {
		return jws{}, fmt.Errorf("malformed token: %d bytes, more than %d", len(token), maxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return jws{}, fmt.Errorf("malformed token: %d parts separated by dots, not 3", len(parts))
	}
	var raw [3][]byte
	for i, name := range []string{"header", "payload", "signature"} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return jws{}, fmt.Errorf("malformed token: its %s is not base64url: %w", name, err)
		}
		raw[i] = b
	}
	var h struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(raw[0], &h); err != nil {
		return jws{}, fmt.Errorf("malformed token: its header is not a JSON object: %w", err)
	}
	if _, ok := algorithms[h.Alg]; !ok {
		return jws{}, fmt.Errorf("token signed with the unsupported algorithm %q (only RS256, RS384, RS512 and ES256 are accepted)", h.Alg)
	}
	if h.Crit != nil {
		return jws{}, fmt.Errorf("token with critical header extensions %s, which are not supported", h.Crit)
	}
	return jws{alg: h.Alg, kid: h.Kid, signed: []byte(parts[0] + "." + parts[1]), payload: raw[1], sig: raw[2]}, nil
}

// verifySignature checks that a key of the issuer signed t: the key t names or, when it
// names none, any key of the algorithm's type. When no key known fits, it fetches the
// key set again, in case the issuer has a new key, unless that was done less than
// Refresh ago.
func (v *Verifier) verifySignature(ctx context.Context, t jws) error {
	ks, n, err := v.keySet(ctx)
	if err != nil {
		return err
	}
	for {
		ok, known := ks.verifies(t)
		if ok {
			return nil
		}
		if known {
			return badSignature(ks, t)
		}
		newer, m, err := v.refetch(ctx, n)
		if err != nil {
			return err
		}
		if m == n {
			if t.kid == "" {
				return badSignature(ks, t)
			}
			return fmt.Errorf("%w: token signed by the unknown key id %q", ErrUnauthenticated, t.kid)
		}
		ks, n = newer, m
	}
}

// verifies reports whether a key of ks verifies t's signature and, when none does,
// whether that is final: t names a key of ks.
func (ks *keySet) verifies(t jws) (ok, known bool) {
	for _, k := range ks.candidates(t.kid, t.alg) {
		if k.verify(t.alg, t.signed, t.sig) {
			return true, true
		}
	}
	return false, t.kid != "" && ks.hasID(t.kid)
}

// badSignature is the refusal of t, which no key of ks verifies.
func badSignature(ks *keySet, t jws) error {
	switch {
	case t.kid == "":
		return fmt.Errorf("%w: bad signature: no %s key of the issuer verifies the token, which names no key id", ErrUnauthenticated, t.alg)
	case len(ks.candidates(t.kid, t.alg)) == 0:
		return fmt.Errorf("%w: token signed with %s by key %q, which is not a key for %s", ErrUnauthenticated, t.alg, t.kid, t.alg)
	}
	return fmt.Errorf("%w: bad signature: key %q does not verify the token", ErrUnauthenticated, t.kid)
}

// keySet returns the keys known and the number of fetches that led to them, fetching
// them if there are none yet.
func (v *Verifier) keySet(ctx context.Context) (*keySet, uint64, error) {
	v.mu.Lock()
	ks, n := v.keys, v.fetches
	v.mu.Unlock()
	if ks != nil {
		return ks, n, nil
	}
	return v.refetch(ctx, n)
}

// refetch fetches the key set, known after seen fetches, anew and returns it with the
// number of fetches now done. It does not when another caller fetched it meanwhile
// (whose result it shares), nor when keys are known and the last fetch made with keys
// known began less than Refresh ago: it then returns the known keys, or the failure of
// that fetch. The first fetch with keys known is free, so that a key the issuer adds
// soon after the first fetch is found at once. One fetch runs at a time.
func (v *Verifier) refetch(ctx context.Context, seen uint64) (*keySet, uint64, error) {
	select {
	case v.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("wait for the issuer's keys being fetched: %w", ctx.Err())
	}
	defer func() { <-v.fetching }()

	v.mu.Lock()
	ks, n, refetched, failure := v.keys, v.fetches, v.refetched, v.failure
	v.mu.Unlock()
	if n != seen || (ks != nil && !refetched.IsZero() && v.now().Sub(refetched) < v.refresh) {
		if failure != nil {
			return nil, 0, failure
		}
		return ks, n, nil
	}

	started := v.now()
	newer, err := v.fetch(ctx)
	if err != nil && ctx.Err() != nil {
		// Only this caller gave up: the next one fetches afresh.
		return nil, 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fetches++
	v.failure = err
	if ks != nil {
		v.refetched = started
	}
	if err != nil {
		return nil, 0, err
	}
	v.keys = newer
	return newer, v.fetches, nil
}

// fetch reads the key set from the source.
func (v *Verifier) fetch(ctx context.Context) (*keySet, error) {
	raw, err := v.src.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch the keys of issuer %s: %w", v.issuer, err)
	}
	ks, err := parseKeySet(raw)
	if err != nil {
		return nil, fmt.Errorf("fetch the keys of issuer %s: %w", v.issuer, err)
	}
	return ks, nil
}

// claims are those of a token's payload that a Verifier reads.
type claims struct {
	Issuer     string       `json:"iss"`
	Subject    string       `json:"sub"`
	Audience   audiences    `json:"aud"`
	Expiry     *numericDate `json:"exp"`
	NotBefore  *numericDate `json:"nbf"`
	IssuedAt   *numericDate `json:"iat"`
	ID         string       `json:"jti"`
	Kubernetes *struct {
		Namespace      string     `json:"namespace"`
		ServiceAccount *objectRef `json:"serviceaccount"`
		Pod            *objectRef `json:"pod"`
		Node           *objectRef `json:"node"`
	} `json:"kubernetes.io"`
}

// objectRef names an object in the claim "kubernetes.io".
type objectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// audiences is the claim "aud": one string or an array of them.
type audiences []string

func (a *audiences) UnmarshalJSON(b []byte) error {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte(`"`)) {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audiences{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = l
	return nil
}

// numericDate is a JWT time: seconds since the epoch, maybe fractional.
type numericDate struct{ time.Time }

func (d *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil || f < 0 || f > 1e12 || math.IsNaN(f) {
		return fmt.Errorf("%s is not a time in seconds since the epoch", b)
	}
	sec, frac := math.Modf(f)
	d.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return nil
}

// caller checks the claims of a token's payload, whose signature is verified, and
// returns who they name.
func (v *Verifier) caller(payload []byte) (Caller, error) {
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Caller{}, fmt.Errorf("malformed token: its payload: %w", err)
	}
	now := v.now()
	switch {
	case c.Issuer != v.issuer:
		return Caller{}, fmt.Errorf("token of issuer %q, not %q", c.Issuer, v.issuer)
	case !slices.Contains(c.Audience, v.audience):
		return Caller{}, fmt.Errorf("token not for audience %q (its audiences are %q)", v.audience, []string(c.Audience))
	case c.Expiry == nil:
		return Caller{}, errors.New("token without an expiry")
	case !now.Before(c.Expiry.Add(v.leeway)):
		return Caller{}, fmt.Errorf("token expired at %s", c.Expiry.Format(time.RFC3339))
	case c.NotBefore != nil && now.Add(v.leeway).Before(c.NotBefore.Time):
		return Caller{}, fmt.Errorf("token not valid before %s", c.NotBefore.Format(time.RFC3339))
	case c.IssuedAt != nil && now.Add(v.leeway).Before(c.IssuedAt.Time):
		return Caller{}, fmt.Errorf("token issued in the future, at %s", c.IssuedAt.Format(time.RFC3339))
	case c.Subject == "":
		return Caller{}, errors.New("token without a subject")
	}
	caller := Caller{Username: c.Subject}
	k := c.Kubernetes
	if k == nil || k.ServiceAccount == nil {
		return caller, nil
	}
	if k.Namespace == "" || k.ServiceAccount.Name == "" {
		return Caller{}, errors.New("malformed token: its claim kubernetes.io names no service account")
	}
	if want := serviceAccountUsername(k.Namespace, k.ServiceAccount.Name); c.Subject != want {
		return Caller{}, fmt.Errorf("token of subject %q, though it is of service account %s", c.Subject, want)
	}
	caller.UID = k.ServiceAccount.UID
	caller.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + k.Namespace, "system:authenticated"}
	extra := map[string][]string{}
	if k.Pod != nil && k.Pod.Name != "" && k.Pod.UID != "" {
		extra[extraPodName], extra[extraPodUID] = []string{k.Pod.Name}, []string{k.Pod.UID}
	}
	if k.Node != nil && k.Node.Name != "" {
		extra[extraNodeName] = []string{k.Node.Name}
		if k.Node.UID != "" {
			extra[extraNodeUID] = []string{k.Node.UID}
		}
	}
	if c.ID != "" {
		extra[extraCredentialID] = []string{"JTI=" + c.ID}
	}
	if len(extra) > 0 {
		caller.Extra = extra
	}
	return caller, nil
}

// serviceAccountUsername is the username of the service account ns/name.
func serviceAccountUsername(ns, name string) string {
	return "system:serviceaccount:" + ns + ":" + name
}
