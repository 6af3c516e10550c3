package function

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/observe"
)

// ns is podguard's namespace in these tests.
const ns = "podguard"

const testIssuerURL = "https://kubernetes.default.svc.cluster.local"

// testIssuer signs service-account tokens as the apiserver does, with an RSA key it
// publishes as a JSON Web Key Set.
type testIssuer struct {
	key *rsa.PrivateKey

	mu   sync.Mutex
	fail error // when set, fetching the keys fails
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{key: k}
}

var b64 = base64.RawURLEncoding.EncodeToString

// jwks is the issuer's key set.
func (i *testIssuer) jwks() []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": b64(i.key.N.Bytes()), "e": b64(big.NewInt(int64(i.key.E)).Bytes()),
	}}})
	return b
}

// keys serves the key set, or the failure set with failKeys.
func (i *testIssuer) keys() access.KeySource {
	return access.KeySourceFunc(func(context.Context) ([]byte, error) {
		i.mu.Lock()
		defer i.mu.Unlock()
		if i.fail != nil {
			return nil, i.fail
		}
		return i.jwks(), nil
	})
}

func (i *testIssuer) failKeys(err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.fail = err
}

// token is a token of service account namespace/sa for audience, expiring at exp.
func (i *testIssuer) token(t testing.TB, namespace, sa, audience string, exp time.Time) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b64(b)
	}
	signed := enc(map[string]any{"alg": "RS256", "kid": "k1", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": testIssuerURL, "aud": []string{audience}, "sub": events.ServiceAccountUser(namespace, sa),
		"exp": exp.Unix(), "iat": exp.Add(-time.Hour).Unix(), "nbf": exp.Add(-time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": namespace, "serviceaccount": map[string]any{"name": sa, "uid": "uid-" + sa}},
	})
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, i.key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(sig)
}

// triggerToken is a token of the Trigger that routes typ to fn, for fn's audience.
func (i *testIssuer) triggerToken(t testing.TB, fn, typ string) string {
	return i.token(t, ns, events.TriggerServiceAccount(events.TriggerName(fn, typ)), events.FunctionAudience(fn), time.Now().Add(time.Hour))
}

func (i *testIssuer) gate(t testing.TB, fn string) *DeliveryGate {
	t.Helper()
	v, err := access.NewVerifier(i.keys(), access.VerifierOptions{Issuer: testIssuerURL, Audience: events.FunctionAudience(fn)})
	if err != nil {
		t.Fatal(err)
	}
	return NewDeliveryGate(v, ns, fn)
}

func withToken(r *http.Request, token string) *http.Request {
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// noToken checks that no log entry holds token.
func noToken(t *testing.T, logs *observer.ObservedLogs, token string) {
	t.Helper()
	if token == "" {
		return
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), token) {
			t.Errorf("a log entry holds the token: %s %v", e.Message, e.ContextMap())
		}
	}
}

// TestDeliveryGate: list-pods takes a delivery only with a valid token of the Trigger that
// routes its type to it, binary or structured; the step sees nothing of what is refused.
func TestDeliveryGate(t *testing.T) {
	iss := newTestIssuer(t)
	fn := events.FnListPods
	audience := events.FunctionAudience(fn)
	hour := time.Now().Add(time.Hour)
	show := iss.triggerToken(t, fn, events.PodShow)
	showTrigger := events.TriggerServiceAccount(events.TriggerName(fn, events.PodShow))
	list := iss.triggerToken(t, fn, events.PodsList)
	okShow := `{"pod":"default:x"}`
	structured := func(typ, data string) *http.Request {
		return structuredRequest(`{"specversion":"1.0","id":"1","source":"s","type":"` + typ + `","datacontenttype":"application/json","data":` + data + `}`)
	}
	for _, c := range []struct {
		name, token string
		req         *http.Request
		status      int
		reason      string
	}{
		{"no token", "", binaryRequest(events.PodShow, okShow), 401, "no bearer token: deliveries to list-pods must carry a token of the broker's Trigger"},
		{"another scheme", "", func() *http.Request {
			r := binaryRequest(events.PodShow, okShow)
			r.Header.Set("Authorization", "Basic "+show)
			return r
		}(), 401, "no bearer token"},
		{"not a JWT", "opaque", binaryRequest(events.PodShow, okShow), 401, "malformed token"},
		{"another audience", iss.token(t, ns, showTrigger, events.FunctionAudience(events.FnChoreographer), hour),
			binaryRequest(events.PodShow, okShow), 401, `not for audience "podguard.dev/function/list-pods"`},
		{"expired", iss.token(t, ns, showTrigger, audience, time.Now().Add(-time.Hour)), binaryRequest(events.PodShow, okShow), 401, "token expired"},
		{"another issuer's key", newTestIssuer(t).triggerToken(t, fn, events.PodShow), binaryRequest(events.PodShow, okShow), 401, "bad signature"},
		{"another Trigger", list, binaryRequest(events.PodShow, okShow), 403,
			"system:serviceaccount:podguard:list-pods-pods-list-oidc-eventing.knative.dev-trigger may not deliver dev.podguard.pod.show to list-pods: " +
				"only the Trigger list-pods-pod-show (system:serviceaccount:podguard:list-pods-pod-show-oidc-eventing.knative.dev-trigger) does"},
		{"a function", iss.token(t, ns, events.ServiceAccount(events.FnChoreographer), audience, hour), binaryRequest(events.PodShow, okShow), 403,
			"system:serviceaccount:podguard:podguard-choreographer may not deliver"},
		{"the Trigger's name in another namespace", iss.token(t, "team-a", showTrigger, audience, hour), binaryRequest(events.PodShow, okShow), 403,
			"system:serviceaccount:team-a:list-pods-pod-show-oidc-eventing.knative.dev-trigger may not deliver"},
		{"another Trigger, with data the schema refuses: who before what", list, binaryRequest(events.PodShow, `{"pod":42}`), 403, "may not deliver"},
		{"another Trigger, structured", list, structured(events.PodShow, okShow), 403, "only the Trigger list-pods-pod-show"},
		{"the Trigger", show, binaryRequest(events.PodShow, okShow), 200, ""},
		{"the Trigger, structured", show, structured(events.PodShow, okShow), 200, ""},
		{"the other type's Trigger", list, binaryRequest(events.PodsList, `{"scope":{"allNamespaces":true}}`), 200, ""},
		{"the Trigger, data the schema refuses", show, binaryRequest(events.PodShow, `{"pod":42}`), 400, "/pod"},
		{"the Trigger, a type list-pods does not take", show, binaryRequest(events.VolumeBackup, `{}`), 400, "not handled by list-pods"},
	} {
		t.Run(c.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			var handled []string
			step := stepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) {
				d, ok := Deliverer(ctx)
				if !ok {
					t.Errorf("the step's context names no deliverer")
				}
				handled = append(handled, d.Username)
				return echoStep(ctx, e)
			})
			v, err := events.NewValidator()
			if err != nil {
				t.Fatal(err)
			}
			s := NewServer(fn, []string{events.PodShow, events.PodsList}, step, v, ServerOptions{Gate: iss.gate(t, fn), Logger: zap.New(core).Sugar()})
			w := httptest.NewRecorder()
			s.ServeHTTP(w, withToken(c.req, c.token))
			if w.Code != c.status || !strings.Contains(w.Body.String(), c.reason) {
				t.Fatalf("%d %q, want %d with %q", w.Code, w.Body.String(), c.status, c.reason)
			}
			if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("a 401 without WWW-Authenticate")
			}
			switch {
			case c.status < 300 && (len(handled) != 1 || !strings.HasPrefix(handled[0], "system:serviceaccount:podguard:list-pods-")):
				t.Errorf("handled as %q, want once as the Trigger", handled)
			case c.status >= 300 && len(handled) > 0:
				t.Errorf("a refused delivery was handled")
			}
			if c.status >= 400 && logs.FilterFieldKey("status").Len() == 0 {
				t.Errorf("the refusal was not logged")
			}
			noToken(t, logs, c.token)
		})
	}
}

// The dead-letter sink takes a dead letter of any type from any of podguard's Triggers,
// and from no function; a replay request only from its own Trigger.
func TestDeliveryGateDeadLetters(t *testing.T) {
	iss := newTestIssuer(t)
	fn := events.FnDeadLetters
	audience := events.FunctionAudience(fn)
	hour := time.Now().Add(time.Hour)
	handled := 0
	step := stepFunc(func(context.Context, event.Event) (*event.Event, error) { handled++; return nil, nil })
	s := NewServer(fn, []string{events.DeadLetterReplay}, step, nil, ServerOptions{Gate: iss.gate(t, fn), AcceptAny: true})
	for _, c := range []struct {
		name, token, typ string
		status           int
		reason           string
	}{
		{"a volume.backup from its Trigger", iss.token(t, ns, events.TriggerServiceAccount("back-up-volume-volume-backup"), audience, hour), events.VolumeBackup, 202, ""},
		{"a volume.backup from another Trigger", iss.token(t, ns, events.TriggerServiceAccount("choreographer-ping"), audience, hour), events.VolumeBackup, 202, ""},
		{"a type of no catalog", iss.token(t, ns, events.TriggerServiceAccount("choreographer-metadata-snapshotted"), audience, hour), "dev.example.other", 202, ""},
		{"a replay request from its Trigger", iss.triggerToken(t, fn, events.DeadLetterReplay), events.DeadLetterReplay, 202, ""},
		{"from a function", iss.token(t, ns, events.ServiceAccount(events.FnChoreographer), audience, hour), events.VolumeBackup, 403,
			"system:serviceaccount:podguard:podguard-choreographer may not deliver dev.podguard.volume.backup to dead-letters: only podguard's Triggers in podguard do"},
		{"from dead-letters itself", iss.token(t, ns, events.ServiceAccount(fn), audience, hour), events.PodsListed, 403, "may not deliver"},
		{"a replay request from another Trigger", iss.token(t, ns, events.TriggerServiceAccount("back-up-volume-volume-backup"), audience, hour), events.DeadLetterReplay, 403,
			"only the Trigger dead-letters-deadletter-replay"},
		{"for another audience", iss.token(t, ns, events.TriggerServiceAccount("back-up-volume-volume-backup"), events.FunctionAudience(events.FnBackupVolume), hour), events.VolumeBackup, 401, "not for audience"},
	} {
		before := handled
		w := httptest.NewRecorder()
		s.ServeHTTP(w, withToken(binaryRequest(c.typ, `{"anything":1}`), c.token))
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.reason) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, w.Code, w.Body.String(), c.status, c.reason)
		}
		if got := handled - before; (c.status == 202) != (got == 1) {
			t.Errorf("%s: handled %d times", c.name, got)
		}
	}
}

// Keys out of reach are no refusal: the delivery is answered 5xx, and retried.
func TestDeliveryGateKeysUnavailable(t *testing.T) {
	iss := newTestIssuer(t)
	iss.failKeys(errors.New("apiserver unavailable"))
	fn := events.FnListPods
	handled := 0
	step := stepFunc(func(ctx context.Context, e event.Event) (*event.Event, error) { handled++; return echoStep(ctx, e) })
	s := newTestServer(t, step, ServerOptions{Gate: iss.gate(t, fn)})
	token := iss.triggerToken(t, fn, events.PodShow)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), token))
	if w.Code < 500 || !strings.Contains(w.Body.String(), "apiserver unavailable") || handled != 0 {
		t.Fatalf("%d %q, handled %d: want a 5xx naming the failure, unhandled", w.Code, w.Body.String(), handled)
	}
	if strings.Contains(w.Body.String(), token) {
		t.Errorf("the answer holds the token")
	}
	// Once the keys are back, the same delivery is taken.
	iss.failKeys(nil)
	w = httptest.NewRecorder()
	s.ServeHTTP(w, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), token))
	if w.Code != 200 || handled != 1 {
		t.Fatalf("%d %q after the keys came back", w.Code, w.Body.String())
	}
}

// Refusals are counted as any answer is: 401 and 403 as 4xx, of the event's type once
// it is known.
func TestDeliveryRefusalsAreCounted(t *testing.T) {
	ctx := context.Background()
	tel, err := observe.New(ctx, "list-pods", observe.Config{MetricsProtocol: "prometheus", MetricsEndpoint: "127.0.0.1:0", TracingProtocol: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	iss := newTestIssuer(t)
	fn := events.FnListPods
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(fn, []string{events.PodShow, events.PodsList}, stepFunc(echoStep), v, ServerOptions{Gate: iss.gate(t, fn), Telemetry: tel})
	for _, token := range []string{"", iss.triggerToken(t, fn, events.PodsList), iss.triggerToken(t, fn, events.PodShow)} {
		s.ServeHTTP(httptest.NewRecorder(), withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), token))
	}
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, want := range []string{
		`podguard_events_handled_total{event_type="invalid",function="list-pods",outcome="4xx"} 1`,
		`podguard_events_handled_total{event_type="dev.podguard.pod.show",function="list-pods",outcome="4xx"} 1`,
		`podguard_events_handled_total{event_type="dev.podguard.pod.show",function="list-pods",outcome="2xx"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

// tokenFile writes token to a new file of dir, and renames it to name, as the kubelet
// replaces a projected token.
func tokenFile(t *testing.T, dir, name, token string) string {
	t.Helper()
	tmp, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.WriteString(token); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// authServer records the Authorization header of each event it receives.
func authServer(t *testing.T) (*httptest.Server, <-chan string) {
	t.Helper()
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func received(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case h := <-got:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("no event received")
		return ""
	}
}

func testEvent(id string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("s")
	e.SetType(events.PodShown)
	return e
}

func TestTokenSender(t *testing.T) {
	srv, got := authServer(t)
	dir := t.TempDir()
	path := tokenFile(t, dir, "token", "first.token.jwt\n")
	ts := NewFileTokenSource(path)
	s, err := NewTokenSender(srv.URL, ts)
	if err != nil {
		t.Fatal(err)
	}
	if s.Target() != srv.URL {
		t.Errorf("Target %q", s.Target())
	}
	ctx := context.Background()
	if err := s.Send(ctx, testEvent("1")); err != nil {
		t.Fatal(err)
	}
	if h := received(t, got); h != "Bearer first.token.jwt" {
		t.Fatalf("Authorization %q", h)
	}
	// The kubelet replaces the token: the next event carries the new one.
	tokenFile(t, dir, "token", "second.token.jwt")
	if err := s.Send(ctx, testEvent("2")); err != nil {
		t.Fatal(err)
	}
	if h := received(t, got); h != "Bearer second.token.jwt" {
		t.Fatalf("after the token was replaced, Authorization %q", h)
	}
	// The file gone: the send fails, and nothing is sent.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err = s.Send(ctx, testEvent("3"))
	if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "second.token.jwt") {
		t.Fatalf("send without the token file: %v", err)
	}
	select {
	case h := <-got:
		t.Fatalf("an event was sent without a token file, with %q", h)
	default:
	}
	// A sender without a token sends none; one with a nil source is refused.
	plain, err := NewHTTPSender(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Send(ctx, testEvent("4")); err != nil {
		t.Fatal(err)
	}
	if h := received(t, got); h != "" {
		t.Fatalf("a plain sender sent Authorization %q", h)
	}
	if _, err := NewTokenSender(srv.URL, nil); err == nil {
		t.Error("a token sender without a token source")
	}
}

// Concurrent sends each carry the token, and no sender's header is shared with another
// request.
func TestTokenSenderConcurrent(t *testing.T) {
	srv, got := authServer(t)
	s, err := NewTokenSender(srv.URL, tokenFunc(func(context.Context) (string, error) { return "tok", nil }))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(context.Background(), testEvent(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for range 8 {
		if h := received(t, got); h != "Bearer tok" {
			t.Errorf("Authorization %q", h)
		}
	}
	s, _ = NewTokenSender(srv.URL, tokenFunc(func(context.Context) (string, error) { return "", errors.New("no token yet") }))
	if err := s.Send(context.Background(), testEvent("x")); err == nil || !strings.Contains(err.Error(), "no token yet") {
		t.Errorf("send with a failing token source: %v", err)
	}
}

type tokenFunc func(ctx context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

func TestFileTokenSource(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("aaaa"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	ts := NewFileTokenSource(path)
	ts.now = func() time.Time { return now }
	if tok, err := ts.Token(ctx); err != nil || tok != "aaaa" {
		t.Fatalf("%q, %v", tok, err)
	}
	// Rewritten in place, the same size and time: taken for unchanged for a minute, then
	// read again.
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("bbbb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Second)
	if tok, _ := ts.Token(ctx); tok != "aaaa" {
		t.Fatalf("within the minute: %q, want the token read", tok)
	}
	now = now.Add(time.Second)
	if tok, _ := ts.Token(ctx); tok != "bbbb" {
		t.Fatalf("after a minute: %q, want the file's new token", tok)
	}
	// A changed modification time is a change.
	if err := os.WriteFile(path, []byte("cccc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, info.ModTime().Add(time.Second), info.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if tok, _ := ts.Token(ctx); tok != "cccc" {
		t.Fatalf("after a rewrite: %q", tok)
	}
	for _, c := range []struct{ content, want string }{
		{"", "empty"},
		{" \n\t", "empty"},
		{"tok1 tok2", "more than one token"},
		{"secret\x00", "control characters"},
		{strings.Repeat("a", maxTokenFileSize+1), "not a token"},
	} {
		tokenFile(t, dir, "token", c.content)
		_, err := ts.Token(ctx)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("file %.20q: %v, want an error saying %q", c.content, err, c.want)
		}
		if err != nil && len(strings.TrimSpace(c.content)) > 0 && strings.Contains(err.Error(), strings.Fields(c.content)[0]) {
			t.Errorf("the error holds the file's content: %v", err)
		}
	}
	if _, err := NewFileTokenSource(filepath.Join(dir, "none")).Token(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

func TestPodNamespace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "namespace")
	if got := podNamespace("", file); got != "" {
		t.Errorf("neither set nor mounted: %q", got)
	}
	if err := os.WriteFile(file, []byte("podguard-system\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := podNamespace("", file); got != "podguard-system" {
		t.Errorf("mounted: %q", got)
	}
	if got := podNamespace("team-a", file); got != "team-a" {
		t.Errorf("set and mounted: %q", got)
	}
}

func TestBaseSenderIdentityConfig(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string // in the error; "" for none
	}{
		{map[string]string{}, ""},
		{map[string]string{"AUTHENTICATION_OIDC": "disabled", "K_SINK": "http://broker"}, ""},
		{map[string]string{"AUTHENTICATION_OIDC": ""}, ""}, // set empty: as unset
		{map[string]string{"AUTHENTICATION_OIDC": "enabled"}, ""},
		{map[string]string{"AUTHENTICATION_OIDC": "enabled", "K_SINK": "http://broker", "K_SINK_TOKEN_FILE": "/var/run/podguard/token"}, ""},
		{map[string]string{"AUTHENTICATION_OIDC": "on"}, `AUTHENTICATION_OIDC: "on", want enabled or disabled`},
		{map[string]string{"AUTHENTICATION_OIDC": "Enabled"}, "AUTHENTICATION_OIDC"},
		{map[string]string{"AUTHENTICATION_OIDC": "enabled", "K_SINK": "http://broker"}, "K_SINK_TOKEN_FILE: required"},
	} {
		t.Run(fmt.Sprint(c.env), func(t *testing.T) {
			for _, k := range []string{"AUTHENTICATION_OIDC", "K_SINK", "K_SINK_TOKEN_FILE"} {
				t.Setenv(k, c.env[k])
				if _, ok := c.env[k]; !ok {
					os.Unsetenv(k)
				}
			}
			var b Base
			err := LoadConfig(&b)
			if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("%v, want an error saying %q", err, c.want)
			}
		})
	}
	t.Setenv("PORT", "0")
	t.Setenv("AUTHENTICATION_OIDC", "yes")
	err := Run(context.Background(), Function[struct{}]{Name: "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "AUTHENTICATION_OIDC") {
		t.Fatalf("Run: want an error naming AUTHENTICATION_OIDC, got %v", err)
	}
	t.Setenv("AUTHENTICATION_OIDC", "enabled")
	t.Setenv("K_SINK", "http://127.0.0.1:1")
	t.Setenv("K_SINK_TOKEN_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("METRICS_PROTOCOL", "none")
	err = Run(context.Background(), Function[struct{}]{Name: "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "K_SINK_TOKEN_FILE") {
		t.Fatalf("Run with a missing token file: want an error naming K_SINK_TOKEN_FILE, got %v", err)
	}
}

// fakeAPIServer serves the OIDC discovery of iss as the apiserver does, and a kubeconfig
// that reaches it.
func fakeAPIServer(t *testing.T, iss *testIssuer) (kubeconfig string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer": %q, "jwks_uri": "https://10.96.0.1:443/openid/v1/jwks"}`, testIssuerURL)
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, _ *http.Request) { w.Write(iss.jwks()) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: apiserver-credential}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// runFunction runs f as its main does with env, and returns its address; it stops when
// the test ends.
func runFunction[C any](t *testing.T, f Function[C], env map[string]string) string {
	t.Helper()
	for k, v := range map[string]string{"PORT": "0", "BIND_HOST": "127.0.0.1", "METRICS_PROTOCOL": "none", "TRACING_PROTOCOL": "none"} {
		t.Setenv(k, v)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, f, ready) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("the function did not stop")
		}
	})
	select {
	case a := <-ready:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the function did not start")
	}
	return ""
}

func post(t *testing.T, url string, r *http.Request) (int, string) {
	t.Helper()
	out, err := http.NewRequest(http.MethodPost, url, r.Body)
	if err != nil {
		t.Fatal(err)
	}
	out.Header = r.Header
	res, err := http.DefaultClient.Do(out)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// With AUTHENTICATION_OIDC=enabled, Run verifies deliveries against the apiserver's keys
// and sends to K_SINK with the token file's token.
func TestRunWithSenderIdentity(t *testing.T) {
	iss := newTestIssuer(t)
	sink, got := authServer(t)
	tokens := t.TempDir()
	tokenFile(t, tokens, "token", "function-token")
	fn := events.FnListPods
	url := runFunction(t, Function[struct{}]{Name: fn, Accepts: []string{events.PodShow},
		New: func(context.Context, *struct{}, Env) (Handler, error) { return stepFunc(echoStep), nil },
	}, map[string]string{
		"AUTHENTICATION_OIDC": "enabled", "K_SINK": sink.URL, "K_SINK_TOKEN_FILE": filepath.Join(tokens, "token"),
		"POD_NAMESPACE": ns, "KUBECONFIG": fakeAPIServer(t, iss),
	})
	if status, body := post(t, url, binaryRequest(events.PodShow, `{"pod":"default:x"}`)); status != 401 {
		t.Fatalf("without a token: %d %q", status, body)
	}
	if status, body := post(t, url, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), iss.triggerToken(t, fn, events.PodsList))); status != 403 {
		t.Fatalf("from another Trigger: %d %q", status, body)
	}
	if status, body := post(t, url, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), iss.triggerToken(t, fn, events.PodShow))); status != 202 {
		t.Fatalf("from the Trigger: %d %q", status, body)
	}
	if h := received(t, got); h != "Bearer function-token" {
		t.Fatalf("the reply went to the sink with Authorization %q", h)
	}
}

// gatedStep is a step that is its own Gate, as the front door is.
type gatedStep struct{ stepFunc }

func (gatedStep) Admit(ctx context.Context, r *http.Request) (context.Context, error) {
	if r.Header.Get("Authorization") != "Bearer person" {
		return nil, Unauthenticated(errors.New("not a person"))
	}
	return ctx, nil
}

// A step that is its own Gate keeps it with sender identity on, and needs neither the
// apiserver nor podguard's namespace for it; its sends still carry its token.
func TestRunWithSenderIdentityKeepsTheStepsGate(t *testing.T) {
	sink, got := authServer(t)
	tokens := t.TempDir()
	tokenFile(t, tokens, "token", "front-door-token")
	url := runFunction(t, Function[struct{}]{Name: events.FnFrontDoor, Accepts: []string{events.PodShow},
		New: func(_ context.Context, _ *struct{}, env Env) (Handler, error) {
			return gatedStep{func(ctx context.Context, e event.Event) (*event.Event, error) {
				return nil, env.Sink.Send(ctx, e)
			}}, nil
		},
		AnswerCallers: true,
	}, map[string]string{
		"AUTHENTICATION_OIDC": "enabled", "K_SINK": sink.URL, "K_SINK_TOKEN_FILE": filepath.Join(tokens, "token"),
		"POD_NAMESPACE": "", "KUBECONFIG": filepath.Join(tokens, "no-kubeconfig"),
	})
	if status, body := post(t, url, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), "not-a-person")); status != 401 || !strings.Contains(body, "not a person") {
		t.Fatalf("refused by the step's gate: %d %q", status, body)
	}
	if status, body := post(t, url, withToken(binaryRequest(events.PodShow, `{"pod":"default:x"}`), "person")); status != 202 {
		t.Fatalf("admitted by the step's gate: %d %q", status, body)
	}
	if h := received(t, got); h != "Bearer front-door-token" {
		t.Fatalf("forwarded with Authorization %q", h)
	}
}

// Disabled (the default), deliveries carry no token and sends present none: as before.
func TestRunWithoutSenderIdentity(t *testing.T) {
	sink, got := authServer(t)
	url := runFunction(t, Function[struct{}]{Name: events.FnListPods, Accepts: []string{events.PodShow},
		New: func(context.Context, *struct{}, Env) (Handler, error) { return stepFunc(echoStep), nil },
	}, map[string]string{"AUTHENTICATION_OIDC": "", "K_SINK": sink.URL, "KUBECONFIG": "/nonexistent"})
	if status, body := post(t, url, binaryRequest(events.PodShow, `{"pod":"default:x"}`)); status != 202 {
		t.Fatalf("%d %q", status, body)
	}
	if h := received(t, got); h != "" {
		t.Fatalf("sent with Authorization %q", h)
	}
}
