package e2e

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
)

// TestRestoresWithinTheCallersRights: a restore creates nothing its caller could not
// create. A checkpoint holds a privileged pod of team-a, running as team-a's
// ServiceAccount runner. A deployer who may create pods and ServiceAccounts in team-a but
// not act as them (impersonate) is refused its restore into team-a (403). The team's operator (podguard's
// operator role and Kubernetes' edit role in team-a) restores it:
//   - into team-a once team-a enforces Pod Security "restricted": the apiserver refuses
//     the pod (asked with a dry run before anything of it is made), the restore fails with
//     the reason, and team-a holds nothing new;
//   - into kube-system, into team-b, into a namespace to be created, and into team-a
//     asking to create namespaces: refused at the front door (403) with what is missing,
//     nothing created.
//
// The admin (the runner's user: podguard's admin and the cluster's, runner.Access) restores it into a new namespace of
// its asking (create_namespace), where it runs; without create_namespace, into a
// namespace that does not exist, its pod fails with the reason and no namespace appears.
func TestRestoresWithinTheCallersRights(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	teamA := e.st.Namespace(t, e.kube, "rights-a")
	teamB := e.st.Namespace(t, e.kube, "rights-b")
	if _, err := e.kube.CoreV1().ServiceAccounts(teamA).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "runner"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.podWith(teamA, "legacy", nil, nil, func(p *corev1.Pod) {
		privileged := true
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
		p.Spec.ServiceAccountName = "runner"
	})
	cp, _ := e.protect(teamA)
	operator := e.grantedIdentity(teamA, "operator", "podguard-operator", "edit")
	// A deployer may create pods, claims and ServiceAccounts in team-a, but not act as
	// its ServiceAccounts.
	deployerRole := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""},
		Resources: []string{"pods", "persistentvolumeclaims", "serviceaccounts", "configmaps", "secrets"}, Verbs: []string{"create", "get", "list"}}}}
	if _, err := e.kube.RbacV1().Roles(teamA).Create(ctx, deployerRole, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deployer := e.grantedIdentity(teamA, "deployer", "podguard-operator")
	if _, err := e.kube.RbacV1().RoleBindings(teamA).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer-role"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "deployer"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "deployer", Namespace: teamA}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// team-a now enforces the restricted level (the pod that runs stays; new ones are judged).
	ns, err := e.kube.CoreV1().Namespaces().Get(ctx, teamA, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := e.kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	missing := teamA + "-dr"
	namespaces := []string{teamA, teamB, "kube-system", missing}
	before := e.world(cp, nil, namespaces)

	// Refused at the front door.
	for _, c := range []struct {
		name   string
		params events.RestoreParameters
		reason string
	}{
		{"into kube-system", events.RestoreParameters{Namespace: "kube-system"}, "protected"},
		{"into team-b", events.RestoreParameters{Namespace: teamB}, `may not create restores.podguard.dev in namespace "` + teamB + `"`},
		{"into a namespace to create", events.RestoreParameters{Namespace: missing, CreateNamespace: true}, `may not create restores.podguard.dev in namespace "` + missing + `"`},
		{"into team-a, asking to create namespaces", events.RestoreParameters{Namespace: teamA, CreateNamespace: true}, "may not create namespaces cluster-wide"},
	} {
		ev := newEvent(events.RestoreRequested, events.RestoreRequest{Checkpoint: cp, Parameters: c.params})
		code, _, text := e.ask(ev, operator.token)
		if code != http.StatusForbidden || !strings.Contains(text, c.reason) {
			t.Errorf("the operator's restore %s: %d %s, want 403 naming %q", c.name, code, text, c.reason)
			continue
		}
		t.Logf("the operator's restore %s: %s", c.name, text)
	}

	// The deployer may not run a pod as team-a's ServiceAccount runner: refused. The
	// binding may take a moment to reach the apiserver's authorizer, which the answer
	// would say (create pods); it is asked until only the impersonation is missing.
	ev := newEvent(events.RestoreRequested, events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: teamA,
		Names: map[string]string{teamA + ":legacy": "legacy-deployed"}}})
	want := `may not impersonate serviceaccounts "runner" in namespace "` + teamA + `"`
	until(t, 30*time.Second, "the deployer's refusal naming the impersonation", func() (bool, error) {
		code, _, text := e.ask(ev, deployer.token)
		if code == http.StatusForbidden && strings.Contains(text, want) {
			t.Logf("the deployer's restore into team-a: %s", text)
			return true, nil
		}
		if code != http.StatusForbidden {
			t.Fatalf("the deployer's restore into team-a: %d %s, want 403 naming %q", code, text, want)
		}
		return false, nil
	})

	// Into team-a, which now refuses privileged pods: the apiserver says no.
	rid := e.restoreAs(operator, events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{
		Namespace: teamA, Names: map[string]string{teamA + ":legacy": "legacy-again"}}})
	res := e.restoreFinished(rid, 2*time.Minute)
	if res.Status != events.RestoreFail || len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Reason, "violates PodSecurity") ||
		!strings.Contains(res.Failed[0].Reason, "privileged") {
		t.Fatalf("the operator's restore into restricted team-a: %+v", res)
	}
	t.Logf("the operator's restore into restricted team-a: %s", res.Failed[0].Reason)
	if _, err := e.kube.CoreV1().Pods(teamA).Get(ctx, "legacy-again", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused pod exists: %v", err)
	}

	// The admin, into a namespace that does not exist, without asking to create it.
	rid = e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: missing}}, 1)
	res = e.restoreFinished(rid, 2*time.Minute)
	if res.Status != events.RestoreFail || len(res.Failed) != 2 { // the pod and its ServiceAccount
		t.Fatalf("a restore into a missing namespace without create_namespace: %+v", res)
	}
	for _, f := range res.Failed {
		if !strings.Contains(f.Reason, "create_namespace") {
			t.Fatalf("a restore into a missing namespace without create_namespace: %+v", res)
		}
	}
	if after := e.world(cp, nil, namespaces); !reflect.DeepEqual(before.Namespaces, after.Namespaces) || !reflect.DeepEqual(before.PVs, after.PVs) {
		t.Fatalf("refused restores changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}

	// The admin, asking for the namespace: it runs there.
	dst := teamA + "-new"
	rid = e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: dst, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 2*time.Minute); res.Status != events.RestoreSuccess {
		t.Fatalf("the admin's restore into a new namespace: %+v", res)
	}
	pods := e.restoredPods(dst, rid)
	if len(pods) != 1 {
		t.Fatalf("restored pods in %s: %v", dst, pods)
	}
	for _, p := range pods {
		if c := p.Spec.Containers[0].SecurityContext; c == nil || c.Privileged == nil || !*c.Privileged || p.Status.Phase != corev1.PodRunning {
			t.Fatalf("the admin's restored pod: %+v %s", p.Spec.Containers[0].SecurityContext, p.Status.Phase)
		}
	}
}
