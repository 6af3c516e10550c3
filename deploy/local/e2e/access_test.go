package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/checkpoint"
)

// identity is a caller of the front door: a ServiceAccount with a token for podguard's
// audience.
type identity struct {
	name, user, token string
}

// grantedIdentity creates a ServiceAccount in ns bound, in ns, to the ClusterRole role
// (and to the ClusterRoles also), waits until the apiserver's authorizer says so, and
// returns it with a token.
func (e *env) grantedIdentity(ns, name, role string, also ...string) identity {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range append([]string{role}, also...) {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + r},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}}}
		if _, err := e.kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	user := "system:serviceaccount:" + ns + ":" + name
	until(e.t, 30*time.Second, "the binding of "+user, func() (bool, error) {
		r, err := e.kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "podguard.dev", Resource: "checkpoints", Verb: "get", Namespace: ns}}}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed, err
	})
	return identity{name: name, user: user, token: e.token(ns, name, "podguard")}
}

// token is a token of ServiceAccount ns/name for audience.
func (e *env) token(ns, name, audience string) string {
	e.t.Helper()
	tr, err := e.kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return tr.Status.Token
}

// TestWhoMayAsk is the RBAC matrix of the front door on the real apiserver: an admin
// (podguard-admin, cluster-wide), an operator of team-a and a viewer of team-a
// (podguard-operator and podguard-viewer bound in team-a), times the request types,
// times team-a, team-b and kube-system. Each is allowed or refused exactly as the roles
// say, refused with 401 or 403 and the reason; all the refusals together change nothing
// in the bank or the cluster; lists show each caller only what it may see; and what the
// operator is allowed to do runs, recorded as the operator's.
func TestWhoMayAsk(t *testing.T) {
	e := newEnv(t, envOptions{})
	teamA := e.st.Namespace(t, e.kube, "team-a")
	teamB := e.st.Namespace(t, e.kube, "team-b")
	const system = "kube-system"
	for _, ns := range []string{teamA, teamB} {
		e.podWith(ns, "app", nil, nil, nil)
	}
	admin := identity{name: "admin", user: "system:serviceaccount:podguard:podguard-local-admin", token: e.runner.Token}
	// The operator of team-a also edits its namespace (Kubernetes' edit role), as a team
	// does: a restore creates nothing its caller could not create.
	operator := e.grantedIdentity(teamA, "operator", "podguard-operator", "edit")
	viewer := e.grantedIdentity(teamA, "viewer", "podguard-viewer")

	// A checkpoint of each namespace, by the admin.
	cps := map[string]string{}
	for _, ns := range []string{teamA, teamB, system} {
		req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns + "-" + teamA, Scope: events.Scope{Namespaces: []string{ns}}}}
		ev := newEvent(events.ProtectRequested, req)
		if code, _, res := e.ask(ev, admin.token); code != http.StatusAccepted {
			t.Fatalf("the admin's protect of %s: %s", ns, res)
		}
		cps[ns] = choreographer.CheckpointID(req, ev)
		if f := e.finished(cps[ns], 2*time.Minute); f.RequestedBy != admin.user {
			t.Fatalf("checkpoint of %s requested by %q, want %q", ns, f.RequestedBy, admin.user)
		}
	}

	// What each role may do, as deploy/roles/roles.yaml grants it.
	may := func(who identity, verb, resource, ns string) bool {
		switch who.name {
		case "admin":
			return true
		case "operator":
			allowed := map[string][]string{"checkpoints": {"get", "list", "create", "delete"}, "restores": {"get", "list", "create"},
				"schedules": {"get", "list", "create", "update", "delete"}, "protectables": {"get", "list"}}
			return ns == teamA && slices.Contains(allowed[resource], verb)
		default:
			return ns == teamA && (verb == "get" || verb == "list") && slices.Contains([]string{"checkpoints", "restores", "schedules", "protectables"}, resource)
		}
	}
	type right struct{ verb, resource, ns string }
	type request struct {
		name   string
		ev     func() event.Event
		needs  []right
		answer int // the status when allowed
		writes bool
	}
	var requests []request
	for _, ns := range []string{teamA, teamB, system} {
		requests = append(requests,
			request{"protect " + ns, func() event.Event {
				return newEvent(events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{ID: "matrix-" + ns, Scope: events.Scope{Namespaces: []string{ns}}}})
			}, []right{{"create", "checkpoints", ns}}, http.StatusAccepted, true},
			request{"schedule " + ns, func() event.Event {
				return newEvent(events.ScheduleSet, events.Schedule{ID: "matrix-" + ns, Plan: events.Plan{ID: "matrix-" + ns, Scope: events.Scope{Namespaces: []string{ns}}},
					Trigger: events.Trigger{Pattern: "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=1"}})
			}, []right{{"create", "schedules", ns}}, http.StatusAccepted, true},
			request{"list pods of " + ns, func() event.Event {
				return newEvent(events.PodsList, events.PodsListRequest{Scope: events.Scope{Namespaces: []string{ns}}})
			}, []right{{"list", "protectables", ns}}, http.StatusAccepted, false},
			request{"restore team-a's checkpoint into " + ns, func() event.Event {
				return newEvent(events.RestoreRequested, events.RestoreRequest{Checkpoint: cps[teamA], Parameters: events.RestoreParameters{Namespace: ns}})
			}, []right{{"get", "checkpoints", teamA}, {"create", "restores", ns}}, http.StatusAccepted, true},
			request{"delete " + ns + "'s checkpoint", func() event.Event {
				return newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cps[ns]})
			}, []right{{"delete", "checkpoints", ns}}, http.StatusAccepted, true},
			request{"show " + ns + "'s checkpoint", func() event.Event {
				return newEvent(events.CheckpointShow, map[string]string{"checkpoint": cps[ns]})
			}, []right{{"get", "checkpoints", ns}}, http.StatusOK, false},
		)
	}
	requests = append(requests,
		request{"list dead letters", func() event.Event { return newEvent(events.DeadLettersList, events.DeadLettersListRequest{}) },
			[]right{{"list", "deadletters", ""}}, http.StatusOK, false},
		request{"replay a dead letter", func() event.Event {
			return newEvent(events.DeadLetterReplay, events.DeadLetterReplayRequest{DeadLetter: "3f1a2b4c-0000-5000-8000-000000000000"})
		}, []right{{"create", "deadletters/replay", ""}}, http.StatusAccepted, true},
		request{"show the provider", func() event.Event { return newEvent(events.ProviderShow, map[string]any{}) },
			[]right{{"get", "providers", ""}}, http.StatusOK, false},
	)
	want := func(who identity, r request) int {
		if strings.HasPrefix(r.name, "restore") && strings.HasSuffix(r.name, system) {
			return http.StatusForbidden // a protected namespace, whoever asks
		}
		for _, n := range r.needs {
			if !may(who, n.verb, n.resource, n.ns) {
				return http.StatusForbidden
			}
		}
		return r.answer
	}

	// Every refusal, with nothing in flight: together they change nothing.
	namespaces := []string{teamA, teamB, system}
	before := e.world("", nil, namespaces)
	refused := 0
	for _, who := range []identity{admin, operator, viewer} {
		for _, r := range requests {
			if want(who, r) != http.StatusForbidden {
				continue
			}
			code, _, res := e.ask(r.ev(), who.token)
			if code != http.StatusForbidden || (!strings.Contains(res, "may not") && !strings.Contains(res, "never lands")) {
				t.Errorf("%s: %s: %s, want 403 with the reason", who.name, r.name, res)
			}
			if refused%8 == 0 {
				t.Logf("%s: %s: %s", who.name, r.name, res)
			}
			refused++
		}
	}
	anonymous := []struct{ what, token string }{ // "-": no Authorization header
		{"no token", "-"}, {"a token of another audience", e.token(teamA, "operator", "another-audience")}, {"not a token", "garbage"},
	}
	for _, a := range anonymous {
		ev := newEvent(events.ProtectRequested, events.ProtectRequest{Plan: events.Plan{ID: "anonymous", Scope: events.Scope{Namespaces: []string{teamA}}}})
		code, _, res := e.ask(ev, a.token)
		if code != http.StatusUnauthorized {
			t.Errorf("%s: %s, want 401", a.what, res)
		}
		t.Logf("%s: %s", a.what, res)
		refused++
	}
	resp, err := http.Get(e.runner.FrontDoor + "/api/checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/checkpoints without a token: %s", resp.Status)
	}
	if d := before.diff(e.world("", nil, namespaces)); d != "" {
		t.Fatalf("the refusals changed:\n%s", d)
	}
	t.Logf("%d requests refused, nothing changed", refused)

	// Lists show each caller what it may see.
	for _, who := range []identity{admin, operator, viewer} {
		code, reply, res := e.ask(newEvent(events.CheckpointsList, map[string]any{"limit": 100}), who.token)
		var listed struct {
			Checkpoints []checkpoint.Summary `json:"checkpoints"`
		}
		if code != http.StatusOK || reply.DataAs(&listed) != nil {
			t.Fatalf("%s lists checkpoints: %s", who.name, res)
		}
		var seen []string
		for _, c := range listed.Checkpoints {
			for ns, id := range cps {
				if c.ID == id {
					seen = append(seen, ns)
				}
			}
		}
		slices.Sort(seen)
		var visible []string
		for _, ns := range []string{teamA, teamB, system} {
			if may(who, "list", "checkpoints", ns) {
				visible = append(visible, ns)
			}
		}
		slices.Sort(visible)
		if !slices.Equal(seen, visible) {
			t.Errorf("%s sees the checkpoints of %v, want %v", who.name, seen, visible)
		}
	}

	// What is allowed is answered; reads at once, writes forwarded (the operator's run).
	for _, who := range []identity{viewer, operator, admin} {
		for _, r := range requests {
			w := want(who, r)
			if w == http.StatusForbidden || (r.writes && who.name == "admin") {
				continue // the admin's writes would race the operator's below
			}
			if strings.HasPrefix(r.name, "delete") || strings.HasPrefix(r.name, "restore") {
				continue // run in order below
			}
			if code, _, res := e.ask(r.ev(), who.token); code != w {
				t.Errorf("%s: %s: %s, want %d", who.name, r.name, res, w)
			}
		}
	}
	rid := e.restoreAs(operator, events.RestoreRequest{Checkpoint: cps[teamA], Parameters: events.RestoreParameters{Namespace: teamA}})
	if f := e.restoreFinished(rid, 3*time.Minute); f.Status != events.RestoreSuccess || f.RequestedBy != operator.user {
		t.Fatalf("the operator's restore: %+v", f)
	}
	ev := newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cps[teamA]})
	if code, _, res := e.ask(ev, operator.token); code != http.StatusAccepted {
		t.Fatalf("the operator's delete: %s", res)
	}
	if d := e.deleted(cps[teamA], 2*time.Minute); d.Status != events.StatusDeleted || d.RequestedBy != operator.user {
		t.Fatalf("the operator's deletion: %+v", d)
	}
}

// restoreAs asks the front door for a restore as who, and returns the restore's id.
func (e *env) restoreAs(who identity, req events.RestoreRequest) string {
	e.t.Helper()
	ev := newEvent(events.RestoreRequested, req)
	id := choreographer.RestoreID(ev)
	e.t.Cleanup(func() { e.removeRestoredVolumes(id) })
	if code, _, res := e.ask(ev, who.token); code != http.StatusAccepted {
		e.t.Fatalf("%s's restore: %s", who.name, res)
	}
	return id
}
