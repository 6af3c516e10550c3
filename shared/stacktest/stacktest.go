// Package stacktest connects tests and benchmarks to the real local stack that
// `make stack-up` starts (kube-apiserver with kwok, Keystone, Swift, Cinder). It reads the
// stack's environment file; without a stack, tests skip, unless PODGUARD_REQUIRE_STACK=1
// (set by `make test`), where they fail.
package stacktest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
)

// KwokNode is the fake node on which pods reach Running.
const KwokNode = "kwok-node-0"

// Stack is the local stack's environment.
type Stack struct {
	Env map[string]string
}

// EnvFile is where the stack's environment is read from.
func EnvFile() string {
	if f := os.Getenv("PODGUARD_STACK_ENV"); f != "" {
		return f
	}
	dir := cmp.Or(os.Getenv("STACK_DIR"), os.Getenv("PODGUARD_STACK_DIR")) // as deploy/local/stack.env
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state", "podguard", "stack")
	}
	return filepath.Join(dir, "env")
}

// RepoRoot is the checkout a test runs in: the nearest folder above it with a go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// Load reads the stack environment and exports it into the test's environment.
func Load(t testing.TB) *Stack {
	t.Helper()
	f := EnvFile()
	required := os.Getenv("PODGUARD_REQUIRE_STACK") == "1"
	if _, err := os.Stat(f); err != nil {
		if required {
			t.Fatalf("the local stack is required but %s is missing: run `make stack-up`", f)
		}
		t.Skipf("no local stack (%s); run `make stack-up`, or `make test` which starts it", f)
	}
	// Let the shell interpret the file, exactly as a user sourcing it would, in an empty
	// environment so that only what the file sets comes back.
	cmd := exec.Command("bash", "-c", `set -a; . "$1" >/dev/null; env -0`, "bash", f)
	cmd.Env = []string{"HOME=" + os.Getenv("HOME"), "PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("read %s: %v", f, err)
	}
	s := &Stack{Env: map[string]string{}}
	for _, kv := range strings.Split(string(out), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "_" || k == "SHLVL" || k == "PWD" || kv == cmd.Env[0] || kv == cmd.Env[1] {
			continue
		}
		s.Env[k] = v
		t.Setenv(k, v)
	}
	if s.Env["KUBECONFIG"] == "" {
		t.Fatalf("%s does not set KUBECONFIG", f)
	}
	return s
}

// KubeConfig is the client configuration of the stack's kube-apiserver.
func (s *Stack) KubeConfig() kube.Config {
	return kube.Config{Kubeconfig: s.Env["KUBECONFIG"], QPS: 500, Burst: 1000, PageSize: 500}
}

// Kube returns a client of the stack's kube-apiserver.
func (s *Stack) Kube(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kube.NewClientset(context.Background(), s.KubeConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// OpenStack is the Keystone configuration of the stack (OS_* variables).
func (s *Stack) OpenStack() openstack.Config {
	return openstack.Config{Region: s.Env["OS_REGION_NAME"], Interface: "public"}
}

// Bank is a bank configuration on the stack's Swift with the given auth, in a container
// of its own.
func (s *Stack) Bank(auth, container string) bank.Config {
	return bank.Config{Auth: auth, Container: container, AuthURL: s.Env["ST_AUTH"], User: s.Env["ST_USER"], Key: s.Env["ST_KEY"],
		StorageURL: s.Env["PODGUARD_SWIFT_NOAUTH_URL"]}
}

// Namespace creates a namespace named prefix-<unique> and deletes it when the test ends.
func (s *Stack) Namespace(t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// WaitPod watches a pod until cond holds, failing the test after timeout.
func WaitPod(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatalf("list pod %s/%s: %v", ns, name, err)
		}
		if len(l.Items) == 1 && cond(&l.Items[0]) {
			return &l.Items[0]
		}
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
		if err != nil {
			t.Fatalf("watch pod %s/%s: %v", ns, name, err)
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && cond(p) {
				w.Stop()
				return p
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("pod %s/%s: condition not met within %s", ns, name, timeout)
		}
	}
}

// Running reports whether a pod is Running.
func Running(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

// IgnoreExists treats AlreadyExists as success.
func IgnoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// WaitClaimBound watches a claim until it is Bound.
func WaitClaimBound(t testing.TB, cs kubernetes.Interface, ns, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	w, err := cs.CoreV1().PersistentVolumeClaims(ns).Watch(ctx, metav1.SingleObject(metav1.ObjectMeta{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if c, ok := ev.Object.(*corev1.PersistentVolumeClaim); ok && c.Status.Phase == corev1.ClaimBound {
			return
		}
	}
	t.Fatalf("claim %s/%s not bound within %s", ns, name, timeout)
}
