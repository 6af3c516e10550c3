package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
)

// verifier verifies the tokens it maps to subjects and refuses any other; the token
// keysUnreachable cannot be verified at all, as when the issuer's keys are out of reach.
type verifier map[string]string

const keysUnreachable = "keys-unreachable"

func (v verifier) Verify(_ context.Context, token string) (access.Caller, error) {
	if token == keysUnreachable {
		return access.Caller{}, errors.New("fetch the issuer's keys: connection refused")
	}
	sub, ok := v[token]
	if !ok {
		return access.Caller{}, fmt.Errorf("%w: token not issued by the cluster", access.ErrUnauthenticated)
	}
	return access.Caller{Username: sub}, nil
}

// The senders of these tests, by token.
var senders = verifier{
	"choreographer":  events.ServiceAccountUser(localNamespace, events.ServiceAccount(events.FnChoreographer)),
	"back-up-volume": events.ServiceAccountUser(localNamespace, events.ServiceAccount(events.FnBackupVolume)),
	"stranger":       events.ServiceAccountUser(localNamespace, "podguard-nobody"),
	"operator":       "system:serviceaccount:ops:operator",
	"prefixed":       events.ServiceAccountUser(localNamespace, events.FnBackupVolume+"-anything"), // from-replies' trailing *
	"elsewhere":      events.ServiceAccountUser("elsewhere", events.ServiceAccount(events.FnChoreographer)),
	"alice":          "alice",
}

// tokenSource gives the token fakeToken names, and fails its first fail calls.
type tokenSource struct {
	mu    sync.Mutex
	fail  int
	asked []string
}

func fakeToken(serviceAccount, audience string) string {
	return "token-of:" + serviceAccount + "@" + audience
}

func (s *tokenSource) Token(_ context.Context, serviceAccount, audience string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, serviceAccount+"@"+audience)
	if s.fail > 0 {
		s.fail--
		return "", errors.New("the apiserver is not answering")
	}
	return fakeToken(serviceAccount, audience), nil
}

func loadTestPolicies(t *testing.T) []Policy {
	t.Helper()
	p, err := LoadPolicies(identityDir, localNamespace)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func identity(policies []Policy, tokens TokenSource) *Identity {
	return &Identity{Namespace: localNamespace, Policies: policies, Verifier: senders, Tokens: tokens}
}

// post is a binary-mode request of an event of typ from source, with token (none when
// empty).
func post(id, typ, source, token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"a":1}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("ce-specversion", "1.0")
	r.Header.Set("ce-id", id)
	r.Header.Set("ce-source", source)
	r.Header.Set("ce-type", typ)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// everything is a Trigger that routes every event to fn.
func everything(fn string) Trigger {
	return Trigger{Name: "everything", Filter: map[string]string{}, Subscriber: Destination{Ref: fn}}
}

// ingressCase is one request to the ingress and the answer it must get.
type ingressCase struct {
	name     string
	req      *http.Request
	want     int
	wantBody string
}

// checkIngress sends each case to b's ingress and then checks that exactly the accepted
// ones reached s, and that nothing was dead-lettered.
func checkIngress(t *testing.T, b *Broker, s *sub, cases []ingressCase) {
	t.Helper()
	var accepted []string
	for _, tc := range cases {
		w := httptest.NewRecorder()
		b.ServeHTTP(w, tc.req)
		if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.wantBody) {
			t.Errorf("%s: answered %d %q, want %d with %q", tc.name, w.Code, w.Body, tc.want, tc.wantBody)
		}
		if tc.want == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s: 401 without WWW-Authenticate: Bearer", tc.name)
		}
		if tc.want == http.StatusAccepted {
			accepted = append(accepted, tc.req.Header.Get("ce-id"))
		}
	}
	closeBroker(t, b)
	var got []string
	for range s.calls.Load() {
		got = append(got, s.next(t).ID())
	}
	slices.Sort(got)
	slices.Sort(accepted)
	if !slices.Equal(got, accepted) {
		t.Errorf("delivered %v, want the accepted %v", got, accepted)
	}
	if st := b.Stats(); st.Ingested != uint64(len(accepted)) || st.DeadLettered != 0 {
		t.Errorf("stats %+v, want %d ingested and no dead letter", st, len(accepted))
	}
	if d := b.Recorder().DeadLetters(); len(d) != 0 {
		t.Errorf("refused events were dead-lettered: %+v", d)
	}
}

func TestIngressIdentity(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	b, _ := start(t, []Trigger{everything("fn")}, map[string]string{"fn": s.URL}, nil,
		Options{Identity: identity(loadTestPolicies(t), &tokenSource{})})
	basic := post("basic", events.VolumeBackup, "test", "")
	basic.Header.Set("Authorization", "Basic Y2hvcmVvZ3JhcGhlcg==")
	garbage := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello"))
	garbageWithToken := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("hello"))
	garbageWithToken.Header.Set("Authorization", "Bearer choreographer")
	checkIngress(t, b, s, []ingressCase{
		{"no token", post("no-token", events.VolumeBackup, "test", ""), 401, "no bearer token"},
		{"basic auth", basic, 401, "no bearer token"},
		{"unknown token", post("unknown", events.VolumeBackup, "test", "forged"), 401, "token not issued by the cluster"},
		{"keys out of reach", post("no-keys", events.VolumeBackup, "test", keysUnreachable), 503, "connection refused"},
		{"no token and not an event", garbage, 401, "no bearer token"},
		{"token and not an event", garbageWithToken, 400, "not a CloudEvent"},
		{"allowed type", post("backup", events.VolumeBackup, "test", "choreographer"), 202, ""},
		{"other allowed type", post("snapshot", events.MetadataSnapshot, "test", "choreographer"), 202, ""},
		// zz-choreographer-any-type would admit it, but only the first policy naming the
		// sender is asked.
		{"type its policy does not list", post("backedup-by-choreographer", events.VolumeBackedUp, "test", "choreographer"), 403, `"from-choreographer"`},
		{"allowed by every filter", post("backedup", events.VolumeBackedUp, "test", "back-up-volume"), 202, ""},
		{"refused by a not filter", post("untrusted", events.VolumeBackedUp, "/untrusted/x", "back-up-volume"), 403, `"from-back-up-volume"`},
		{"subject of no policy", post("stranger", events.VolumeBackup, "test", "stranger"), 403, "no EventPolicy of the broker admits"},
		{"same subject in another namespace", post("elsewhere", events.VolumeBackup, "test", "elsewhere"), 403, "no EventPolicy of the broker admits"},
		{"policy without filters", post("operator", "dev.example.anything", "test", "operator"), 202, ""},
		{"trailing-* subject", post("prefixed", events.VolumeBackedUp, "test", "prefixed"), 202, ""},
		{"trailing-* subject, type refused", post("prefixed-backup", events.VolumeBackup, "test", "prefixed"), 403, `"from-replies"`},
	})
}

// TestIngressDefaultSameNamespace: with no EventPolicy, Knative's allow-same-namespace.
func TestIngressDefaultSameNamespace(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	b, _ := start(t, []Trigger{everything("fn")}, map[string]string{"fn": s.URL}, nil, Options{Identity: identity(nil, nil)})
	checkIngress(t, b, s, []ingressCase{
		{"service account of the namespace", post("same", "dev.example.any", "test", "stranger"), 202, ""},
		{"service account of another namespace", post("elsewhere", "dev.example.any", "test", "elsewhere"), 403, "allow-same-namespace"},
		{"not a service account", post("alice", "dev.example.any", "test", "alice"), 403, `"alice"`},
		{"no token", post("none", "dev.example.any", "test", ""), 401, "no bearer token"},
	})
}

func TestSendAs(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	b, _ := start(t, []Trigger{everything("fn")}, map[string]string{"fn": s.URL}, nil,
		Options{Identity: identity(loadTestPolicies(t), &tokenSource{})})
	ctx := context.Background()
	for _, tc := range []struct {
		name, typ, token string
		want             int // 0: accepted
		wantText         string
	}{
		{"no token", events.VolumeBackup, "", 401, "401 Unauthorized: no bearer token"},
		{"unknown token", events.VolumeBackup, "forged", 401, "401 Unauthorized: unauthenticated: token not issued by the cluster"},
		{"type not allowed", events.VolumeBackedUp, "choreographer", 403, `403 Forbidden: EventPolicy "from-choreographer" admits`},
		{"subject of no policy", events.VolumeBackup, "stranger", 403, "403 Forbidden: no EventPolicy of the broker admits"},
		{"allowed", events.VolumeBackup, "choreographer", 0, ""},
	} {
		err := b.SendAs(ctx, newEvent(tc.name, tc.typ), tc.token)
		var refused *RefusedError
		switch {
		case tc.want == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == 0:
		case !errors.As(err, &refused) || refused.Status != tc.want || !strings.Contains(err.Error(), tc.wantText):
			t.Errorf("%s: error %v, want a refusal %d saying %q", tc.name, err, tc.want, tc.wantText)
		}
	}
	err := b.SendAs(ctx, newEvent("no-keys", events.VolumeBackup), keysUnreachable)
	var refused *RefusedError
	if err == nil || errors.As(err, &refused) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("keys out of reach: error %v, want a failure to verify, not a refusal", err)
	}
	invalid := newEvent("", events.VolumeBackup)
	if err := b.SendAs(ctx, invalid, "choreographer"); err == nil || !strings.Contains(err.Error(), "invalid CloudEvent") {
		t.Errorf("invalid event: %v", err)
	}
	if got := s.next(t); got.ID() != "allowed" {
		t.Errorf("delivered %s", got.ID())
	}
	// Send stays trusted.
	send(t, b, newEvent("trusted", events.VolumeBackedUp))
	if got := s.next(t); got.ID() != "trusted" {
		t.Errorf("delivered %s", got.ID())
	}
	closeBroker(t, b)
	if n := s.calls.Load(); n != 2 {
		t.Errorf("%d deliveries, want the allowed and the trusted one", n)
	}
}

// TestSendAsWithoutIdentity: without Identity, SendAs is Send, whatever the token.
func TestSendAsWithoutIdentity(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	b, _ := start(t, []Trigger{everything("fn")}, map[string]string{"fn": s.URL}, nil, Options{})
	if err := b.SendAs(context.Background(), newEvent("e", "dev.example.a"), ""); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got.ID() != "e" {
		t.Errorf("delivered %s", got.ID())
	}
}

// TestDeliveryTokens: a Trigger delivers as its OIDC identity, with a token for its
// subscriber's audience, and sends its dead letters with one for the sink's; a
// destination without an audience (here an observer's) gets no token.
func TestDeliveryTokens(t *testing.T) {
	fn := newSub(t, status(http.StatusBadRequest, "no"))
	dls := newSub(t, status(http.StatusAccepted, ""))
	obs := newSub(t, status(http.StatusAccepted, ""))
	const name = "back-up-volume-volume-backup"
	subAud, dlsAud := events.FunctionAudience(events.FnBackupVolume), events.FunctionAudience(events.FnDeadLetters)
	triggers := []Trigger{
		{Name: name, Filter: map[string]string{"type": events.VolumeBackup},
			Subscriber: Destination{Ref: events.FnBackupVolume, Audience: subAud},
			Delivery:   Delivery{DeadLetterSink: &Destination{Ref: events.FnDeadLetters, Audience: dlsAud}}},
		trig("observer", events.VolumeBackup, "observer", Delivery{}),
	}
	tokens := &tokenSource{}
	b, _ := start(t, triggers, map[string]string{events.FnBackupVolume: fn.URL, events.FnDeadLetters: dls.URL, "observer": obs.URL}, nil,
		Options{Identity: identity(nil, tokens)})
	send(t, b, newEvent("e1", events.VolumeBackup))

	sa := events.TriggerServiceAccount(name)
	fn.next(t)
	if got, want := (<-fn.headers).Get("Authorization"), "Bearer "+fakeToken(sa, subAud); got != want {
		t.Errorf("subscriber got Authorization %q, want %q", got, want)
	}
	if got := dls.next(t); got.ID() != "e1" {
		t.Errorf("dead-letter sink got %s", got.ID())
	}
	if got, want := (<-dls.headers).Get("Authorization"), "Bearer "+fakeToken(sa, dlsAud); got != want {
		t.Errorf("dead-letter sink got Authorization %q, want %q", got, want)
	}
	obs.next(t)
	if got := (<-obs.headers).Get("Authorization"); got != "" {
		t.Errorf("the observer, which names no audience, got Authorization %q", got)
	}
	closeBroker(t, b)
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	if want := []string{sa + "@" + subAud, sa + "@" + dlsAud}; !slices.Equal(tokens.asked, want) {
		t.Errorf("tokens asked %v, want %v", tokens.asked, want)
	}
}

// TestDeliveryWithoutIdentity: without Identity an audience changes nothing.
func TestDeliveryWithoutIdentity(t *testing.T) {
	fn := newSub(t, status(http.StatusAccepted, ""))
	tr := Trigger{Name: "t", Subscriber: Destination{Ref: "fn", Audience: events.FunctionAudience("fn")}}
	b, _ := start(t, []Trigger{tr}, map[string]string{"fn": fn.URL}, nil, Options{})
	send(t, b, newEvent("e1", "dev.example.a"))
	fn.next(t)
	if got := (<-fn.headers).Get("Authorization"); got != "" {
		t.Errorf("Authorization %q without identity", got)
	}
}

// TestDeliveryTokenFailureIsRetried: a token that cannot be had fails the attempt, which
// is retried; the logs say why, never with a token.
func TestDeliveryTokenFailureIsRetried(t *testing.T) {
	fn := newSub(t, status(http.StatusAccepted, ""))
	aud := events.FunctionAudience("fn")
	tr := Trigger{Name: "t", Subscriber: Destination{Ref: "fn", Audience: aud}, Delivery: Delivery{Retry: 1}}
	core, logs := observer.New(zap.DebugLevel)
	b, w := start(t, []Trigger{tr}, map[string]string{"fn": fn.URL}, nil,
		Options{Identity: identity(nil, &tokenSource{fail: 1}), Logger: zap.New(core).Sugar()})
	send(t, b, newEvent("e1", "dev.example.a"))
	fn.next(t)
	if got, want := (<-fn.headers).Get("Authorization"), "Bearer "+fakeToken(events.TriggerServiceAccount("t"), aud); got != want {
		t.Errorf("Authorization %q, want %q", got, want)
	}
	closeBroker(t, b)
	if st := b.Stats(); st.Retried != 1 || st.Delivered != 1 || st.DeadLettered != 0 || len(w.all()) != 1 {
		t.Errorf("stats %+v, waits %v: want one retry, then delivered", st, w.all())
	}
	if logs.FilterMessage("no token for the delivery").Len() != 1 {
		t.Errorf("the token failure was not logged: %v", logs.All())
	}
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, "token-of:") {
			t.Errorf("a log holds a token: %s", line)
		}
	}
}

// TestReplyIdentity: a reply is admitted as sent by its Trigger's OIDC identity; one the
// policies refuse dead-letters the event it answers.
func TestReplyIdentity(t *testing.T) {
	fn := newSub(t, func(_ int, e event.Event, w http.ResponseWriter, r *http.Request) {
		typ := events.VolumeBackedUp // admitted from back-up-volume's Triggers (from-replies)
		if e.ID() == "refused" {
			typ = events.MetadataSnapshot // not admitted from them
		}
		reply := newEvent("reply-of-"+e.ID(), typ)
		_ = cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&reply), http.StatusOK, w)
	})
	next := newSub(t, status(http.StatusAccepted, ""))
	snapshots := newSub(t, status(http.StatusAccepted, ""))
	triggers := []Trigger{
		trig("back-up-volume-volume-backup", events.VolumeBackup, events.FnBackupVolume, Delivery{}),
		trig("choreographer-volume-backedup", events.VolumeBackedUp, events.FnChoreographer, Delivery{}),
		trig("snapshot-metadata-metadata-snapshot", events.MetadataSnapshot, events.FnSnapshotMetadata, Delivery{}),
	}
	b, _ := start(t, triggers, map[string]string{events.FnBackupVolume: fn.URL, events.FnChoreographer: next.URL, events.FnSnapshotMetadata: snapshots.URL}, nil,
		Options{Identity: identity(loadTestPolicies(t), &tokenSource{})})
	send(t, b, newEvent("admitted", events.VolumeBackup))
	if got := next.next(t); got.ID() != "reply-of-admitted" {
		t.Errorf("the admitted reply's Trigger got %s", got.ID())
	}
	send(t, b, newEvent("refused", events.VolumeBackup))
	closeBroker(t, b)
	if n := snapshots.calls.Load(); n != 0 {
		t.Errorf("the refused reply was delivered %d times", n)
	}
	letters := b.Recorder().DeadLetters()
	if len(letters) != 1 {
		t.Fatalf("dead letters %+v, want the refused reply's cause", letters)
	}
	d := letters[0]
	if d.Event.ID() != "refused" || d.Trigger != "back-up-volume-volume-backup" || d.Code != http.StatusForbidden ||
		!strings.Contains(d.Response, "reply refused by the broker: 403 Forbidden") || !strings.Contains(d.Response, `"from-replies"`) {
		t.Errorf("dead letter %+v", d)
	}
	if code := d.Event.Extensions()[ExtErrorCode]; fmt.Sprint(code) != "403" {
		t.Errorf("%s %v", ExtErrorCode, code)
	}
}

func TestNewIdentityErrors(t *testing.T) {
	withAudience := Trigger{Name: "t", Subscriber: Destination{URI: "http://127.0.0.1:9/", Audience: "a"}}
	withSinkAudience := Trigger{Name: "t", Subscriber: Destination{URI: "http://127.0.0.1:9/"},
		Delivery: Delivery{DeadLetterSink: &Destination{URI: "http://127.0.0.1:9/dead", Audience: "d"}}}
	for _, tc := range []struct {
		name     string
		triggers []Trigger
		id       *Identity
		want     string
	}{
		{"bad namespace", nil, &Identity{Namespace: "Bad_NS", Verifier: senders}, `namespace "Bad_NS"`},
		{"no namespace", nil, &Identity{Verifier: senders}, `namespace ""`},
		{"no verifier", nil, &Identity{Namespace: localNamespace}, "no token verifier"},
		{"audience without tokens", []Trigger{withAudience}, &Identity{Namespace: localNamespace, Verifier: senders}, `trigger "t": audience "a"`},
		{"sink audience without tokens", []Trigger{withSinkAudience}, &Identity{Namespace: localNamespace, Verifier: senders}, `trigger "t": audience "d"`},
	} {
		b, err := New(tc.triggers, nil, nil, Options{Identity: tc.id})
		if err == nil {
			closeBroker(t, b)
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want %q", tc.name, err, tc.want)
		}
	}
	// Without audiences, no token source is needed.
	b, err := New([]Trigger{{Name: "t", Subscriber: Destination{URI: "http://127.0.0.1:9/"}}}, nil, nil,
		Options{Identity: &Identity{Namespace: localNamespace, Verifier: senders}})
	if err != nil {
		t.Fatal(err)
	}
	closeBroker(t, b)
}

// TestRunTickerAs: each tick is sent with the ticker's token of the moment; ticks
// refused, or without a token, are logged and skipped.
func TestRunTickerAs(t *testing.T) {
	s := newSub(t, status(http.StatusAccepted, ""))
	core, logs := observer.New(zap.DebugLevel)
	id := identity(nil, nil) // the default allow-same-namespace admits the PingSource's identity
	id.Verifier = verifier{"tick": events.ServiceAccountUser(localNamespace, events.PingSourceServiceAccount(events.TickSource))}
	b, _ := start(t, []Trigger{trig("choreographer-ping", PingSourceType, "choreographer", Delivery{})},
		map[string]string{"choreographer": s.URL}, nil, Options{Identity: id, Logger: zap.New(core).Sugar()})
	var mu sync.Mutex
	calls := 0
	token := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 1:
			return "", errors.New("the apiserver is not answering")
		case 2:
			return "forged", nil
		}
		return "tick", nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.RunTickerAs(ctx, time.Millisecond, PingTick(localNamespace, events.TickSource, time.Now), token)
	}()
	for range 2 {
		if e := s.next(t); e.Type() != PingSourceType {
			t.Errorf("tick of type %s", e.Type())
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunTickerAs = %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("RunTickerAs did not stop")
	}
	notSent := logs.FilterMessage("tick not sent").All()
	if len(notSent) < 2 {
		t.Fatalf("ticks not sent: %v", notSent)
	}
	for i, want := range []string{"get the ticker's token", "401 Unauthorized"} {
		if got := fmt.Sprint(notSent[i].ContextMap()["error"]); !strings.Contains(got, want) {
			t.Errorf("tick %d not sent for %q, want %q", i+1, got, want)
		}
	}
}
