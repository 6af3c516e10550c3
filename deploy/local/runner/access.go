package runner

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/podguard/podguard/shared/kube"
)

// Access is how the runner's user reaches the front door, as an operator would set it
// up: podguard's ClusterRoles (deploy/roles) installed on the apiserver, and a
// ServiceAccount of the user's bound to podguard-admin and to cluster-admin (a restore
// asks its caller's Kubernetes rights for what it creates).
type Access struct {
	// Roles is the folder of the ClusterRoles to install (deploy/roles).
	Roles string
	// Namespace and ServiceAccount name the user's identity (podguard, podguard-local-admin
	// when empty).
	Namespace, ServiceAccount string
	// Audience is the front door's (FRONT_DOOR_AUDIENCE; podguard when empty).
	Audience string
}

// Token lifetime of the runner's user: a long test run or demo, no longer.
const adminTokenSeconds = 6 * 3600

func (a *Access) defaults() {
	if a.Namespace == "" {
		a.Namespace = "podguard"
	}
	if a.ServiceAccount == "" {
		a.ServiceAccount = "podguard-local-admin"
	}
	if a.Audience == "" {
		a.Audience = os.Getenv("FRONT_DOOR_AUDIENCE")
	}
	if a.Audience == "" {
		a.Audience = "podguard"
	}
}

// setUp installs the roles and the user's identity, and returns a token of the user's
// for the front door.
func (a Access) setUp(ctx context.Context) (string, error) {
	a.defaults()
	var kc kube.Config
	kc.Kubeconfig = os.Getenv("KUBECONFIG")
	kc.QPS, kc.Burst = 50, 100
	cs, err := kube.NewClientset(ctx, kc)
	if err != nil {
		return "", err
	}
	if err := applyRoles(ctx, cs, a.Roles); err != nil {
		return "", err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: a.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("namespace %s: %w", a.Namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: a.ServiceAccount, Namespace: a.Namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(a.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("service account %s/%s: %w", a.Namespace, a.ServiceAccount, err)
	}
	// The user is the operator who installed podguard: podguard's admin, and an admin of
	// the cluster, whose rights a restore asks of its caller (it creates nothing its
	// caller could not create).
	for name, role := range map[string]string{a.ServiceAccount: "podguard-admin", a.ServiceAccount + "-cluster-admin": "cluster-admin"} {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: a.ServiceAccount, Namespace: a.Namespace}},
		}
		if err := apply(binding.Name, func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
			return err
		}, func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Update(ctx, binding, metav1.UpdateOptions{})
			return err
		}); err != nil {
			return "", err
		}
	}
	seconds := int64(adminTokenSeconds)
	tr, err := cs.CoreV1().ServiceAccounts(a.Namespace).CreateToken(ctx, a.ServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{a.Audience}, ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of %s/%s: %w", a.Namespace, a.ServiceAccount, err)
	}
	return tr.Status.Token, nil
}

// applyRoles creates or updates the ClusterRoles of the YAML files in dir.
func applyRoles(ctx context.Context, cs kubernetes.Interface, dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, "roles.yaml"))
	if err != nil {
		return fmt.Errorf("podguard's roles: %w", err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
			return fmt.Errorf("podguard's roles: %w", err)
		}
		if role.Kind != "ClusterRole" {
			continue
		}
		if err := apply(role.Name, func() error {
			_, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{})
			return err
		}, func() error {
			_, err := cs.RbacV1().ClusterRoles().Update(ctx, &role, metav1.UpdateOptions{})
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// apply creates an object, or updates it when it exists.
func apply(name string, create, update func() error) error {
	err := create()
	if apierrors.IsAlreadyExists(err) {
		err = update()
	}
	if err != nil {
		return fmt.Errorf("apply %s: %w", name, err)
	}
	return nil
}

// Read sends a GET of path (such as /api/checkpoints/<id>) to the front door as the
// runner's user.
func (r *Runner) Read(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.FrontDoor+path, nil)
	if err != nil {
		return nil, err
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	return http.DefaultClient.Do(req)
}
