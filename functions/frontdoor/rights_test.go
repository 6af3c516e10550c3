package frontdoor

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access/accesstest"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

func TestNamespacesOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		scope events.Scope
		want  []string // nil: cluster-wide
	}{
		{"namespaces, sorted and without duplicates", events.Scope{Namespaces: []string{"team-b", "team-a", "team-b"}}, []string{"team-a", "team-b"}},
		{"one namespace", events.Scope{Namespaces: []string{"team-a"}}, []string{"team-a"}},
		{"a label selector in namespaces", events.Scope{Namespaces: []string{"team-b", "team-a"}, LabelSelector: "app=db"}, []string{"team-a", "team-b"}},
		{"pods by name: their namespaces", events.Scope{Pods: []string{"team-b:web", "team-a:db", "team-a:web"}}, []string{"team-a", "team-b"}},
		{"one pod by name", events.Scope{Pods: []string{"team-a:db"}}, []string{"team-a"}},
		{"a pod by resource id", events.Scope{Pods: []string{graph.PodID("team-a", "db")}}, nil},
		{"pods by name and by resource id", events.Scope{Pods: []string{"team-a:db", graph.PodID("team-a", "web")}}, nil},
		{"all namespaces", events.Scope{AllNamespaces: true}, nil},
		{"a label selector over all namespaces", events.Scope{AllNamespaces: true, LabelSelector: "app=db"}, nil},
		{"a label selector alone", events.Scope{LabelSelector: "app=db"}, nil},
		{"nothing", events.Scope{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.scope.Namespaces)
			got := namespacesOf(tc.scope)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("namespacesOf(%+v) = %q, want nil (cluster-wide)", tc.scope, got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("namespacesOf(%+v) = %q, want %q", tc.scope, got, tc.want)
			}
			if !slices.Equal(tc.scope.Namespaces, in) {
				t.Errorf("the scope's namespaces changed to %q", tc.scope.Namespaces)
			}
		})
	}
}

func TestRestoreTargets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		params  events.RestoreParameters
		sources []string
		want    []string
	}{
		{"into another namespace", events.RestoreParameters{Namespace: "team-c"}, []string{"team-a", "team-b"}, []string{"team-c"}},
		{"into another namespace, of a cluster-wide checkpoint", events.RestoreParameters{Namespace: "team-c"}, nil, []string{"team-c"}},
		{"in place", events.RestoreParameters{RestoreName: "again"}, []string{"team-a", "team-b"}, []string{"team-a", "team-b"}},
		{"in place, of a cluster-wide checkpoint", events.RestoreParameters{}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := restoreTargets(tc.params, tc.sources)
			if !slices.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Fatalf("restoreTargets(%+v, %q) = %q, want %q", tc.params, tc.sources, got, tc.want)
			}
		})
	}
}

func TestRights(t *testing.T) {
	for _, tc := range []struct {
		name       string
		verb, res  string
		namespaces []string
		want       []string
	}{
		{"in each namespace", "create", resCheckpoints, []string{"team-a", "team-b"},
			[]string{`create checkpoints.podguard.dev in namespace "team-a"`, `create checkpoints.podguard.dev in namespace "team-b"`}},
		{"in one namespace", "get", resRestores, []string{"team-a"}, []string{`get restores.podguard.dev in namespace "team-a"`}},
		{"cluster-wide", "list", resSchedules, nil, []string{"list schedules.podguard.dev cluster-wide"}},
		{"providers", "get", resProviders, nil, []string{"get providers.podguard.dev cluster-wide"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, at := range rights(tc.verb, tc.res, tc.namespaces) {
				if at.Subresource != "" {
					t.Errorf("%+v has a subresource", at)
				}
				got = append(got, at.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("rights(%s, %s, %q) = %q, want %q", tc.verb, tc.res, tc.namespaces, got, tc.want)
			}
		})
	}
}

// TestRightsOf checks the table of rights.go request by request, on a bank holding a
// checkpoint and a schedule of team-b.
func TestRightsOf(t *testing.T) {
	b := banktest.New(t, nil)
	cp := uuid.NewString()
	banktest.Protecting(t, b, bank.Checkpoint{ID: cp, Plan: bank.PlanRef{ID: "team-b"}, Scope: events.Scope{Namespaces: []string{"team-b", "team-c"}}},
		&graph.Graph{Nodes: []graph.Node{{Resource: graph.PodResource("team-b", "db")}, {Resource: graph.PodResource("team-c", "web")},
			{Resource: graph.Resource{Type: graph.VolumeType, ID: uuid.NewString(), Name: "team-b/db-data"}},
			{Resource: graph.ObjectResource(graph.SecretType, "team-b", "creds")}, {Resource: graph.ObjectResource(graph.ServiceAccountType, "team-c", "app-sa")}}})
	if err := b.PutSchedule(context.Background(), bank.ScheduleRecord{Schedule: events.Schedule{ID: "team-b-daily",
		Plan: events.Plan{ID: "team-b-daily", Scope: events.Scope{Namespaces: []string{"team-b"}}}, Trigger: events.Trigger{Pattern: "FREQ=DAILY"}}}); err != nil {
		t.Fatal(err)
	}
	s, err := NewStep(b, nil, Options{Authenticator: accesstest.Tokens{}, Authorizer: accesstest.AllowAll(admin.Username)})
	if err != nil {
		t.Fatal(err)
	}
	teamA := events.Scope{Namespaces: []string{"team-a"}}
	daily := events.Trigger{Pattern: "FREQ=DAILY"}
	for _, tc := range []struct {
		name string
		typ  string
		data any
		want []string
	}{
		{"protect", events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{Namespaces: []string{"team-b", "team-a"}}}},
			[]string{`create checkpoints.podguard.dev in namespace "team-a"`, `create checkpoints.podguard.dev in namespace "team-b"`}},
		{"protect of all namespaces", events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{Scope: events.Scope{AllNamespaces: true}}},
			[]string{"create checkpoints.podguard.dev cluster-wide"}},
		{"restore in place", events.RestoreRequested, events.RestoreRequest{Checkpoint: cp},
			[]string{`get checkpoints.podguard.dev in namespace "team-b"`, `get checkpoints.podguard.dev in namespace "team-c"`,
				`create restores.podguard.dev in namespace "team-b"`, `create restores.podguard.dev in namespace "team-c"`,
				`create persistentvolumeclaims in namespace "team-b"`, `create persistentvolumeclaims in namespace "team-c"`,
				`create pods in namespace "team-b"`, `create pods in namespace "team-c"`,
				`create secrets in namespace "team-b"`, `create serviceaccounts in namespace "team-c"`,
				`impersonate serviceaccounts "app-sa" in namespace "team-c"`}},
		{"restore into a namespace", events.RestoreRequested, events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: "team-a"}},
			[]string{`get checkpoints.podguard.dev in namespace "team-b"`, `get checkpoints.podguard.dev in namespace "team-c"`,
				`create restores.podguard.dev in namespace "team-a"`,
				`create persistentvolumeclaims in namespace "team-a"`, `create pods in namespace "team-a"`,
				`create secrets in namespace "team-a"`, `create serviceaccounts in namespace "team-a"`,
				`impersonate serviceaccounts "app-sa" in namespace "team-a"`}},
		{"restore into a namespace it may create", events.RestoreRequested, events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: "team-a", CreateNamespace: true}},
			[]string{`get checkpoints.podguard.dev in namespace "team-b"`, `get checkpoints.podguard.dev in namespace "team-c"`,
				`create restores.podguard.dev in namespace "team-a"`,
				`create namespaces cluster-wide`, `create persistentvolumeclaims in namespace "team-a"`, `create pods in namespace "team-a"`,
				`create secrets in namespace "team-a"`, `create serviceaccounts in namespace "team-a"`,
				`impersonate serviceaccounts "app-sa" in namespace "team-a"`}},
		{"delete", events.DeleteRequested, events.DeleteRequest{Checkpoint: cp},
			[]string{`delete checkpoints.podguard.dev in namespace "team-b"`, `delete checkpoints.podguard.dev in namespace "team-c"`}},
		{"a new schedule", events.ScheduleSet, events.Schedule{ID: "team-a-daily", Plan: events.Plan{Scope: teamA}, Trigger: daily},
			[]string{`create schedules.podguard.dev in namespace "team-a"`}},
		{"a schedule replacing another", events.ScheduleSet, events.Schedule{ID: "team-b-daily", Plan: events.Plan{Scope: teamA}, Trigger: daily},
			[]string{`create schedules.podguard.dev in namespace "team-a"`, `update schedules.podguard.dev in namespace "team-b"`}},
		{"delete a schedule", events.ScheduleDelete, events.ScheduleRef{ID: "team-b-daily"},
			[]string{`delete schedules.podguard.dev in namespace "team-b"`}},
		{"delete a schedule there is not", events.ScheduleDelete, events.ScheduleRef{ID: "none"}, nil},
		{"list pods", events.PodsList, events.PodsListRequest{Scope: events.Scope{Namespaces: []string{"team-a"}, LabelSelector: "app=db"}},
			[]string{`list protectables.podguard.dev in namespace "team-a"`}},
		{"show a pod", events.PodShow, events.PodShowRequest{Pod: "team-a:db"}, []string{`get protectables.podguard.dev in namespace "team-a"`}},
		{"show a pod by resource id", events.PodShow, events.PodShowRequest{Pod: graph.PodID("team-a", "db")}, []string{"get protectables.podguard.dev cluster-wide"}},
		{"replay a dead letter", events.DeadLetterReplay, events.DeadLetterReplayRequest{DeadLetter: uuid.NewString()},
			[]string{"create deadletters.podguard.dev/replay cluster-wide"}},
		{"a team's PingSource protecting its plan", events.PingSourceTick, map[string]any{"plan": events.Plan{ID: "nightly", Scope: events.Scope{Namespaces: []string{"team-a"}}}},
			[]string{`create checkpoints.podguard.dev in namespace "team-a"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := requestEvent(t, tc.typ, tc.data)
			validate(t, e)
			ats, err := s.rightsOf(context.Background(), e)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, at := range ats {
				got = append(got, at.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("rights of %s = %q, want %q", tc.typ, got, tc.want)
			}
		})
	}

	// Every request the front door takes is either answered or has its rights.
	forwarded := []string{events.ProtectRequested, events.RestoreRequested, events.DeleteRequested, events.ScheduleSet, events.ScheduleDelete,
		events.PodsList, events.PodShow, events.DeadLetterReplay, events.PingSourceTick}
	for _, typ := range Accepts {
		if !slices.Contains(readTypes, typ) && !slices.Contains(forwarded, typ) {
			t.Errorf("%s is taken by the front door but neither answered nor covered here", typ)
		}
	}
	if _, err := s.rightsOf(context.Background(), requestEvent(t, events.Tick, nil)); err == nil {
		t.Error("a tick has rights, want it refused")
	}
	for _, data := range []any{nil, map[string]any{}} {
		if _, err := s.rightsOf(context.Background(), requestEvent(t, events.PingSourceTick, data)); err == nil || function.StatusOf(err) != 400 {
			t.Errorf("a PingSource firing without a plan (%v): %v, want it refused (400)", data, err)
		}
	}
}

// TestRightsOfRemovedCheckpoint: a restore or a delete of a checkpoint the bank does not
// hold is a bad request, naming the checkpoint.
func TestRightsOfRemovedCheckpoint(t *testing.T) {
	s, err := NewStep(banktest.New(t, nil), nil, Options{Authenticator: accesstest.Tokens{}, Authorizer: accesstest.AllowAll(admin.Username)})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	for _, e := range []event.Event{
		requestEvent(t, events.RestoreRequested, events.RestoreRequest{Checkpoint: id}),
		requestEvent(t, events.DeleteRequested, events.DeleteRequest{Checkpoint: id}),
	} {
		ats, err := s.rightsOf(context.Background(), e)
		if !function.IsPermanent(err) || err.Error() != "/checkpoint: checkpoint "+id+" does not exist" || ats != nil {
			t.Errorf("%s of a checkpoint there is not: %v, %v; want a permanent error naming it", e.Type(), ats, err)
		}
	}
}

// requestEvent is an event of typ with data as JSON (none when nil), as a caller sends it.
func requestEvent(t *testing.T, typ string, data any) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource("https://example.com/team-a/ci")
	e.SetType(typ)
	e.SetTime(time.Now().UTC())
	if data != nil {
		if err := e.SetData(event.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
	}
	return e
}
