package access_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/stacktest"
)

// serviceAccountToken is a token of the service account ns/name for audience, from the
// TokenRequest API.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name, audience string) string {
	t.Helper()
	expiry := int64(600) // the least the apiserver grants
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of %s/%s for %s: %v", ns, name, audience, err)
	}
	return tr.Status.Token
}

func TestAccessAgainstTheLocalStack(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	ctx := context.Background()
	ns, other := st.Namespace(t, cs, "access"), st.Namespace(t, cs, "access-other")
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "protector"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Who.
	tokens := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), "podguard-test", access.ReviewOptions{})
	c, err := tokens.Authenticate(ctx, serviceAccountToken(t, cs, ns, sa.Name, "podguard-test"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "system:serviceaccount:"+ns+":protector" || c.UID != string(sa.UID) ||
		!slices.Contains(c.Groups, "system:serviceaccounts:"+ns) || !slices.Contains(c.Groups, "system:authenticated") {
		t.Fatalf("caller %+v", c)
	}
	_, err = tokens.Authenticate(ctx, serviceAccountToken(t, cs, ns, sa.Name, "other"))
	if !errors.Is(err, access.ErrUnauthenticated) {
		t.Fatalf("token for another audience: %v", err)
	}
	t.Logf("token for another audience: %v", err)
	if _, err := tokens.Authenticate(ctx, "not-a-token"); !errors.Is(err, access.ErrUnauthenticated) {
		t.Fatalf("bad token: %v", err)
	}

	// What.
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "podguard-test-" + ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{access.Group}, Resources: []string{"checkpoints"}, Verbs: []string{"create"}}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cs.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "protect"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	create := func(ns string) access.Attributes {
		return access.Attributes{Verb: "create", Resource: "checkpoints", Namespace: ns}
	}
	// The RBAC authorizer sees the binding once its informer has: ask until it does,
	// each time afresh since a refusal would be kept.
	var d access.Decision
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		d, err = access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{}).Allowed(ctx, c, create(ns))
		return d.Allowed, err
	}); err != nil {
		t.Fatalf("create checkpoints in %s: %+v, %v", ns, d, err)
	}
	t.Logf("create checkpoints in %s: %+v", ns, d)

	rights := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{})
	for _, tc := range []struct {
		at      access.Attributes
		allowed bool
	}{
		{create(ns), true},
		{create(other), false},
		{create(""), false},
		{access.Attributes{Verb: "delete", Resource: "checkpoints", Namespace: ns}, false},
		{access.Attributes{Verb: "create", Resource: "restores", Namespace: ns}, false},
	} {
		d, err := rights.Allowed(ctx, c, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != tc.allowed {
			t.Errorf("%s: %+v", tc.at, d)
		}
	}
	d, err = rights.AllowedAll(ctx, c, []access.Attributes{create(ns), create(other)})
	if err != nil {
		t.Fatal(err)
	}
	if want := c.Username + " may not " + create(other).String(); d.Allowed || !strings.HasPrefix(d.Reason, want) {
		t.Fatalf("AllowedAll: %+v, want the reason %q", d, want)
	}

	// A token of a service account that is gone is refused, though it has not expired.
	// The apiserver looks service accounts up in its informer's cache, which sees
	// the deletion a moment later; each try is a new reviewer, so nothing of
	// podguard's caches an answer.
	token := serviceAccountToken(t, cs, ns, sa.Name, "podguard-test")
	if err := cs.CoreV1().ServiceAccounts(ns).Delete(ctx, sa.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if werr := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err = access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), "podguard-test", access.ReviewOptions{}).Authenticate(ctx, token)
		return err != nil, nil
	}); werr != nil || !errors.Is(err, access.ErrUnauthenticated) {
		t.Fatalf("token of a deleted service account: %v", err)
	}
	t.Logf("token of a deleted service account: %v", err)
}
