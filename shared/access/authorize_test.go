package access_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podguard/podguard/shared/access"
)

// accessReviews is a fake clientset whose SubjectAccessReviews answer with respond;
// reviews counts them.
func accessReviews(t *testing.T, respond func(authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error)) (*fake.Clientset, *atomic.Int32) {
	t.Helper()
	cs := fake.NewClientset()
	var reviews atomic.Int32
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		st, err := respond(sar.Spec)
		if err != nil {
			return true, nil, err
		}
		sar.Status = st
		return true, sar, nil
	})
	return cs, &reviews
}

var caller = access.Caller{
	Username: "system:serviceaccount:team-a:viewer",
	UID:      "0b7f4c6e-4d1e-4f7a-9a57-3f2d1c9e8b10",
	Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"},
	Extra:    map[string][]string{"authentication.kubernetes.io/credential-id": {"JTI=42"}},
}

// onlyTeamA allows create checkpoints in team-a, and nothing else.
func onlyTeamA(s authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
	ra := s.ResourceAttributes
	if ra.Group == access.Group && ra.Resource == "checkpoints" && ra.Verb == "create" && ra.Namespace == "team-a" && ra.Subresource == "" {
		return authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: `RBAC: allowed by RoleBinding "protect/team-a"`}, nil
	}
	return authorizationv1.SubjectAccessReviewStatus{}, nil
}

func TestAllowed(t *testing.T) {
	create := func(ns string) access.Attributes {
		return access.Attributes{Verb: "create", Resource: "checkpoints", Namespace: ns}
	}
	for _, tc := range []struct {
		name   string
		at     access.Attributes
		status authorizationv1.SubjectAccessReviewStatus
		want   access.Decision
	}{
		{
			name: "allowed", at: create("team-a"),
			status: authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: `RBAC: allowed by RoleBinding "protect/team-a"`},
			want:   access.Decision{Allowed: true, Reason: `RBAC: allowed by RoleBinding "protect/team-a"`},
		},
		{
			name: "allowed without a reason", at: create("team-a"),
			status: authorizationv1.SubjectAccessReviewStatus{Allowed: true},
			want:   access.Decision{Allowed: true},
		},
		{
			name: "refused without a reason", at: create("team-a"),
			want: access.Decision{Reason: `system:serviceaccount:team-a:viewer may not create checkpoints.podguard.dev in namespace "team-a"`},
		},
		{
			name: "refused cluster-wide", at: access.Attributes{Verb: "create", Resource: "deadletters", Subresource: "replay"},
			want: access.Decision{Reason: `system:serviceaccount:team-a:viewer may not create deadletters.podguard.dev/replay cluster-wide`},
		},
		{
			name: "denied with a reason and an evaluation error", at: create("team-a"),
			status: authorizationv1.SubjectAccessReviewStatus{Denied: true, Reason: "denied by policy", EvaluationError: "webhook timed out"},
			want:   access.Decision{Reason: "denied by policy; webhook timed out"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec authorizationv1.SubjectAccessReviewSpec
			cs, _ := accessReviews(t, func(s authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
				spec = s
				return tc.status, nil
			})
			a := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{})
			d, err := a.Allowed(context.Background(), caller, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.want {
				t.Errorf("got %+v, want %+v", d, tc.want)
			}
			ra := spec.ResourceAttributes
			if spec.User != caller.Username || spec.UID != caller.UID || !slices.Equal(spec.Groups, caller.Groups) ||
				!slices.Equal(spec.Extra["authentication.kubernetes.io/credential-id"], authorizationv1.ExtraValue{"JTI=42"}) ||
				ra == nil || *ra != (authorizationv1.ResourceAttributes{Group: "podguard.dev", Verb: tc.at.Verb, Resource: tc.at.Resource, Subresource: tc.at.Subresource, Namespace: tc.at.Namespace}) {
				t.Errorf("reviewed %+v (resource %+v)", spec, ra)
			}
		})
	}
}

func TestAllowedKeepsDecisions(t *testing.T) {
	clk := newClock()
	cs, reviews := accessReviews(t, onlyTeamA)
	a := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{Now: clk.now})
	ctx := context.Background()
	reordered := caller
	reordered.Groups = []string{"system:authenticated", "system:serviceaccounts:team-a", "system:serviceaccounts"}
	other := caller
	other.Extra = map[string][]string{"authentication.kubernetes.io/credential-id": {"JTI=43"}}
	check := func(c access.Caller, ns string, allowed bool, want int32) {
		t.Helper()
		d, err := a.Allowed(ctx, c, access.Attributes{Verb: "create", Resource: "checkpoints", Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != allowed || reviews.Load() != want {
			t.Fatalf("%s in %s at +%s: %+v after %d reviews, want allowed=%v after %d", c.Extra, ns, clk.t.Sub(newClock().t), d, reviews.Load(), allowed, want)
		}
	}
	check(caller, "team-a", true, 1)
	check(caller, "team-b", false, 2)
	check(caller, "team-a", true, 2)    // kept
	check(reordered, "team-a", true, 2) // the same caller
	check(caller, "team-b", false, 2)   // refusals are kept too
	check(other, "team-a", true, 3)     // another credential
	clk.advance(9 * time.Second)
	check(caller, "team-a", true, 3)
	check(caller, "team-b", false, 3)
	clk.advance(time.Second)
	check(caller, "team-a", true, 4) // expired
	check(caller, "team-b", false, 5)
	check(caller, "team-a", true, 5)
}

func TestAllowedKeepsABoundedNumber(t *testing.T) {
	cs, reviews := accessReviews(t, onlyTeamA)
	a := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{Size: 2})
	for _, ns := range []string{"a", "b", "c", "c", "b", "a"} {
		if _, err := a.Allowed(context.Background(), caller, access.Attributes{Verb: "get", Resource: "checkpoints", Namespace: ns}); err != nil {
			t.Fatal(err)
		}
	}
	if reviews.Load() != 4 {
		t.Fatalf("%d reviews, want 4", reviews.Load())
	}
}

func TestAllowedKeepsNoFailures(t *testing.T) {
	down := errors.New("the server is currently unable to handle the request")
	var fail atomic.Bool
	fail.Store(true)
	cs, reviews := accessReviews(t, func(s authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
		if fail.Load() {
			return authorizationv1.SubjectAccessReviewStatus{}, down
		}
		return onlyTeamA(s)
	})
	a := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{})
	at := access.Attributes{Verb: "create", Resource: "checkpoints", Namespace: "team-a"}
	_, err := a.Allowed(context.Background(), caller, at)
	want := `review whether system:serviceaccount:team-a:viewer may create checkpoints.podguard.dev in namespace "team-a": the server is currently unable to handle the request`
	if !errors.Is(err, down) || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if _, err := a.AllowedAll(context.Background(), caller, []access.Attributes{at}); !errors.Is(err, down) {
		t.Fatalf("AllowedAll: %v", err)
	}
	fail.Store(false)
	if d, err := a.Allowed(context.Background(), caller, at); err != nil || !d.Allowed || reviews.Load() != 3 {
		t.Fatalf("after recovery: %+v, %v, %d reviews", d, err, reviews.Load())
	}
}

func TestAllowedAll(t *testing.T) {
	at := func(verb, ns string) access.Attributes {
		return access.Attributes{Verb: verb, Resource: "checkpoints", Namespace: ns}
	}
	for _, tc := range []struct {
		name    string
		ats     []access.Attributes
		want    access.Decision
		reviews int32
	}{
		{name: "all allowed", ats: []access.Attributes{at("create", "team-a"), at("create", "team-a")}, want: access.Decision{Allowed: true}, reviews: 1},
		{
			name:    "first refusal",
			ats:     []access.Attributes{at("create", "team-a"), at("create", "team-b"), at("create", "")},
			want:    access.Decision{Reason: `system:serviceaccount:team-a:viewer may not create checkpoints.podguard.dev in namespace "team-b"`},
			reviews: 2,
		},
		{
			name:    "refusal with the apiserver's reason",
			ats:     []access.Attributes{at("delete", "team-a")},
			want:    access.Decision{Reason: `system:serviceaccount:team-a:viewer may not delete checkpoints.podguard.dev in namespace "team-a": no deletes on Fridays`},
			reviews: 1,
		},
		{name: "nothing to check", want: access.Decision{Reason: "no rights to check"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, reviews := accessReviews(t, func(s authorizationv1.SubjectAccessReviewSpec) (authorizationv1.SubjectAccessReviewStatus, error) {
				if s.ResourceAttributes.Verb == "delete" {
					return authorizationv1.SubjectAccessReviewStatus{Denied: true, Reason: "no deletes on Fridays"}, nil
				}
				return onlyTeamA(s)
			})
			a := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{})
			d, err := a.AllowedAll(context.Background(), caller, tc.ats)
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.want || reviews.Load() != tc.reviews {
				t.Errorf("got %+v after %d reviews, want %+v after %d", d, reviews.Load(), tc.want, tc.reviews)
			}
		})
	}
}

func TestAllowedWithoutACallerOrAVerb(t *testing.T) {
	a := access.NewAuthorizer(access.SubjectAccessReviewFunc(func(context.Context, *authorizationv1.SubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
		t.Fatal("reviewed")
		return nil, nil
	}), access.AuthorizerOptions{})
	ctx := context.Background()
	if d, err := a.Allowed(ctx, access.Caller{}, access.Attributes{Verb: "get", Resource: "providers"}); err != nil || d.Allowed || d.Reason != "no authenticated caller" {
		t.Errorf("no caller: %+v, %v", d, err)
	}
	if _, err := a.Allowed(ctx, caller, access.Attributes{Resource: "providers"}); err == nil {
		t.Error("no verb: no error")
	}
}

func TestAttributesString(t *testing.T) {
	for at, want := range map[access.Attributes]string{
		{Verb: "create", Resource: "checkpoints", Namespace: "team-a"}:         `create checkpoints.podguard.dev in namespace "team-a"`,
		{Verb: "get", Resource: "providers"}:                                   `get providers.podguard.dev cluster-wide`,
		{Verb: "create", Resource: "deadletters", Subresource: "replay"}:       `create deadletters.podguard.dev/replay cluster-wide`,
		{Verb: "list", Resource: "restores", Subresource: "x", Namespace: "b"}: `list restores.podguard.dev/x in namespace "b"`,
	} {
		if got := at.String(); got != want {
			t.Errorf("%#v: %s, want %s", at, got, want)
		}
	}
}
