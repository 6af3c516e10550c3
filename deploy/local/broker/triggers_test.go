package broker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
)

// baseDir is the kustomize base the cluster deploys.
const baseDir = "../../base"

func TestDeployBaseTriggers(t *testing.T) {
	triggers, err := LoadTriggers(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(triggers) == 0 {
		t.Fatal("no triggers in", baseDir)
	}
	functionNames := []string{events.FnListPods, events.FnSnapshotMetadata, events.FnBackupVolume, events.FnChoreographer, events.FnFrontDoor,
		events.FnRestoreVolume, events.FnRecreatePod, events.FnDeleteBackup, events.FnDeadLetters}
	want := Delivery{Retry: 5, BackoffPolicy: BackoffExponential, BackoffDelay: 500 * time.Millisecond,
		DeadLetterSink: &Destination{Ref: "dead-letters"}}
	for _, tr := range triggers {
		if !slices.Contains(functionNames, tr.Subscriber.Ref) || tr.Subscriber.URI != "" {
			t.Errorf("trigger %s: subscriber %s is not one of the functions %v", tr.Name, tr.Subscriber, functionNames)
		}
		// An audience, once the manifests name them, is the function's.
		if aud := tr.Subscriber.Audience; aud != "" && aud != events.FunctionAudience(tr.Subscriber.Ref) {
			t.Errorf("trigger %s: subscriber audience %q, want %q", tr.Name, aud, events.FunctionAudience(tr.Subscriber.Ref))
		}
		if dls := tr.Delivery.DeadLetterSink; dls != nil && dls.Audience != "" && dls.Audience != events.FunctionAudience(dls.Ref) {
			t.Errorf("trigger %s: dead-letter sink audience %q, want %q", tr.Name, dls.Audience, events.FunctionAudience(dls.Ref))
		}
		if tr.Filter["type"] == "" {
			t.Errorf("trigger %s: no filter on type", tr.Name)
		}
		if !strings.HasPrefix(tr.Name, tr.Subscriber.Ref+"-") {
			t.Errorf("trigger %s: name does not start with its function %s", tr.Name, tr.Subscriber.Ref)
		}
		d := tr.Delivery
		if d.Retry != want.Retry || d.BackoffPolicy != want.BackoffPolicy || d.BackoffDelay != want.BackoffDelay ||
			d.DeadLetterSink == nil || d.DeadLetterSink.Ref != want.DeadLetterSink.Ref || d.DeadLetterSink.URI != "" {
			t.Errorf("trigger %s: delivery %+v, want %+v", tr.Name, d, want)
		}
		if filepath.Base(tr.File) != "triggers.yaml" {
			t.Errorf("trigger %s: loaded from %s", tr.Name, tr.File)
		}
	}
}

// TestCatalogRouting walks the event catalog: every type a function consumes reaches that
// function, and no trigger routes a type to a function that does not consume it.
func TestCatalogRouting(t *testing.T) {
	triggers, err := LoadTriggers(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	consumes := map[[2]string]bool{{events.FnChoreographer, PingSourceType}: true} // the PingSource tick
	for _, typ := range events.Catalog() {
		for _, fn := range typ.Consumers {
			if fn == events.User || (typ.FrontDoor && fn == events.FnFrontDoor) {
				continue // people subscribe themselves; the front door is sent to directly
			}
			consumes[[2]string{fn, typ.Name}] = true
		}
	}
	for pair := range consumes {
		fn, typ := pair[0], pair[1]
		e := probe(typ)
		e.SetExtension(events.ExtFlow, events.FlowProtect)
		if got := routedTo(triggers, e); !slices.Contains(got, fn) {
			t.Errorf("%s (flow protect) is routed to %v, not to its consumer %s", typ, got, fn)
		}
	}
	for _, tr := range triggers {
		if !consumes[[2]string{tr.Subscriber.Ref, tr.Filter["type"]}] {
			t.Errorf("trigger %s routes %s to %s, which does not consume it", tr.Name, tr.Filter["type"], tr.Subscriber.Ref)
		}
	}
}

// TestPodsListedRouting: a listing a user asked for must not reach the choreographer.
func TestPodsListedRouting(t *testing.T) {
	triggers, err := LoadTriggers(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	for flow, want := range map[string][]string{
		"":                 nil,
		events.FlowRestore: nil,
		events.FlowProtect: {events.FnChoreographer},
	} {
		e := probe(events.PodsListed)
		if flow != "" {
			e.SetExtension(events.ExtFlow, flow)
		}
		if got := routedTo(triggers, e); !slices.Equal(got, want) {
			t.Errorf("pods.listed with flow %q routed to %v, want %v", flow, got, want)
		}
	}
}

func probe(typ string) event.Event {
	e := event.New()
	e.SetID("probe")
	e.SetSource("test/probe")
	e.SetType(typ)
	return e
}

func routedTo(triggers []Trigger, e event.Event) []string {
	var out []string
	for _, tr := range triggers {
		if matches(tr.Filter, e) {
			out = append(out, tr.Subscriber.Ref)
		}
	}
	return out
}

const brokerYAML = `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: main
spec:
  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT2S
    deadLetterSink:
      uri: http://127.0.0.1:9/dead
`

func triggerYAML(name, rest string) string {
	return "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: " + name + "\nspec:\n  broker: main\n" + rest
}

const subscriberYAML = "  subscriber:\n    ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      name: fn\n"

func TestLoadTriggers(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "broker.yaml", "# the broker\n"+brokerYAML)
	write(t, dir, "triggers.yml", "# comment only\n---\n"+
		triggerYAML("a", "  filter:\n    attributes:\n      type: dev.example.a\n      podguardflow: protect\n"+subscriberYAML)+
		triggerYAML("b", subscriberYAML+"  delivery:\n    retry: 1\n    timeout: PT10S\n")+
		"---\napiVersion: triggers.tekton.dev/v1beta1\nkind: Trigger\nmetadata:\n  name: Not_Ours\n"+
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n...\n")
	write(t, dir, "notes.txt", "not a manifest")
	got, err := LoadTriggers(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("got %+v", got)
	}
	a, b := got[0], got[1]
	if a.Filter["type"] != "dev.example.a" || a.Filter["podguardflow"] != "protect" || len(a.Filter) != 2 {
		t.Errorf("a: filter %v", a.Filter)
	}
	if a.Subscriber != (Destination{Ref: "fn"}) {
		t.Errorf("a: subscriber %+v", a.Subscriber)
	}
	if a.Delivery.Retry != 3 || a.Delivery.BackoffPolicy != BackoffLinear || a.Delivery.BackoffDelay != 2*time.Second ||
		a.Delivery.DeadLetterSink == nil || a.Delivery.DeadLetterSink.URI != "http://127.0.0.1:9/dead" {
		t.Errorf("a: without a delivery spec, want the broker's; got %+v", a.Delivery)
	}
	if b.Delivery.Retry != 1 || b.Delivery.Timeout != 10*time.Second || b.Delivery.DeadLetterSink != nil || len(b.Filter) != 0 {
		t.Errorf("b: with its own delivery spec, want it whole; got %+v, filter %v", b.Delivery, b.Filter)
	}
}

// TestLoadTriggersKustomization: in a kustomization, only the resources it lists are
// read (a manifest left out of it is not installed, so it must not route either).
func TestLoadTriggersKustomization(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "kustomization.yaml", "resources:\n  - broker.yaml\n  - listed.yaml\n  - sub\n")
	write(t, dir, "broker.yaml", brokerYAML)
	write(t, dir, "listed.yaml", triggerYAML("a", subscriberYAML))
	write(t, dir, "stray.yaml", triggerYAML("stray", subscriberYAML))
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "sub"), "kustomization.yml", "resources: [b.yaml]\n")
	write(t, filepath.Join(dir, "sub"), "b.yaml", triggerYAML("b", subscriberYAML))
	write(t, filepath.Join(dir, "sub"), "unlisted.yaml", triggerYAML("c", subscriberYAML))
	got, err := LoadTriggers(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tr := range got {
		names = append(names, tr.Name)
	}
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("loaded %v, want the listed a and b", names)
	}
	if got[0].Delivery.Retry != 3 {
		t.Errorf("a: the listed Broker's delivery was not applied: %+v", got[0].Delivery)
	}

	for name, kust := range map[string]string{
		"missing":  "resources: [gone.yaml]\n",
		"remote":   "resources: [https://example.com/x.yaml]\n",
		"bad yaml": "resources: [\n",
	} {
		d := t.TempDir()
		write(t, d, "kustomization.yaml", kust)
		if _, err := LoadTriggers(d); err == nil || !strings.Contains(err.Error(), "kustomization.yaml") {
			t.Errorf("%s: error %v, want one naming kustomization.yaml", name, err)
		}
	}
}

func TestLoadTriggersErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"bad name", map[string]string{"t.yaml": triggerYAML("Bad_Name", subscriberYAML)},
			[]string{"t.yaml", `trigger "Bad_Name"`, "DNS-1123"}},
		{"no subscriber", map[string]string{"t.yaml": triggerYAML("a", "")},
			[]string{"t.yaml", `trigger "a"`, "no subscriber"}},
		{"empty subscriber", map[string]string{"t.yaml": triggerYAML("a", "  subscriber: {}\n")},
			[]string{`trigger "a"`, "neither ref nor uri"}},
		{"bad policy", map[string]string{"t.yaml": triggerYAML("a", subscriberYAML+"  delivery:\n    backoffPolicy: random\n")},
			[]string{`trigger "a"`, "backoffPolicy", "random"}},
		{"bad delay", map[string]string{"t.yaml": triggerYAML("a", subscriberYAML+"  delivery:\n    backoffDelay: 2s\n")},
			[]string{"t.yaml", `trigger "a"`, "backoffDelay", `"2s"`}},
		{"negative retry", map[string]string{"t.yaml": triggerYAML("a", subscriberYAML+"  delivery:\n    retry: -1\n")},
			[]string{`trigger "a"`, "negative"}},
		{"bad filter attribute", map[string]string{"t.yaml": triggerYAML("a", "  filter:\n    attributes:\n      Type: x\n"+subscriberYAML)},
			[]string{`trigger "a"`, `"Type"`}},
		{"duplicate", map[string]string{"t.yaml": triggerYAML("a", subscriberYAML), "u.yaml": triggerYAML("a", subscriberYAML)},
			[]string{"u.yaml", `trigger "a"`, "already used in", "t.yaml"}},
		{"other broker", map[string]string{"b.yaml": brokerYAML, "t.yaml": strings.Replace(triggerYAML("a", subscriberYAML), "broker: main", "broker: other", 1)},
			[]string{"t.yaml", `trigger "a"`, `"other"`}},
		{"two brokers", map[string]string{"b.yaml": brokerYAML, "c.yaml": strings.Replace(brokerYAML, "name: main", "name: second", 1)},
			[]string{"c.yaml", `"second"`, "second Broker"}},
		{"bad broker delivery", map[string]string{"b.yaml": strings.Replace(brokerYAML, "PT2S", "P1M", 1)},
			[]string{"b.yaml", `broker "main"`, "backoffDelay"}},
		{"bad yaml", map[string]string{"t.yaml": "kind: [Trigger\n"},
			[]string{"t.yaml", "document 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				write(t, dir, name, content)
			}
			_, err := LoadTriggers(dir)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := LoadTriggers(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing directory is no error")
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
