package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podguard/podguard/events"
)

// modulePath is the Go module the ko:// images name packages of.
const modulePath = "github.com/podguard/podguard"

// repoRoot is the repository, seen from this package's directory (where go test runs).
const repoRoot = ".."

// Overlays a user installs, relative to this directory.
const (
	clusterOverlay    = "overlays/cluster"
	namespacedOverlay = "overlays/namespaced"
)

// installNamespace is where both overlays install podguard; targetNamespace is the
// namespace the namespaced overlay protects.
const (
	installNamespace = "podguard"
	targetNamespace  = "apps"
)

// functionMains maps each function's Knative Service to its main package.
var functionMains = map[string]string{
	events.FnListPods:         "functions/listpods/cmd/listpods",
	events.FnSnapshotMetadata: "functions/snapshotmetadata/cmd/snapshotmetadata",
	events.FnBackupVolume:     "functions/backupvolume/cmd/backupvolume",
	events.FnChoreographer:    "functions/choreographer/cmd/choreographer",
	events.FnFrontDoor:        "functions/frontdoor/cmd/front-door",
	events.FnRestoreVolume:    "functions/restorevolume/cmd/restorevolume",
	events.FnRecreatePod:      "functions/recreatepod/cmd/recreate-pod",
	events.FnDeleteBackup:     "functions/deletebackup/cmd/delete-backup",
	deadLetters:               "functions/deadletters/cmd/dead-letters",
}

// deadLetters is the Service every delivery spec names as its deadLetterSink.
const deadLetters = "dead-letters"

// kubectl is the kubectl that renders and applies the manifests: $PODGUARD_KUBECTL (the
// local stack's environment sets it), the one `make stack-build` builds, or kubectl on
// the PATH. Without one the test skips, unless PODGUARD_REQUIRE_STACK=1.
func kubectl(t testing.TB) string {
	t.Helper()
	if k := os.Getenv("PODGUARD_KUBECTL"); k != "" {
		return k
	}
	if v := stackSetting(t, "K8S_VERSION"); v != "" {
		cache := os.Getenv("PODGUARD_CACHE_DIR")
		if cache == "" {
			if dir, err := os.UserCacheDir(); err == nil {
				cache = filepath.Join(dir, "podguard")
			}
		}
		if k := filepath.Join(cache, "bin", "k8s-"+v, "kubectl"); cache != "" && isExecutable(k) {
			return k
		}
	}
	if k, err := exec.LookPath("kubectl"); err == nil {
		return k
	}
	if os.Getenv("PODGUARD_REQUIRE_STACK") == "1" {
		t.Fatal("no kubectl: run `make stack-build`, or set PODGUARD_KUBECTL")
	}
	t.Skip("no kubectl (run `make stack-build`, or set PODGUARD_KUBECTL)")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// stackSetting reads the default of a variable from deploy/local/stack.env.
func stackSetting(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("local", "stack.env"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`: "\$\{` + name + `:=([^}]*)\}"`).FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// object is one rendered manifest.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	raw        []byte
}

func (o object) group() string {
	g, _, ok := strings.Cut(o.APIVersion, "/")
	if !ok {
		return ""
	}
	return g
}

func (o object) String() string {
	if o.Metadata.Namespace == "" {
		return o.Kind + " " + o.Metadata.Name
	}
	return o.Kind + " " + o.Metadata.Namespace + "/" + o.Metadata.Name
}

// decode unmarshals the whole manifest into v.
func (o object) decode(t testing.TB, v any) {
	t.Helper()
	if err := yaml.Unmarshal(o.raw, v); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
}

// decodeStrict is decode, refusing fields v does not have.
func (o object) decodeStrict(t testing.TB, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
}

// manifests is a rendered install.
type manifests struct {
	yaml    []byte
	objects []object
}

// render runs `kubectl kustomize dir`.
func render(t testing.TB, dir string) *manifests {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl(t), "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
	}
	m, err := parse(out)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return m
}

func parse(out []byte) (*manifests, error) {
	m := &manifests{yaml: out}
	for i, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		o := object{raw: doc}
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if o.Kind == "" || o.Metadata.Name == "" {
			return nil, fmt.Errorf("document %d has no kind or name", i+1)
		}
		m.objects = append(m.objects, o)
	}
	if len(m.objects) == 0 {
		return nil, errors.New("no objects")
	}
	return m, nil
}

// all returns the objects of a kind in an API group.
func (m *manifests) all(group, kind string) []object {
	var out []object
	for _, o := range m.objects {
		if o.Kind == kind && o.group() == group {
			out = append(out, o)
		}
	}
	return out
}

// get returns the object of a kind, namespace and name, if there is one.
func (m *manifests) get(group, kind, namespace, name string) (object, bool) {
	for _, o := range m.all(group, kind) {
		if o.Metadata.Namespace == namespace && o.Metadata.Name == name {
			return o, true
		}
	}
	return object{}, false
}

// counts is the number of objects per kind, for the log.
func (m *manifests) counts() string {
	n := map[string]int{}
	var kinds []string
	for _, o := range m.objects {
		if n[o.Kind] == 0 {
			kinds = append(kinds, o.Kind)
		}
		n[o.Kind]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d objects:", len(m.objects))
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s %d", k, n[k])
	}
	return b.String()
}

// Knative types, reduced to what the tests read.

const (
	servingGroup  = "serving.knative.dev"
	eventingGroup = "eventing.knative.dev"
	sourcesGroup  = "sources.knative.dev"
	rbacGroup     = "rbac.authorization.k8s.io"
)

type knativeService struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Template struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
			Spec     revisionSpec      `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type revisionSpec struct {
	corev1.PodSpec       `json:",inline"`
	TimeoutSeconds       *int64 `json:"timeoutSeconds"`
	ContainerConcurrency *int64 `json:"containerConcurrency"`
}

type kref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace"`
}

type destination struct {
	Ref      *kref  `json:"ref"`
	URI      string `json:"uri"`
	Audience string `json:"audience"`
}

// refersTo reports whether d names the object of the given kind and name (in its own
// namespace).
func (d *destination) refersTo(apiVersion, kind, name string) bool {
	return d != nil && d.Ref != nil && d.URI == "" && d.Ref.APIVersion == apiVersion && d.Ref.Kind == kind &&
		d.Ref.Name == name && d.Ref.Namespace == ""
}

type delivery struct {
	DeadLetterSink *destination `json:"deadLetterSink"`
}

type trigger struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"filter"`
		Subscriber destination `json:"subscriber"`
		Delivery   *delivery   `json:"delivery"`
	} `json:"spec"`
}

type brokerObject struct {
	Spec struct {
		Delivery *delivery `json:"delivery"`
	} `json:"spec"`
}

type pingSource struct {
	Spec struct {
		Schedule string      `json:"schedule"`
		Sink     destination `json:"sink"`
	} `json:"spec"`
}

type sinkBinding struct {
	Spec struct {
		Subject struct {
			APIVersion string                `json:"apiVersion"`
			Kind       string                `json:"kind"`
			Name       string                `json:"name"`
			Selector   *metav1.LabelSelector `json:"selector"`
		} `json:"subject"`
		Sink destination `json:"sink"`
	} `json:"spec"`
}

// eventPolicy is an EventPolicy (eventing.knative.dev/v1alpha1), in full: decoded strictly,
// so that a field Knative does not know is an error rather than a policy that says less
// than it seems to.
type eventPolicy struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		To []struct {
			Ref *struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Name       string `json:"name"`
			} `json:"ref"`
			Selector map[string]any `json:"selector"`
		} `json:"to"`
		From []struct {
			Ref *kref   `json:"ref"`
			Sub *string `json:"sub"`
		} `json:"from"`
		Filters []policyFilter `json:"filters"`
	} `json:"spec"`
}

// policyFilter is a SubscriptionsAPIFilter, as an EventPolicy's filters are.
type policyFilter struct {
	All    []policyFilter    `json:"all"`
	Any    []policyFilter    `json:"any"`
	Not    *policyFilter     `json:"not"`
	Exact  map[string]string `json:"exact"`
	Prefix map[string]string `json:"prefix"`
	Suffix map[string]string `json:"suffix"`
	CESQL  string            `json:"cesql"`
}
