package deploy

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/stacktest"
)

const examplesDir = "examples"

// TestExamplePingSources checks that every example PingSource sends what the
// choreographer takes (its data matches the schema of a PingSource event: a plan, or
// nothing for the tick) to the front door, with a token for the front door's audience,
// never into the Broker (no EventPolicy admits a team's PingSource there); and that the
// examples bind its OIDC identity to a role that may protect, where its plan's
// namespaces are.
func TestExamplePingSources(t *testing.T) {
	m := render(t, examplesDir)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := render(t, "base").get("", "ConfigMap", "", configMapName)
	if !ok {
		t.Fatalf("no ConfigMap %s in deploy/base", configMapName)
	}
	var config corev1.ConfigMap
	cm.decode(t, &config)
	audience := config.Data["FRONT_DOOR_AUDIENCE"]
	sources := m.all(sourcesGroup, "PingSource")
	if len(sources) == 0 {
		t.Fatal("no example PingSource")
	}
	for _, o := range sources {
		var ps struct {
			Spec struct {
				Schedule    string      `json:"schedule"`
				Timezone    string      `json:"timezone"`
				ContentType string      `json:"contentType"`
				Data        string      `json:"data"`
				Sink        destination `json:"sink"`
			} `json:"spec"`
		}
		o.decode(t, &ps)
		e := event.New()
		e.SetID("example")
		e.SetSource("/apis/v1/namespaces/podguard/pingsources/" + o.Metadata.Name)
		e.SetType(events.PingSourceTick)
		if err := e.SetData(ps.Spec.ContentType, []byte(ps.Spec.Data)); err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); err != nil {
			t.Errorf("%s: the choreographer would refuse its firings: %v", o, err)
		}
		if !ps.Spec.Sink.refersTo(servingGroup+"/v1", "Service", events.FnFrontDoor) || ps.Spec.Sink.Audience != audience {
			t.Errorf("%s: sink %+v (audience %q), want the Service %s with audience %q (FRONT_DOOR_AUDIENCE)", o, ps.Spec.Sink.Ref, ps.Spec.Sink.Audience, events.FnFrontDoor, audience)
		}
		var plan struct {
			Plan struct {
				Scope struct {
					Namespaces []string `json:"namespaces"`
				} `json:"scope"`
			} `json:"plan"`
		}
		if err := e.DataAs(&plan); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		if ns := plan.Plan.Scope.Namespaces; len(ns) > 0 && !examplesMayProtect(t, m, events.PingSourceServiceAccount(o.Metadata.Name)) {
			t.Errorf("%s: no example binds its identity %s/%s to a role that may create checkpoints (its plan protects %v)", o, installNamespace, events.PingSourceServiceAccount(o.Metadata.Name), ns)
		}
	}
}

// examplesMayProtect reports whether a RoleBinding of the examples grants service account
// sa of podguard's namespace `create checkpoints`, by a Role of the examples or a
// ClusterRole of the install's.
func examplesMayProtect(t *testing.T, examples *manifests, sa string) bool {
	roles := map[string][]rbacv1.PolicyRule{}
	for _, o := range examples.all(rbacGroup, "Role") {
		var r rbacv1.Role
		o.decode(t, &r)
		roles["Role/"+o.Metadata.Name] = r.Rules
	}
	for _, o := range render(t, "roles").all(rbacGroup, "ClusterRole") {
		var r rbacv1.ClusterRole
		o.decode(t, &r)
		roles["ClusterRole/"+o.Metadata.Name] = r.Rules
	}
	for _, o := range examples.all(rbacGroup, "RoleBinding") {
		var b rbacv1.RoleBinding
		o.decode(t, &b)
		bound := slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == installNamespace
		})
		if !bound {
			continue
		}
		for _, r := range roles[b.RoleRef.Kind+"/"+b.RoleRef.Name] {
			if slices.Contains(r.APIGroups, "podguard.dev") && slices.Contains(r.Resources, "checkpoints") && slices.Contains(r.Verbs, "create") {
				return true
			}
		}
	}
	return false
}

// TestExamplesDryRun applies the examples with a server dry run beside an install.
func TestExamplesDryRun(t *testing.T) {
	st := stacktest.Load(t)
	kc := kubectl(t)
	ensureKnativeCRDs(t, kc)
	ns := st.Namespace(t, st.Kube(t), "pg-examples")
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		var out bytes.Buffer
		cmd := exec.Command(kc, "apply", "--dry-run=server", "--validate=strict", "-n", ns, "-f", f)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("kubectl apply --dry-run=server -f %s: %v\n%s", f, err, out.Bytes())
		}
	}
}
