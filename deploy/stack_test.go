package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/shared/stacktest"
)

// knativeCRDs are the CRDs the manifests need; deploy/local/k8s.sh knative-crds applies
// them from the Knative Serving and Eventing module zips.
var knativeCRDs = []string{
	"services.serving.knative.dev", "brokers.eventing.knative.dev", "triggers.eventing.knative.dev",
	"eventpolicies.eventing.knative.dev", "pingsources.sources.knative.dev", "sinkbindings.sources.knative.dev",
}

// ensureKnativeCRDs applies the Knative CRDs to the stack's apiserver unless they are
// there.
func ensureKnativeCRDs(t *testing.T, kc string) {
	t.Helper()
	if exec.Command(kc, append([]string{"get", "crd", "-o", "name"}, knativeCRDs...)...).Run() == nil {
		return
	}
	start := time.Now()
	out, err := exec.Command("bash", filepath.Join("local", "k8s.sh"), "knative-crds").CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/local/k8s.sh knative-crds: %v\n%s", err, out)
	}
	t.Logf("applied the Knative CRDs in %s", time.Since(start).Round(time.Millisecond))
}

// retarget writes a kustomization that installs overlay into the namespace install
// and, for the namespace-scoped overlay, protects target: the same way a user would,
// with the overlay's own target-namespace transformer, and a copy of its
// namespace-replacements.yaml for the namespace inside the EventPolicies and the
// functions' Broker audience.
func retarget(t *testing.T, overlay, install, target string) string {
	t.Helper()
	dir := t.TempDir()
	abs, err := filepath.Abs(overlay)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, abs) // kustomize takes relative paths only
	if err != nil {
		t.Fatal(err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + install + "\nresources:\n  - " + rel + "\n"
	repl, err := os.ReadFile(filepath.Join(overlay, replacementsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, replacementsFile), repl, 0o644); err != nil {
		t.Fatal(err)
	}
	k += "replacements:\n  - path: " + replacementsFile + "\n"
	if target != "" {
		tr, err := os.ReadFile(filepath.Join(overlay, "target-namespace.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(tr, []byte("value: "+targetNamespace+"\n")) {
			t.Fatalf("%s/target-namespace.yaml does not set the namespace %s", overlay, targetNamespace)
		}
		tr = bytes.ReplaceAll(tr, []byte("value: "+targetNamespace+"\n"), []byte("value: "+target+"\n"))
		if err := os.WriteFile(filepath.Join(dir, "target-namespace.yaml"), tr, 0o644); err != nil {
			t.Fatal(err)
		}
		k += "transformers:\n  - target-namespace.yaml\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestServerDryRun applies each overlay with `kubectl apply --dry-run=server` to the
// local kube-apiserver with the Knative Serving and Eventing CRDs: every object must be
// accepted (schemas with strict field validation, RBAC, names).
func TestServerDryRun(t *testing.T) {
	st := stacktest.Load(t)
	kc := kubectl(t) // the stack's environment names it
	ensureKnativeCRDs(t, kc)
	cs := st.Kube(t)
	for _, tc := range []struct {
		overlay string
		target  bool
	}{{clusterOverlay, false}, {namespacedOverlay, true}} {
		t.Run(filepath.Base(tc.overlay), func(t *testing.T) {
			install := st.Namespace(t, cs, "pg-install")
			target := ""
			if tc.target {
				target = st.Namespace(t, cs, "pg-target")
			}
			dir := retarget(t, tc.overlay, install, target)
			m := render(t, dir)
			start := time.Now()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(kc, "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-k", dir)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("kubectl apply --dry-run=server -k %s: %v\n%s%s", tc.overlay, err, stdout.Bytes(), stderr.Bytes())
			}
			accepted := strings.Fields(stdout.String())
			var want []string
			for _, o := range m.objects {
				n := strings.ToLower(o.Kind)
				if g := o.group(); g != "" {
					n += "." + g
				}
				want = append(want, n+"/"+o.Metadata.Name)
			}
			slices.Sort(accepted)
			slices.Sort(want)
			if !slices.Equal(accepted, want) {
				t.Errorf("accepted %v\nwant     %v", accepted, want)
			}
			t.Logf("%s: %d objects accepted by the server in %s", tc.overlay, len(accepted), time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestRBACOnStack creates each overlay's roles and bindings for real and asks the API
// server (SubjectAccessReview) what every function's ServiceAccount may do: exactly the
// RBAC matrix, in the right namespaces, and nothing else of a wide set of verbs and
// resources.
func TestRBACOnStack(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	for _, tc := range []struct {
		overlay string
		want    []grant
		target  bool
	}{{clusterOverlay, clusterRBAC, false}, {namespacedOverlay, namespacedRBAC, true}} {
		t.Run(filepath.Base(tc.overlay), func(t *testing.T) {
			install := st.Namespace(t, cs, "pg-install")
			other := st.Namespace(t, cs, "pg-other")
			target, roles := other, "" // the cluster-wide install: any namespace
			if tc.target {
				target = st.Namespace(t, cs, "pg-target")
				roles = target
			}
			m := render(t, retarget(t, tc.overlay, install, roles))
			createRBAC(t, cs, m, "-"+install)

			type check struct {
				fn, verb, resource, ns, name string
				want                         bool
			}
			var checks []check
			allowed := func(fn, resource, verb, scope string) bool {
				for _, g := range tc.want {
					if g.fn == fn && g.resource == resource && g.scope == scope && slices.Contains(strings.Split(g.verbs, ","), verb) {
						return true
					}
				}
				return false
			}
			verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
			for fn := range functionMains {
				for _, verb := range verbs {
					for _, res := range []string{"pods", "persistentvolumeclaims", "secrets", "configmaps", "serviceaccounts"} {
						checks = append(checks,
							check{fn, verb, res, target, "", allowed(fn, res, verb, "target") || allowed(fn, res, verb, "cluster")},
							check{fn, verb, res, install, "", allowed(fn, res, verb, "cluster")})
						if tc.target {
							checks = append(checks, check{fn, verb, res, other, "", allowed(fn, res, verb, "cluster")})
						}
					}
					checks = append(checks,
						check{fn, verb, "persistentvolumes", "", "", allowed(fn, "persistentvolumes", verb, "cluster")},
						check{fn, verb, "namespaces", "", "", allowed(fn, "namespaces", verb, "cluster")},
						check{fn, verb, "namespaces", target, target, allowed(fn, "namespaces", verb, "cluster") || allowed(fn, "namespaces", verb, "target")},
						check{fn, verb, "namespaces", other, other, allowed(fn, "namespaces", verb, "cluster")})
				}
			}
			// The authorizer sees new roles and bindings through its informers: wait
			// until every grant is in effect.
			start := time.Now()
			waitFor(t, 20*time.Second, "the roles and bindings to take effect", func() bool {
				for _, c := range checks {
					if c.want && !may(t, cs, install, c.fn, c.verb, c.resource, c.ns, c.name) {
						return false
					}
				}
				return true
			})
			var (
				mu     sync.Mutex
				wg     sync.WaitGroup
				work   = make(chan check)
				denied int
			)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for c := range work {
						got := may(t, cs, install, c.fn, c.verb, c.resource, c.ns, c.name)
						mu.Lock()
						if !got {
							denied++
						}
						mu.Unlock()
						if got != c.want {
							t.Errorf("%s may %s %s (namespace %q, name %q): %v, want %v", c.fn, c.verb, c.resource, c.ns, c.name, got, c.want)
						}
					}
				}()
			}
			for _, c := range checks {
				work <- c
			}
			close(work)
			wg.Wait()
			t.Logf("%s: %d access reviews (%d allowed, %d denied) in %s", tc.overlay, len(checks), len(checks)-denied, denied, time.Since(start).Round(time.Millisecond))

			if tc.target {
				// A Role grants `get` on its own namespace object: recreate-pod reads the
				// target namespace before it restores into it. A real request, as the
				// ServiceAccount.
				rc, err := st.KubeConfig().RESTConfig(nil)
				if err != nil {
					t.Fatal(err)
				}
				rc.Impersonate.UserName = "system:serviceaccount:" + install + ":podguard-recreate-pod"
				sa, err := kubernetes.NewForConfig(rc)
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				if _, err := sa.CoreV1().Namespaces().Get(ctx, target, metav1.GetOptions{}); err != nil {
					t.Errorf("recreate-pod reads its target namespace: %v", err)
				}
				if _, err := sa.CoreV1().Namespaces().Get(ctx, other, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
					t.Errorf("recreate-pod reads namespace %s: %v, want forbidden", other, err)
				}
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("waited %s for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// may asks the API server whether the ServiceAccount of fn in namespace install may do
// verb on resource.
func may(t *testing.T, cs kubernetes.Interface, install, fn, verb, resource, ns, name string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + install + ":podguard-" + fn,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + install, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Resource: resource, Name: name,
		},
	}}
	res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("access review: %v", err)
		return false
	}
	return res.Status.Allowed
}

// createRBAC creates the roles and bindings of a rendered install. Cluster-scoped ones
// get suffix, so that runs in parallel do not share them, and are deleted at the end;
// namespaced ones go with their namespace.
func createRBAC(t *testing.T, cs kubernetes.Interface, m *manifests, suffix string) {
	t.Helper()
	ctx := context.Background()
	rb := cs.RbacV1()
	for _, o := range m.all(rbacGroup, "ClusterRole") {
		var r rbacv1.ClusterRole
		o.decode(t, &r)
		r.Name += suffix
		if _, err := rb.ClusterRoles().Create(ctx, &r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rb.ClusterRoles().Delete(context.Background(), r.Name, metav1.DeleteOptions{}) })
	}
	for _, o := range m.all(rbacGroup, "ClusterRoleBinding") {
		var b rbacv1.ClusterRoleBinding
		o.decode(t, &b)
		b.Name += suffix
		b.RoleRef.Name += suffix
		if _, err := rb.ClusterRoleBindings().Create(ctx, &b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rb.ClusterRoleBindings().Delete(context.Background(), b.Name, metav1.DeleteOptions{}) })
	}
	for _, o := range m.all(rbacGroup, "Role") {
		var r rbacv1.Role
		o.decode(t, &r)
		if _, err := rb.Roles(r.Namespace).Create(ctx, &r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range m.all(rbacGroup, "RoleBinding") {
		var b rbacv1.RoleBinding
		o.decode(t, &b)
		if b.RoleRef.Kind == "ClusterRole" {
			b.RoleRef.Name += suffix
		}
		if _, err := rb.RoleBindings(b.Namespace).Create(ctx, &b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKnativeWebhookValidation validates every Knative object of each overlay the way
// the Serving and Eventing admission webhooks would (deploy/local/tools/knative, at
// KNATIVE_VERSION): what a server dry run against the CRDs alone cannot see, such as
// PodSpec fields behind feature flags or a timeout above the maximum. It runs with the
// stack tests (the first build of the validator takes minutes; later runs seconds).
func TestKnativeWebhookValidation(t *testing.T) {
	stacktest.Load(t)
	tool := filepath.Join("local", "tools", "knative")
	mod, err := os.ReadFile(filepath.Join(tool, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	v := stackSetting(t, "KNATIVE_VERSION")
	for _, m := range []string{"knative.dev/serving", "knative.dev/eventing"} {
		if !strings.Contains(string(mod), "\t"+m+" "+v+"\n") {
			t.Fatalf("%s/go.mod does not require %s %s (KNATIVE_VERSION): cd %s && go get %s@%s", tool, m, v, tool, m, v)
		}
	}
	for _, overlay := range []string{clusterOverlay, namespacedOverlay} {
		m := render(t, overlay)
		start := time.Now()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("go", "run", ".")
		cmd.Dir = tool
		cmd.Stdin = bytes.NewReader(m.yaml)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		valid := 0
		for _, line := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(line, "valid ") {
				valid++
			}
		}
		if err != nil {
			t.Errorf("%s: the Knative webhooks would refuse it: %v\n%s%s", overlay, err, stdout.Bytes(), stderr.Bytes())
			continue
		}
		// Every Knative object is validated, except EventPolicies while the validator does
		// not know them (the server dry run checks them against their CRD; Knative's
		// webhook also refuses them unless authentication-oidc is enabled).
		want, policies := 0, 0
		for _, o := range m.objects {
			switch {
			case o.Kind == "EventPolicy":
				policies++
			case o.group() == servingGroup || o.group() == eventingGroup || o.group() == sourcesGroup:
				want++
			}
		}
		if valid != want && valid != want+policies {
			t.Errorf("%s: %d Knative objects validated, want %d (and %d EventPolicies, if validated):\n%s", overlay, valid, want, policies, stdout.Bytes())
		}
		t.Logf("%s: %d Knative objects valid for the webhooks (%s)", overlay, valid, time.Since(start).Round(time.Millisecond))
	}
}
