package deploy

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/stacktest"
)

const examplesDir = "examples"

// TestExamplePingSources checks that every example PingSource sends what the
// choreographer takes: its data matches the schema of a PingSource event (a plan, or
// nothing for the tick), and it goes to the podguard Broker.
func TestExamplePingSources(t *testing.T) {
	m := render(t, examplesDir)
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	sources := m.all(sourcesGroup, "PingSource")
	if len(sources) == 0 {
		t.Fatal("no example PingSource")
	}
	for _, o := range sources {
		var ps struct {
			Spec struct {
				Schedule    string `json:"schedule"`
				Timezone    string `json:"timezone"`
				ContentType string `json:"contentType"`
				Data        string `json:"data"`
				Sink        struct {
					Ref struct{ Kind, Name string } `json:"ref"`
				} `json:"sink"`
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
		if ps.Spec.Sink.Ref.Kind != "Broker" || ps.Spec.Sink.Ref.Name != "podguard" {
			t.Errorf("%s: sink %+v, want the podguard Broker", o, ps.Spec.Sink.Ref)
		}
	}
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
