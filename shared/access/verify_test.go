package access_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podguard/podguard/shared/access"
)

const (
	issuer   = "https://kubernetes.default.svc.cluster.local"
	function = "podguard-verify"
)

// signingKey is a key pair of the test issuer, named kid, signing with alg.
type signingKey struct {
	kid string
	alg string
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func rsaKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: "RS256", rsa: k}
}

func ecKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: "ES256", ec: k}
}

var b64 = base64.RawURLEncoding.EncodeToString

// jwk is the public key of k as a JSON Web Key.
func (k signingKey) jwk() map[string]any {
	if k.rsa != nil {
		return map[string]any{"kty": "RSA", "kid": k.kid, "alg": "RS256", "use": "sig",
			"n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())}
	}
	pub, err := k.ec.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": k.kid, "crv": "P-256", "x": b64(pub[1:33]), "y": b64(pub[33:])}
}

// jwks is the key set of keys, with more JSON Web Keys as they are.
func jwks(keys []signingKey, more ...map[string]any) []byte {
	var l []map[string]any
	for _, k := range keys {
		l = append(l, k.jwk())
	}
	b, err := json.Marshal(map[string]any{"keys": append(l, more...)})
	if err != nil {
		panic(err)
	}
	return b
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b64(b)
}

// sign is a token of claims signed by k, with the header {"alg", "kid"} and the
// changes of header (a nil value removes a field).
func (k signingKey) sign(t *testing.T, claims map[string]any, header map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": k.alg, "kid": k.kid, "typ": "JWT"}
	for name, v := range header {
		if v == nil {
			delete(h, name)
		} else {
			h[name] = v
		}
	}
	signed := encode(h) + "." + encode(claims)
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	var err error
	switch {
	case k.rsa != nil:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, digest[:])
	default:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k.ec, digest[:])
		if err == nil {
			sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(sig)
}

// serviceAccountClaims are the claims of a token the apiserver issues to the service
// account team-a/trigger, bound to a pod, valid from now for 10 minutes.
func serviceAccountClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": issuer,
		"aud": []string{function, "other"},
		"sub": "system:serviceaccount:team-a:trigger",
		"exp": now.Add(10 * time.Minute).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"jti": "0c6e2b4a-5f0e-4a4e-9d6c-3f9e1f2b7a10",
		"kubernetes.io": map[string]any{
			"namespace":      "team-a",
			"serviceaccount": map[string]any{"name": "trigger", "uid": "5d2b3f2e-sa"},
			"pod":            map[string]any{"name": "trigger-7f9c", "uid": "a1b2c3-pod"},
			"node":           map[string]any{"name": "kwok-node-0", "uid": "n0-uid"},
		},
	}
}

// with is claims with the changes of changes (a nil value removes a claim).
func with(claims map[string]any, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range claims {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// keySource serves a settable key set, or an error, and counts its fetches.
type keySource struct {
	mu      sync.Mutex
	set     []byte
	err     error
	fetches int
}

func (s *keySource) Keys(context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches++
	return s.set, s.err
}

func (s *keySource) serve(set []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set, s.err = set, err
}

func (s *keySource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

func newVerifier(t *testing.T, src access.KeySource, now func() time.Time) *access.Verifier {
	t.Helper()
	v, err := access.NewVerifier(src, access.VerifierOptions{Issuer: issuer, Audience: function, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// refused checks that err refuses a token with a reason containing want.
func refused(t *testing.T, what string, err error, want string) {
	t.Helper()
	if !errors.Is(err, access.ErrUnauthenticated) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v, want a refusal saying %q", what, err, want)
	}
}

func TestVerify(t *testing.T) {
	clk := newClock()
	rs, es := rsaKey(t, "rs"), ecKey(t, "es")
	src := &keySource{set: jwks([]signingKey{rs, es})}
	v := newVerifier(t, src, clk.now)
	ctx := context.Background()

	want := access.Caller{
		Username: "system:serviceaccount:team-a:trigger",
		UID:      "5d2b3f2e-sa",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"},
		Extra: map[string][]string{
			"authentication.kubernetes.io/pod-name":      {"trigger-7f9c"},
			"authentication.kubernetes.io/pod-uid":       {"a1b2c3-pod"},
			"authentication.kubernetes.io/node-name":     {"kwok-node-0"},
			"authentication.kubernetes.io/node-uid":      {"n0-uid"},
			"authentication.kubernetes.io/credential-id": {"JTI=0c6e2b4a-5f0e-4a4e-9d6c-3f9e1f2b7a10"},
		},
	}
	claims := serviceAccountClaims(clk.now())
	for _, k := range []signingKey{rs, es} {
		c, err := v.Verify(ctx, k.sign(t, claims, nil))
		if err != nil {
			t.Fatalf("%s: %v", k.alg, err)
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("%s: caller %+v, want %+v", k.alg, c, want)
		}
	}

	// One audience as a string; a token without service account claims.
	c, err := v.Verify(ctx, rs.sign(t, map[string]any{
		"iss": issuer, "aud": function, "sub": "someone", "exp": clk.now().Add(time.Minute).Unix(),
	}, nil))
	if err != nil || !reflect.DeepEqual(c, access.Caller{Username: "someone"}) {
		t.Errorf("token with aud as a string, of no service account: %+v, %v", c, err)
	}
	// Fractional times; a pod without its UID, which the apiserver does not report.
	c, err = v.Verify(ctx, es.sign(t, with(claims, map[string]any{
		"exp": float64(clk.now().Unix()) + 0.5, "jti": nil,
		"kubernetes.io": map[string]any{"namespace": "team-a", "serviceaccount": map[string]any{"name": "trigger"}, "pod": map[string]any{"name": "p"}},
	}), nil))
	if err != nil || c.UID != "" || c.Extra != nil || len(c.Groups) != 3 {
		t.Errorf("token of a service account with fewer claims: %+v, %v", c, err)
	}
	if n := src.count(); n != 1 {
		t.Errorf("%d fetches of the key set, want 1", n)
	}
}

func TestVerifyRefuses(t *testing.T) {
	clk := newClock()
	rs, es := rsaKey(t, "rs"), ecKey(t, "es")
	v := newVerifier(t, &keySource{set: jwks([]signingKey{rs, es})}, clk.now)
	now := clk.now()
	claims := serviceAccountClaims(now)
	good := rs.sign(t, claims, nil)
	parts := strings.Split(good, ".")

	// An HS256 token keyed with the RSA public key, as in the confusion of algorithms.
	pub, err := x509.MarshalPKIXPublicKey(&rs.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hs := encode(map[string]any{"alg": "HS256", "kid": "rs"}) + "." + parts[1]
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(hs))
	hs += "." + b64(mac.Sum(nil))

	tampered := encode(with(claims, map[string]any{"sub": "system:serviceaccount:kube-system:admin",
		"kubernetes.io": map[string]any{"namespace": "kube-system", "serviceaccount": map[string]any{"name": "admin"}}}))

	for _, tc := range []struct {
		name, token, want string
	}{
		{"wrong audience", rs.sign(t, with(claims, map[string]any{"aud": []string{"other"}}), nil), `not for audience "podguard-verify"`},
		{"wrong audience as a string", rs.sign(t, with(claims, map[string]any{"aud": "podguard"}), nil), `not for audience "podguard-verify"`},
		{"no audience", rs.sign(t, with(claims, map[string]any{"aud": nil}), nil), `not for audience`},
		{"wrong issuer", rs.sign(t, with(claims, map[string]any{"iss": "https://elsewhere"}), nil), `token of issuer "https://elsewhere"`},
		{"expired beyond the leeway", rs.sign(t, with(claims, map[string]any{"exp": now.Add(-31 * time.Second).Unix()}), nil),
			"token expired at " + now.Add(-31*time.Second).Format(time.RFC3339)},
		{"not valid yet", rs.sign(t, with(claims, map[string]any{"nbf": now.Add(time.Minute).Unix()}), nil),
			"token not valid before " + now.Add(time.Minute).Format(time.RFC3339)},
		{"issued in the future", rs.sign(t, with(claims, map[string]any{"iat": now.Add(time.Minute).Unix()}), nil), "token issued in the future"},
		{"no expiry", rs.sign(t, with(claims, map[string]any{"exp": nil}), nil), "token without an expiry"},
		{"expiry not a number", rs.sign(t, with(claims, map[string]any{"exp": "soon"}), nil), "malformed token"},
		{"no subject", rs.sign(t, with(claims, map[string]any{"sub": nil, "kubernetes.io": nil}), nil), "token without a subject"},
		{"subject of another service account", rs.sign(t, with(claims, map[string]any{"sub": "system:serviceaccount:team-b:trigger"}), nil),
			"though it is of service account system:serviceaccount:team-a:trigger"},
		{"alg none", encode(map[string]any{"alg": "none"}) + "." + parts[1] + ".", `unsupported algorithm "none"`},
		{"HS256", hs, `unsupported algorithm "HS256"`},
		{"no alg", encode(map[string]any{"kid": "rs"}) + "." + parts[1] + "." + parts[2], `unsupported algorithm ""`},
		{"critical extension", rs.sign(t, claims, map[string]any{"crit": []string{"b64"}, "b64": false}), "critical header extensions"},
		{"tampered payload", parts[0] + "." + tampered + "." + parts[2], `bad signature: key "rs" does not verify the token`},
		{"signature of another key", rs.sign(t, claims, map[string]any{"kid": "es", "alg": "RS256"}), `key "es", which is not a key for RS256`},
		{"ES256 signature cut", func() string {
			p := strings.Split(es.sign(t, claims, nil), ".")
			sig, _ := base64.RawURLEncoding.DecodeString(p[2])
			return p[0] + "." + p[1] + "." + b64(sig[:63])
		}(), `bad signature: key "es"`},
		{"2 parts", parts[0] + "." + parts[1], "malformed token: 2 parts separated by dots, not 3"},
		{"bad base64 in the payload", parts[0] + ".e30*." + parts[2], "malformed token: its payload is not base64url"},
		{"bad base64 in the signature", parts[0] + "." + parts[1] + ".!!", "malformed token: its signature is not base64url"},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], "malformed token: its header is not base64url"},
		{"header not JSON", b64([]byte("RS256")) + "." + parts[1] + "." + parts[2], "malformed token: its header is not a JSON object"},
		{"no token", "", "no bearer token"},
		{"too long", strings.Repeat("a", 17<<10), "malformed token: 17408 bytes"},
	} {
		_, err := v.Verify(context.Background(), tc.token)
		refused(t, tc.name, err, tc.want)
	}

	// Within the leeway of 30s.
	for _, changes := range []map[string]any{
		{"exp": now.Add(-29 * time.Second).Unix()},
		{"nbf": now.Add(29 * time.Second).Unix(), "iat": now.Add(29 * time.Second).Unix()},
	} {
		if _, err := v.Verify(context.Background(), es.sign(t, with(claims, changes), nil)); err != nil {
			t.Errorf("token with %v: %v", changes, err)
		}
	}
}

func TestVerifyFetchesNewKeysOnceInARefresh(t *testing.T) {
	clk := newClock()
	old, next := rsaKey(t, "old"), ecKey(t, "next")
	src := &keySource{set: jwks([]signingKey{old})}
	v := newVerifier(t, src, clk.now)
	ctx := context.Background()
	claims := serviceAccountClaims(clk.now())

	if _, err := v.Verify(ctx, old.sign(t, claims, nil)); err != nil {
		t.Fatal(err)
	}
	// The issuer adds a key: a token it signs is verified after one fetch more.
	src.serve(jwks([]signingKey{old, next}), nil)
	if _, err := v.Verify(ctx, next.sign(t, claims, nil)); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if n := src.count(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Another unknown key within Refresh: refused without a fetch.
	stranger := ecKey(t, "stranger")
	clk.advance(59 * time.Second)
	_, err := v.Verify(ctx, stranger.sign(t, claims, nil))
	refused(t, "token of an unknown key within Refresh", err, `token signed by the unknown key id "stranger"`)
	if n := src.count(); n != 2 {
		t.Fatalf("%d fetches, want still 2", n)
	}
	// Known keys need none.
	for _, k := range []signingKey{old, next} {
		if _, err := v.Verify(ctx, k.sign(t, claims, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// After Refresh, an unknown key is looked for again, once.
	clk.advance(time.Second)
	_, err = v.Verify(ctx, stranger.sign(t, claims, nil))
	refused(t, "token of an unknown key after Refresh", err, `unknown key id "stranger"`)
	_, err = v.Verify(ctx, stranger.sign(t, claims, nil))
	refused(t, "token of an unknown key again", err, `unknown key id "stranger"`)
	if n := src.count(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
	// The issuer removes the old key: it is gone at the next fetch.
	src.serve(jwks([]signingKey{next}), nil)
	clk.advance(time.Minute)
	if _, err := v.Verify(ctx, stranger.sign(t, claims, nil)); !errors.Is(err, access.ErrUnauthenticated) {
		t.Fatal(err)
	}
	_, err = v.Verify(ctx, old.sign(t, claims, nil))
	refused(t, "token of a removed key", err, `unknown key id "old"`)
}

func TestVerifyWithoutKeyID(t *testing.T) {
	clk := newClock()
	rs, es, rs2 := rsaKey(t, ""), ecKey(t, "es"), rsaKey(t, "rs2")
	src := &keySource{set: jwks([]signingKey{es, rs2, rs})}
	v := newVerifier(t, src, clk.now)
	claims := serviceAccountClaims(clk.now())
	for _, k := range []signingKey{rs, es, rs2} {
		if _, err := v.Verify(context.Background(), k.sign(t, claims, map[string]any{"kid": nil})); err != nil {
			t.Errorf("%s without a key id: %v", k.alg, err)
		}
	}
	// No key verifies: the set is fetched again, in case the issuer has a new one.
	other := rsaKey(t, "")
	_, err := v.Verify(context.Background(), other.sign(t, claims, map[string]any{"kid": nil}))
	refused(t, "token of another key, without a key id", err, "bad signature: no RS256 key of the issuer verifies the token")
	if n := src.count(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

func TestVerifyKeySourceFailure(t *testing.T) {
	clk := newClock()
	rs, next := rsaKey(t, "rs"), ecKey(t, "next")
	down := errors.New("apiserver unavailable")
	src := &keySource{err: down}
	v := newVerifier(t, src, clk.now)
	ctx := context.Background()
	claims := serviceAccountClaims(clk.now())

	for range 2 { // with no keys yet, each token fetches them
		_, err := v.Verify(ctx, rs.sign(t, claims, nil))
		if err == nil || errors.Is(err, access.ErrUnauthenticated) || !errors.Is(err, down) {
			t.Fatalf("key source failing: %v, want its error, not a refusal", err)
		}
	}
	src.serve([]byte(`{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}`), nil)
	_, err := v.Verify(ctx, rs.sign(t, claims, nil))
	if err == nil || errors.Is(err, access.ErrUnauthenticated) || !strings.Contains(err.Error(), "no usable key") {
		t.Fatalf("key set without a usable key: %v", err)
	}
	src.serve([]byte(`<html>`), nil)
	if _, err := v.Verify(ctx, rs.sign(t, claims, nil)); err == nil || errors.Is(err, access.ErrUnauthenticated) {
		t.Fatalf("key set not JSON: %v", err)
	}
	src.serve(jwks([]signingKey{rs}), nil)
	if _, err := v.Verify(ctx, rs.sign(t, claims, nil)); err != nil {
		t.Fatal(err)
	}

	// A failure to fetch a new key is not a refusal either, for Refresh, without
	// fetching again.
	src.serve(nil, down)
	clk.advance(time.Minute)
	for range 2 {
		_, err = v.Verify(ctx, next.sign(t, claims, nil))
		if !errors.Is(err, down) || errors.Is(err, access.ErrUnauthenticated) {
			t.Fatalf("key source failing on a new key: %v", err)
		}
	}
	if n := src.count(); n != 6 {
		t.Fatalf("%d fetches, want 6", n)
	}
	if _, err := v.Verify(ctx, rs.sign(t, claims, nil)); err != nil {
		t.Fatalf("token of a known key, the key source failing: %v", err)
	}
	src.serve(jwks([]signingKey{rs, next}), nil)
	clk.advance(time.Minute)
	if _, err := v.Verify(ctx, next.sign(t, claims, nil)); err != nil {
		t.Fatal(err)
	}
}

// blockingSource serves set once release is closed, telling started of each fetch.
type blockingSource struct {
	keySource
	started chan struct{}
	release chan struct{}
}

func (s *blockingSource) Keys(ctx context.Context) ([]byte, error) {
	s.started <- struct{}{}
	<-s.release
	return s.keySource.Keys(ctx)
}

func TestVerifyCollapsesConcurrentFetches(t *testing.T) {
	clk := newClock()
	rs := rsaKey(t, "rs")
	src := &blockingSource{keySource: keySource{set: jwks([]signingKey{rs})}, started: make(chan struct{}, 10), release: make(chan struct{})}
	v := newVerifier(t, src, clk.now)
	token := rs.sign(t, serviceAccountClaims(clk.now()), nil)

	errs := make(chan error)
	for range 8 {
		go func() {
			_, err := v.Verify(context.Background(), token)
			errs <- err
		}()
	}
	select {
	case <-src.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no fetch")
	}
	close(src.release)
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := src.count(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}

	// A caller that gives up while waiting for the fetch is told so.
	src2 := &blockingSource{keySource: keySource{set: jwks([]signingKey{rs})}, started: make(chan struct{}, 1), release: make(chan struct{})}
	v = newVerifier(t, src2, clk.now)
	go func() {
		_, err := v.Verify(context.Background(), token)
		errs <- err
	}()
	<-src2.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Verify(ctx, token); !errors.Is(err, context.Canceled) || errors.Is(err, access.ErrUnauthenticated) {
		t.Errorf("waiting with an ended context: %v", err)
	}
	close(src2.release)
	if err := <-errs; err != nil {
		t.Error(err)
	}
}

func TestVerifyRefetchesAfterACallerGaveUp(t *testing.T) {
	clk := newClock()
	rs := rsaKey(t, "rs")
	src := &keySource{set: jwks([]signingKey{rs})}
	ctx, cancel := context.WithCancel(context.Background())
	v := newVerifier(t, access.KeySourceFunc(func(fctx context.Context) ([]byte, error) {
		if fctx == ctx {
			cancel() // the caller gives up during the fetch
			return nil, fctx.Err()
		}
		return src.Keys(fctx)
	}), clk.now)
	token := rs.sign(t, serviceAccountClaims(clk.now()), nil)
	if _, err := v.Verify(ctx, token); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context: %v", err)
	}
	if _, err := v.Verify(context.Background(), token); err != nil {
		t.Fatalf("after a caller gave up: %v", err)
	}
}

func TestVerifySkipsKeysItCannotUse(t *testing.T) {
	clk := newClock()
	rs := rsaKey(t, "rs")
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384pub, err := p384.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	set := jwks([]signingKey{rs},
		map[string]any{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
		map[string]any{"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64(p384pub[1:49]), "y": b64(p384pub[49:])},
		map[string]any{"kty": "EC", "kid": "off", "crv": "P-256", "x": b64(make([]byte, 32)), "y": b64(make([]byte, 32))},
		map[string]any{"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(rs.rsa.N.Bytes()), "e": "AQAB"},
		map[string]any{"kty": "RSA", "kid": "even", "n": b64(rs.rsa.N.Bytes()), "e": "AQAA"},
		map[string]any{"kty": "RSA", "kid": "ps", "alg": "PS256", "n": b64(rs.rsa.N.Bytes()), "e": "AQAB"},
	)
	v := newVerifier(t, &keySource{set: set}, clk.now)
	claims := serviceAccountClaims(clk.now())
	if _, err := v.Verify(context.Background(), rs.sign(t, claims, nil)); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), rs.sign(t, claims, map[string]any{"kid": "enc"}))
	refused(t, "token of a key for encryption", err, `unknown key id "enc"`)
}

func TestNewVerifier(t *testing.T) {
	src := &keySource{}
	for _, o := range []access.VerifierOptions{
		{Audience: function},
		{Issuer: issuer},
		{Issuer: issuer, Audience: function, Leeway: -time.Second},
	} {
		if _, err := access.NewVerifier(src, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := access.NewVerifier(nil, access.VerifierOptions{Issuer: issuer, Audience: function}); err == nil {
		t.Error("no key source accepted")
	}
}

// issuerServer serves a discovery document and a key set as the apiserver does, at
// prefix, its jwks_uri naming the in-cluster host; requests counts requests by path.
func issuerServer(t *testing.T, prefix string, set []byte) (*httptest.Server, func(path string) int) {
	t.Helper()
	var mu sync.Mutex
	requests := map[string]int{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer": %q, "jwks_uri": "https://10.96.0.1:443/openid/v1/jwks", "response_types_supported": ["id_token"]}`, issuer)
	})
	mux.HandleFunc("GET "+prefix+"/openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(set)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests[r.URL.Path]++
		mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return requests[path]
	}
}

func TestDiscoveryKeys(t *testing.T) {
	rs := rsaKey(t, "rs")
	for _, prefix := range []string{"", "/k8s/clusters/c-1"} {
		srv, requests := issuerServer(t, prefix, jwks([]signingKey{rs}))
		set, err := access.DiscoveryKeys(srv.Client(), srv.URL+prefix+"/").Keys(context.Background())
		if err != nil {
			t.Fatalf("prefix %q: %v", prefix, err)
		}
		if string(set) != string(jwks([]signingKey{rs})) {
			t.Errorf("prefix %q: key set %s", prefix, set)
		}
		if requests(prefix+"/.well-known/openid-configuration") != 1 || requests(prefix+"/openid/v1/jwks") != 1 {
			t.Errorf("prefix %q: not one request of each document", prefix)
		}
	}

	srv, _ := issuerServer(t, "", nil)
	_, err := access.DiscoveryKeys(srv.Client(), srv.URL+"/elsewhere").Keys(context.Background())
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("no discovery document: %v", err)
	}
	v := newVerifier(t, access.DiscoveryKeys(srv.Client(), srv.URL+"/elsewhere"), time.Now)
	if _, err := v.Verify(context.Background(), rs.sign(t, serviceAccountClaims(time.Now()), nil)); err == nil || errors.Is(err, access.ErrUnauthenticated) {
		t.Errorf("verify with no discovery document: %v, want a failure, not a refusal", err)
	}
}
