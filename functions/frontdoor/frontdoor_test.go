package frontdoor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
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
	"github.com/google/uuid"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/access/accesstest"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/schedule"
)

// The callers beside admin (helpers_test.go), who may do anything: an operator and a
// viewer of team-a, with the rules of podguard-operator and podguard-viewer
// (deploy/roles/roles.yaml) bound in team-a.
var (
	operator = access.Caller{Username: "system:serviceaccount:team-a:operator", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:team-a"}}
	viewer   = access.Caller{Username: "oidc:viewer@team-a.example.com", Groups: []string{"team-a"}}
)

const (
	operatorToken = "operator-token"
	viewerToken   = "viewer-token"
)

// The rules of the roles, resource -> verbs.
var (
	operatorRules = map[string][]string{
		resCheckpoints:  {"get", "list", "create", "delete"},
		resRestores:     {"get", "list", "create"},
		resSchedules:    {"get", "list", "create", "update", "delete"},
		resProtectables: {"get", "list"},
	}
	viewerRules = map[string][]string{
		resCheckpoints:  {"get", "list"},
		resRestores:     {"get", "list"},
		resSchedules:    {"get", "list"},
		resProtectables: {"get", "list"},
	}
)

// kubeEditRules are the Kubernetes rights a team's operator holds in its namespace (the
// edit role's) that a restore there asks of its caller.
var kubeEditRules = map[string][]string{
	"pods": {"create"}, "persistentvolumeclaims": {"create"}, "configmaps": {"create"}, "secrets": {"create"},
	"serviceaccounts": {"create", "impersonate"},
}

// protected are the namespaces no restore lands in: the defaults and podguard's own.
var protected = []string{"kube-system", "kube-public", "kube-node-lease", "podguard"}

// boundIn are the grants of a role's rules bound to user in namespace.
func boundIn(user, namespace string, rules map[string][]string) []accesstest.Grant {
	var gs []accesstest.Grant
	for _, res := range slices.Sorted(maps.Keys(rules)) {
		for _, verb := range rules[res] {
			gs = append(gs, accesstest.Grant{User: user, Verb: verb, Resource: res, Namespace: namespace})
		}
	}
	return gs
}

// teamGrants are what admin, the operator and the viewer may do.
func teamGrants() *accesstest.Grants {
	gs := []accesstest.Grant{{User: admin.Username, Verb: "*", Resource: "*"}}
	gs = append(gs, boundIn(operator.Username, "team-a", operatorRules)...)
	gs = append(gs, boundIn(operator.Username, "team-a", kubeEditRules)...)
	gs = append(gs, boundIn(viewer.Username, "team-a", viewerRules)...)
	return accesstest.NewGrants(gs...)
}

// sentEvents records the requests the front door forwards into the broker; a send fails
// with err when it is set.
type sentEvents struct {
	mu     sync.Mutex
	events []event.Event
	err    error
}

func (s *sentEvents) Send(_ context.Context, e event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
	return s.err
}

// take returns the events sent since the last take.
func (s *sentEvents) take() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.events
	s.events = nil
	return out
}

// teams is a front door served as the function serves it (the CloudEvents endpoint gated
// by the step, the read API under /api/), on a bank with checkpoints, restores and
// schedules of team-a, team-b and all namespaces.
type teams struct {
	url    string
	sent   *sentEvents
	grants *accesstest.Grants
	// Checkpoints: of team-a by namespace and by pod, of team-b, of every namespace.
	cpA, cpPodA, cpB, cpAll string
	// Restores: rA restores cpA in place, rB cpB in place, rBA cpB into team-a.
	rA, rB, rBA string
}

// Schedules of the bank of teams.
const (
	scheduleA   = "team-a-daily"
	scheduleB   = "team-b-daily"
	scheduleAll = "everything-weekly"
)

// newTeams serves the front door; change, when set, changes its options first.
func newTeams(t *testing.T, change func(*Options)) *teams {
	t.Helper()
	ctx := context.Background()
	b := banktest.New(t, nil)
	f := &teams{sent: &sentEvents{}, grants: teamGrants(),
		cpA: uuid.NewString(), cpPodA: uuid.NewString(), cpB: uuid.NewString(), cpAll: uuid.NewString(),
		rA: uuid.NewString(), rB: uuid.NewString(), rBA: uuid.NewString()}
	pod := func(namespace, name string) *graph.Graph {
		return &graph.Graph{Nodes: []graph.Node{{Resource: graph.PodResource(namespace, name)}}}
	}
	banktest.Restoring(t, b, bank.Checkpoint{ID: f.cpA, Plan: bank.PlanRef{ID: "team-a"}, Scope: events.Scope{Namespaces: []string{"team-a"}}},
		pod("team-a", "db"), bank.Restore{ID: f.rA})
	banktest.Restoring(t, b, bank.Checkpoint{ID: f.cpB, Plan: bank.PlanRef{ID: "team-b"}, Scope: events.Scope{Namespaces: []string{"team-b"}}},
		pod("team-b", "db"), bank.Restore{ID: f.rB})
	now := time.Now().UTC()
	if _, err := b.CreateRestore(ctx, bank.Restore{ID: f.rBA, Checkpoint: f.cpB, Parameters: events.RestoreParameters{Namespace: "team-a"},
		CreatedAt: now, Deadline: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	banktest.Protecting(t, b, bank.Checkpoint{ID: f.cpPodA, Plan: bank.PlanRef{ID: "team-a-web"}, Scope: events.Scope{Pods: []string{"team-a:web"}}},
		pod("team-a", "web"))
	banktest.Protecting(t, b, bank.Checkpoint{ID: f.cpAll, Plan: bank.PlanRef{ID: "everything"}, Scope: events.Scope{AllNamespaces: true}},
		pod("kube-system", "coredns"))
	for id, scope := range map[string]events.Scope{
		scheduleA:   {Namespaces: []string{"team-a"}},
		scheduleB:   {Namespaces: []string{"team-b"}},
		scheduleAll: {AllNamespaces: true},
	} {
		if err := b.PutSchedule(ctx, bank.ScheduleRecord{Schedule: events.Schedule{ID: id, Plan: events.Plan{ID: id, Scope: scope},
			Trigger: events.Trigger{Pattern: "FREQ=DAILY;BYHOUR=2"}}, SavedAt: now, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}

	o := Options{
		Authenticator: accesstest.Tokens{adminToken: admin, operatorToken: operator, viewerToken: viewer},
		Authorizer:    f.grants,
		Sink:          f.sent,
		Protected:     protected,
		DeadLetters:   deadLetterShelf{},
	}
	if change != nil {
		change(&o)
	}
	step, err := NewStep(b, checkpoint.BankRestores(b), o)
	if err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	srv := function.NewServer(events.FnFrontDoor, Accepts, step, v, function.ServerOptions{Gate: step})
	hs := httptest.NewServer(function.WithReadAPI(srv, step))
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// answer is the front door's answer to a request.
type answer struct {
	status int
	header http.Header
	// body is the text of an answer without a reply event.
	body string
	// reply is the reply event of a 200 to an event.
	reply *event.Event
}

// send posts e to the front door as a binary CloudEvent, with a bearer token unless
// token is empty.
func (f *teams) send(t *testing.T, token string, e event.Event) answer {
	t.Helper()
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode == http.StatusOK {
		if a.reply, err = cehttp.NewEventFromHTTPResponse(resp); err != nil {
			t.Fatalf("%s: the answer is no event: %v", e.Type(), err)
		}
		return a
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a.body = string(body)
	return a
}

// get GETs path of the read API, with a bearer token unless token is empty.
func (f *teams) get(t *testing.T, token, path string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// ask sends a read as token's caller, checks that it is answered 200 with a reply of
// replyType matching its schema, and decodes the reply into out.
func (f *teams) ask(t *testing.T, token, typ string, data any, replyType string, out any) {
	t.Helper()
	a := f.send(t, token, requestEvent(t, typ, data))
	if a.status != http.StatusOK {
		t.Fatalf("%s: %d %s, want 200", typ, a.status, a.body)
	}
	if a.reply.Type() != replyType {
		t.Fatalf("%s answered %s, want %s", typ, a.reply.Type(), replyType)
	}
	validate(t, *a.reply)
	if err := a.reply.DataAs(out); err != nil {
		t.Fatal(err)
	}
}

// refused checks an answer's status and that its text names reason.
func refused(t *testing.T, what string, a answer, status int, reason string) {
	t.Helper()
	if a.status != status || !strings.Contains(a.body, reason) {
		t.Fatalf("%s: %d %q, want %d naming %q", what, a.status, a.body, status, reason)
	}
}

// checkForwarded checks that exactly e was forwarded, unchanged but for the caller.
func checkForwarded(t *testing.T, sent []event.Event, e event.Event, caller string) {
	t.Helper()
	if len(sent) != 1 {
		t.Fatalf("%d events forwarded, want 1: %v", len(sent), sent)
	}
	got := sent[0]
	if got.ID() != e.ID() || got.Source() != e.Source() || got.Type() != e.Type() || got.SpecVersion() != e.SpecVersion() ||
		!got.Time().Equal(e.Time()) || got.DataContentType() != e.DataContentType() || !bytes.Equal(got.Data(), e.Data()) {
		t.Errorf("forwarded\n%s\nwant\n%s", got, e)
	}
	if want := map[string]any{events.ExtCaller: caller}; !maps.Equal(got.Extensions(), want) {
		t.Errorf("forwarded extensions %v, want %v", got.Extensions(), want)
	}
}

// TestFrontDoor: who may send which request, through the function's HTTP endpoint.
func TestFrontDoor(t *testing.T) {
	f := newTeams(t, nil)
	usernames := map[string]string{adminToken: admin.Username, operatorToken: operator.Username, viewerToken: viewer.Username}
	plan := func(scope events.Scope) events.ProtectRequest {
		return events.ProtectRequest{Plan: events.Plan{ID: "p", Scope: scope}}
	}
	teamA := events.Scope{Namespaces: []string{"team-a"}}
	daily := events.Trigger{Pattern: "FREQ=DAILY;BYHOUR=3"}
	unknown := uuid.NewString()
	for _, tc := range []struct {
		name   string
		token  string
		typ    string
		data   any
		status int
		// reason is what a refusal names.
		reason string
	}{
		{"protect team-a by the operator", operatorToken, events.ProtectRequested, plan(teamA), http.StatusAccepted, ""},
		{"protect team-a by the viewer", viewerToken, events.ProtectRequested, plan(teamA), http.StatusForbidden,
			viewer.Username + ` may not create checkpoints.podguard.dev in namespace "team-a"`},
		{"protect team-b by the operator", operatorToken, events.ProtectRequested, plan(events.Scope{Namespaces: []string{"team-b"}}), http.StatusForbidden,
			`create checkpoints.podguard.dev in namespace "team-b"`},
		{"protect team-a and team-b by the operator", operatorToken, events.ProtectRequested, plan(events.Scope{Namespaces: []string{"team-a", "team-b"}}),
			http.StatusForbidden, `create checkpoints.podguard.dev in namespace "team-b"`},
		{"protect pods of team-a by the operator", operatorToken, events.ProtectRequested, plan(events.Scope{Pods: []string{"team-a:db", "team-a:web"}}),
			http.StatusAccepted, ""},
		{"protect labelled pods of team-a by the operator", operatorToken, events.ProtectRequested,
			plan(events.Scope{Namespaces: []string{"team-a"}, LabelSelector: "app=db"}), http.StatusAccepted, ""},
		{"protect a pod by resource id by the operator", operatorToken, events.ProtectRequested, plan(events.Scope{Pods: []string{graph.PodID("team-a", "db")}}),
			http.StatusForbidden, "create checkpoints.podguard.dev cluster-wide"},
		{"protect all namespaces by the operator", operatorToken, events.ProtectRequested, plan(events.Scope{AllNamespaces: true}), http.StatusForbidden,
			"create checkpoints.podguard.dev cluster-wide"},
		{"protect all namespaces by admin", adminToken, events.ProtectRequested, plan(events.Scope{AllNamespaces: true}), http.StatusAccepted, ""},

		{"restore team-a into team-a by the operator", operatorToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpA, Parameters: events.RestoreParameters{Namespace: "team-a", RestoreName: "again"}}, http.StatusAccepted, ""},
		{"restore team-a in place by the operator", operatorToken, events.RestoreRequested, events.RestoreRequest{Checkpoint: f.cpA}, http.StatusAccepted, ""},
		{"restore team-a into a namespace to create, by the operator", operatorToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpA, Parameters: events.RestoreParameters{Namespace: "team-a", CreateNamespace: true}}, http.StatusForbidden,
			"may not create namespaces cluster-wide"},
		{"restore team-a into a namespace to create, by admin", adminToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpA, Parameters: events.RestoreParameters{Namespace: "team-a-dr", CreateNamespace: true}}, http.StatusAccepted, ""},
		{"restore team-a into team-b by the operator", operatorToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpA, Parameters: events.RestoreParameters{Namespace: "team-b"}}, http.StatusForbidden,
			`create restores.podguard.dev in namespace "team-b"`},
		{"restore team-b into team-a by the operator", operatorToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpB, Parameters: events.RestoreParameters{Namespace: "team-a"}}, http.StatusForbidden,
			`get checkpoints.podguard.dev in namespace "team-b"`},
		{"restore team-a by the viewer", viewerToken, events.RestoreRequested, events.RestoreRequest{Checkpoint: f.cpA}, http.StatusForbidden,
			`create restores.podguard.dev in namespace "team-a"`},
		{"restore into kube-system by admin", adminToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpA, Parameters: events.RestoreParameters{Namespace: "kube-system"}}, http.StatusForbidden,
			`/parameters/namespace: a restore never lands in namespace "kube-system" (protected: kube-node-lease, kube-public, kube-system, podguard)`},
		{"restore into podguard's namespace by admin", adminToken, events.RestoreRequested,
			events.RestoreRequest{Checkpoint: f.cpB, Parameters: events.RestoreParameters{Namespace: "podguard"}}, http.StatusForbidden,
			`a restore never lands in namespace "podguard"`},
		{"restore an unknown checkpoint", adminToken, events.RestoreRequested, events.RestoreRequest{Checkpoint: unknown}, http.StatusBadRequest,
			"/checkpoint: checkpoint " + unknown + " does not exist"},

		{"delete team-a by the viewer", viewerToken, events.DeleteRequested, events.DeleteRequest{Checkpoint: f.cpA}, http.StatusForbidden,
			`delete checkpoints.podguard.dev in namespace "team-a"`},
		{"delete team-a by the operator", operatorToken, events.DeleteRequested, events.DeleteRequest{Checkpoint: f.cpA}, http.StatusAccepted, ""},
		{"delete team-b by the operator", operatorToken, events.DeleteRequested, events.DeleteRequest{Checkpoint: f.cpB}, http.StatusForbidden,
			`delete checkpoints.podguard.dev in namespace "team-b"`},
		{"delete an unknown checkpoint", operatorToken, events.DeleteRequested, events.DeleteRequest{Checkpoint: unknown}, http.StatusBadRequest,
			"/checkpoint: checkpoint " + unknown + " does not exist"},

		{"a new schedule of team-a by the operator", operatorToken, events.ScheduleSet,
			events.Schedule{ID: "team-a-nightly", Plan: events.Plan{Scope: teamA}, Trigger: daily}, http.StatusAccepted, ""},
		{"team-a's schedule changed by the operator", operatorToken, events.ScheduleSet,
			events.Schedule{ID: scheduleA, Plan: events.Plan{Scope: teamA}, Trigger: daily}, http.StatusAccepted, ""},
		{"team-b's schedule taken over by the operator", operatorToken, events.ScheduleSet,
			events.Schedule{ID: scheduleB, Plan: events.Plan{Scope: teamA}, Trigger: daily}, http.StatusForbidden,
			`update schedules.podguard.dev in namespace "team-b"`},
		{"a schedule of team-a by the viewer", viewerToken, events.ScheduleSet,
			events.Schedule{ID: "team-a-nightly", Plan: events.Plan{Scope: teamA}, Trigger: daily}, http.StatusForbidden,
			`create schedules.podguard.dev in namespace "team-a"`},
		{"team-a's schedule deleted by the operator", operatorToken, events.ScheduleDelete, events.ScheduleRef{ID: scheduleA}, http.StatusAccepted, ""},
		{"team-b's schedule deleted by the operator", operatorToken, events.ScheduleDelete, events.ScheduleRef{ID: scheduleB}, http.StatusForbidden,
			`delete schedules.podguard.dev in namespace "team-b"`},

		{"pods of team-a listed by the viewer", viewerToken, events.PodsList, events.PodsListRequest{Scope: teamA}, http.StatusAccepted, ""},
		{"a pod of team-b shown to the viewer", viewerToken, events.PodShow, events.PodShowRequest{Pod: "team-b:db"}, http.StatusForbidden,
			`get protectables.podguard.dev in namespace "team-b"`},

		{"a dead letter replayed by the operator", operatorToken, events.DeadLetterReplay, events.DeadLetterReplayRequest{DeadLetter: uuid.NewString()},
			http.StatusForbidden, "create deadletters.podguard.dev/replay cluster-wide"},
		{"a dead letter replayed by admin", adminToken, events.DeadLetterReplay, events.DeadLetterReplayRequest{DeadLetter: uuid.NewString()},
			http.StatusAccepted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := requestEvent(t, tc.typ, tc.data)
			a := f.send(t, tc.token, e)
			sent := f.sent.take()
			if tc.status != http.StatusAccepted {
				refused(t, tc.name, a, tc.status, tc.reason)
				if len(sent) != 0 {
					t.Fatalf("refused, yet forwarded %v", sent)
				}
				return
			}
			if a.status != http.StatusAccepted {
				t.Fatalf("%d %q, want 202", a.status, a.body)
			}
			checkForwarded(t, sent, e, usernames[tc.token])
		})
	}

	t.Run("a forged caller is replaced", func(t *testing.T) {
		e := requestEvent(t, events.ProtectRequested, plan(teamA))
		e.SetExtension(events.ExtCaller, admin.Username)
		if a := f.send(t, operatorToken, e); a.status != http.StatusAccepted {
			t.Fatalf("%d %q, want 202", a.status, a.body)
		}
		checkForwarded(t, f.sent.take(), e, operator.Username)
	})
}

// TestFrontDoorUnauthenticated: a request without a token the front door accepts is
// refused before anyone is asked what it may do.
func TestFrontDoorUnauthenticated(t *testing.T) {
	f := newTeams(t, nil)
	e := requestEvent(t, events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{AllNamespaces: true}}})
	for _, tc := range []struct {
		name   string
		header string
		reason string
	}{
		{"no token", "", "no bearer token"},
		{"an unknown token", "Bearer forged-token", "token not accepted"},
		{"another scheme", "Basic " + adminToken, "no bearer token"},
		{"an empty bearer token", "Bearer ", "no bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
				t.Fatal(err)
			}
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			refused(t, tc.name, answer{status: resp.StatusCode, body: string(body)}, http.StatusUnauthorized, tc.reason)
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
			}
		})
	}
	// The reads are refused alike.
	refused(t, "a read without a token", f.send(t, "", requestEvent(t, events.CheckpointsList, map[string]any{})), http.StatusUnauthorized, "no bearer token")
	if sent := f.sent.take(); len(sent) != 0 {
		t.Fatalf("forwarded %v", sent)
	}
	if n := f.grants.Asked(); n != 0 {
		t.Fatalf("the authorizer was asked %d times", n)
	}
}

// TestFrontDoorReads: the reads are answered in the response, showing each caller only
// what it may see.
func TestFrontDoorReads(t *testing.T) {
	f := newTeams(t, nil)

	var shown struct {
		Checkpoint string           `json:"checkpoint"`
		Found      bool             `json:"found"`
		View       *checkpoint.View `json:"view"`
	}
	f.ask(t, viewerToken, events.CheckpointShow, map[string]string{"checkpoint": f.cpA}, events.CheckpointShown, &shown)
	if shown.Checkpoint != f.cpA || !shown.Found || shown.View == nil || shown.View.ID != f.cpA || shown.View.Status != events.StatusAvailable ||
		len(shown.View.Resources) != 1 || shown.View.Resources[0].Name != "team-a:db" {
		t.Fatalf("team-a's checkpoint shown to the viewer: %+v", shown)
	}
	refused(t, "team-b's checkpoint shown to the viewer", f.send(t, viewerToken, requestEvent(t, events.CheckpointShow, map[string]string{"checkpoint": f.cpB})),
		http.StatusForbidden, `get checkpoints.podguard.dev in namespace "team-b"`)
	refused(t, "a cluster-wide checkpoint shown to the operator", f.send(t, operatorToken, requestEvent(t, events.CheckpointShow, map[string]string{"checkpoint": f.cpAll})),
		http.StatusForbidden, "get checkpoints.podguard.dev cluster-wide")
	unknown := uuid.NewString()
	shown.View = nil
	f.ask(t, viewerToken, events.CheckpointShow, map[string]string{"checkpoint": unknown}, events.CheckpointShown, &shown)
	if shown.Checkpoint != unknown || shown.Found || shown.View != nil {
		t.Fatalf("an unknown checkpoint shown: %+v, want found=false", shown)
	}

	var checkpoints struct {
		Checkpoints []checkpoint.Summary `json:"checkpoints"`
		Next        string               `json:"next"`
	}
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{viewerToken, []string{f.cpA, f.cpPodA}},
		{operatorToken, []string{f.cpA, f.cpPodA}},
		{adminToken, []string{f.cpA, f.cpPodA, f.cpB, f.cpAll}},
	} {
		checkpoints.Checkpoints = nil
		f.ask(t, tc.token, events.CheckpointsList, map[string]any{}, events.CheckpointsListed, &checkpoints)
		if got := checkpointIDs(checkpoints.Checkpoints); !sameIDs(got, tc.want) || checkpoints.Next != "" {
			t.Errorf("checkpoints listed to %s: %q next %q, want %q", tc.token, got, checkpoints.Next, tc.want)
		}
	}

	var restore struct {
		Restore string                  `json:"restore"`
		Found   bool                    `json:"found"`
		View    *checkpoint.RestoreView `json:"view"`
	}
	f.ask(t, viewerToken, events.RestoreShow, map[string]string{"restore": f.rBA}, events.RestoreShown, &restore)
	if !restore.Found || restore.View == nil || restore.View.ID != f.rBA || restore.View.Checkpoint != f.cpB {
		t.Fatalf("a restore into team-a shown to the viewer: %+v", restore)
	}
	refused(t, "a restore into team-b shown to the viewer", f.send(t, viewerToken, requestEvent(t, events.RestoreShow, map[string]string{"restore": f.rB})),
		http.StatusForbidden, `get restores.podguard.dev in namespace "team-b"`)

	var restores struct {
		Restores []checkpoint.RestoreSummary `json:"restores"`
		Next     string                      `json:"next"`
	}
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{viewerToken, []string{f.rA, f.rBA}},
		{adminToken, []string{f.rA, f.rB, f.rBA}},
	} {
		restores.Restores = nil
		f.ask(t, tc.token, events.RestoresList, map[string]any{}, events.RestoresListed, &restores)
		if got := ids(restores.Restores); !sameIDs(got, tc.want) || restores.Next != "" {
			t.Errorf("restores listed to %s: %q next %q, want %q", tc.token, got, restores.Next, tc.want)
		}
	}

	var schedules struct {
		Schedules []schedule.View `json:"schedules"`
	}
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{viewerToken, []string{scheduleA}},
		{adminToken, []string{scheduleA, scheduleB, scheduleAll}},
	} {
		schedules.Schedules = nil
		f.ask(t, tc.token, events.SchedulesList, map[string]any{}, events.SchedulesListed, &schedules)
		if got := scheduleIDs(schedules.Schedules); !sameIDs(got, tc.want) {
			t.Errorf("schedules listed to %s: %q, want %q", tc.token, got, tc.want)
		}
	}

	refused(t, "dead letters listed to the viewer", f.send(t, viewerToken, requestEvent(t, events.DeadLettersList, map[string]any{})),
		http.StatusForbidden, "list deadletters.podguard.dev cluster-wide")
	var letters events.DeadLettersListedResult
	f.ask(t, adminToken, events.DeadLettersList, map[string]any{}, events.DeadLettersListed, &letters)
	if len(letters.DeadLetters) != 0 || letters.Next != "" {
		t.Errorf("dead letters listed to admin: %+v, want none", letters)
	}

	// The viewer's role has no right on providers: only admin sees the provider.
	refused(t, "the provider shown to the viewer", f.send(t, viewerToken, requestEvent(t, events.ProviderShow, nil)),
		http.StatusForbidden, "get providers.podguard.dev cluster-wide")
	var provider struct {
		ID            string                     `json:"id"`
		ResourceTypes map[string]json.RawMessage `json:"resource_types"`
	}
	f.ask(t, adminToken, events.ProviderShow, nil, events.ProviderShown, &provider)
	if provider.ID != checkpoint.ProviderID || provider.ResourceTypes[graph.PodType] == nil {
		t.Errorf("the provider shown to admin: %+v", provider)
	}

	if sent := f.sent.take(); len(sent) != 0 {
		t.Fatalf("reads forwarded %v", sent)
	}
}

// TestFrontDoorReadAPI: the same reads as plain GETs, with the same token and rights.
func TestFrontDoorReadAPI(t *testing.T) {
	f := newTeams(t, nil)

	for _, path := range []string{"/api/checkpoints", "/api/checkpoints/" + f.cpA, "/api/restores", "/api/schedules"} {
		a := f.get(t, "", path)
		refused(t, "GET "+path+" without a token", a, http.StatusUnauthorized, "no bearer token")
		if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("GET %s without a token: WWW-Authenticate %q", path, a.header.Get("WWW-Authenticate"))
		}
	}
	refused(t, "GET with an unknown token", f.get(t, "forged-token", "/api/checkpoints"), http.StatusUnauthorized, "token not accepted")

	var checkpoints struct {
		Checkpoints []checkpoint.Summary `json:"checkpoints"`
	}
	decode(t, f.get(t, viewerToken, "/api/checkpoints"), &checkpoints)
	if got := checkpointIDs(checkpoints.Checkpoints); !sameIDs(got, []string{f.cpA, f.cpPodA}) {
		t.Errorf("checkpoints listed to the viewer: %q", got)
	}
	checkpoints.Checkpoints = nil
	decode(t, f.get(t, viewerToken, "/api/checkpoints?plan=team-b"), &checkpoints)
	if len(checkpoints.Checkpoints) != 0 {
		t.Errorf("team-b's plan listed to the viewer: %+v", checkpoints.Checkpoints)
	}
	checkpoints.Checkpoints = nil
	decode(t, f.get(t, adminToken, "/api/checkpoints?plan=team-b"), &checkpoints)
	if got := checkpointIDs(checkpoints.Checkpoints); !sameIDs(got, []string{f.cpB}) {
		t.Errorf("team-b's plan listed to admin: %q", got)
	}

	var v checkpoint.View
	decode(t, f.get(t, viewerToken, "/api/checkpoints/"+f.cpA), &v)
	if v.ID != f.cpA || v.Plan.ID != "team-a" {
		t.Errorf("team-a's checkpoint to the viewer: %+v", v)
	}
	refused(t, "GET team-b's checkpoint as the viewer", f.get(t, viewerToken, "/api/checkpoints/"+f.cpB), http.StatusForbidden,
		viewer.Username+` may not get checkpoints.podguard.dev in namespace "team-b"`)
	refused(t, "GET an unknown checkpoint", f.get(t, viewerToken, "/api/checkpoints/"+uuid.NewString()), http.StatusNotFound, "not found")

	var restores struct {
		Restores []checkpoint.RestoreSummary `json:"restores"`
	}
	decode(t, f.get(t, viewerToken, "/api/restores"), &restores)
	if got := ids(restores.Restores); !sameIDs(got, []string{f.rA, f.rBA}) {
		t.Errorf("restores listed to the viewer: %q", got)
	}
	refused(t, "GET a restore into team-b as the viewer", f.get(t, viewerToken, "/api/restores/"+f.rB), http.StatusForbidden,
		`get restores.podguard.dev in namespace "team-b"`)
	refused(t, "GET an unknown restore", f.get(t, viewerToken, "/api/restores/"+uuid.NewString()), http.StatusNotFound, "not found")

	var schedules struct {
		Schedules []schedule.View `json:"schedules"`
	}
	decode(t, f.get(t, viewerToken, "/api/schedules"), &schedules)
	if got := scheduleIDs(schedules.Schedules); !sameIDs(got, []string{scheduleA}) {
		t.Errorf("schedules listed to the viewer: %q", got)
	}

	refused(t, "GET the provider as the viewer", f.get(t, viewerToken, "/api/provider"), http.StatusForbidden, "get providers.podguard.dev cluster-wide")
	refused(t, "GET dead letters as the viewer", f.get(t, viewerToken, "/api/deadletters"), http.StatusForbidden, "list deadletters.podguard.dev cluster-wide")
	refused(t, "GET a dead letter as the operator", f.get(t, operatorToken, "/api/deadletters/"+uuid.NewString()), http.StatusForbidden,
		"get deadletters.podguard.dev cluster-wide")
	if a := f.get(t, adminToken, "/api/provider"); a.status != http.StatusOK {
		t.Errorf("GET the provider as admin: %d %s", a.status, a.body)
	}
}

// downAuthorizer cannot decide: the apiserver does not answer.
type downAuthorizer struct{}

func (downAuthorizer) AllowedAll(context.Context, access.Caller, []access.Attributes) (access.Decision, error) {
	return access.Decision{}, errors.New("create SubjectAccessReview: connection refused")
}

// downAuthenticator cannot tell who holds a token: the apiserver does not answer.
type downAuthenticator struct{}

func (downAuthenticator) Authenticate(context.Context, string) (access.Caller, error) {
	return access.Caller{}, errors.New("create TokenReview: connection refused")
}

// TestFrontDoorTransientFailures: when the caller's rights cannot be told, or the broker
// does not take the request, the answer is a 5xx for the broker to retry, and nothing is
// forwarded.
func TestFrontDoorTransientFailures(t *testing.T) {
	protect := func() event.Event {
		return requestEvent(t, events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{Namespaces: []string{"team-a"}}}})
	}
	t.Run("the authorizer is down", func(t *testing.T) {
		f := newTeams(t, func(o *Options) { o.Authorizer = downAuthorizer{} })
		refused(t, "protect", f.send(t, operatorToken, protect()), http.StatusInternalServerError,
			"authorize "+operator.Username+": create SubjectAccessReview: connection refused")
		refused(t, "restore", f.send(t, operatorToken, requestEvent(t, events.RestoreRequested, events.RestoreRequest{Checkpoint: f.cpA})),
			http.StatusInternalServerError, "connection refused")
		refused(t, "checkpoints.list", f.send(t, viewerToken, requestEvent(t, events.CheckpointsList, map[string]any{})),
			http.StatusInternalServerError, "connection refused")
		refused(t, "checkpoint.show", f.send(t, viewerToken, requestEvent(t, events.CheckpointShow, map[string]string{"checkpoint": f.cpA})),
			http.StatusInternalServerError, "connection refused")
		refused(t, "GET /api/checkpoints", f.get(t, viewerToken, "/api/checkpoints"), http.StatusBadGateway, "connection refused")
		refused(t, "GET /api/checkpoints/<id>", f.get(t, viewerToken, "/api/checkpoints/"+f.cpA), http.StatusBadGateway, "connection refused")
		if sent := f.sent.take(); len(sent) != 0 {
			t.Fatalf("forwarded %v", sent)
		}
	})
	t.Run("the authenticator is down", func(t *testing.T) {
		f := newTeams(t, func(o *Options) { o.Authenticator = downAuthenticator{} })
		refused(t, "protect", f.send(t, operatorToken, protect()), http.StatusInternalServerError,
			"authenticate the caller: create TokenReview: connection refused")
		if sent := f.sent.take(); len(sent) != 0 {
			t.Fatalf("forwarded %v", sent)
		}
		if n := f.grants.Asked(); n != 0 {
			t.Fatalf("the authorizer was asked %d times", n)
		}
	})
	t.Run("the broker is down", func(t *testing.T) {
		f := newTeams(t, nil)
		f.sent.err = errors.New("503 Service Unavailable")
		e := protect()
		refused(t, "protect", f.send(t, operatorToken, e), http.StatusInternalServerError,
			"forward "+events.ProtectRequested+" "+e.ID()+" into the broker: 503 Service Unavailable")
	})
	t.Run("no broker", func(t *testing.T) {
		f := newTeams(t, func(o *Options) { o.Sink = nil })
		a := f.send(t, operatorToken, protect())
		if a.status < 500 || !strings.Contains(a.body, "no broker to send to") {
			t.Fatalf("%d %q, want a 5xx naming the missing broker", a.status, a.body)
		}
		// Reads need no broker.
		var listed struct {
			Checkpoints []checkpoint.Summary `json:"checkpoints"`
		}
		f.ask(t, viewerToken, events.CheckpointsList, map[string]any{}, events.CheckpointsListed, &listed)
		if len(listed.Checkpoints) != 2 {
			t.Fatalf("listed %+v", listed.Checkpoints)
		}
	})
}

// decode checks that a GET was answered 200 and decodes its JSON into out.
func decode(t *testing.T, a answer, out any) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("%d %q, want 200", a.status, a.body)
	}
	if err := json.Unmarshal([]byte(a.body), out); err != nil {
		t.Fatal(err)
	}
}

func checkpointIDs(s []checkpoint.Summary) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		out = append(out, x.ID)
	}
	return out
}

func scheduleIDs(s []schedule.View) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		out = append(out, x.ID)
	}
	return out
}

// sameIDs reports whether got and want hold the same ids, in any order.
func sameIDs(got, want []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}
