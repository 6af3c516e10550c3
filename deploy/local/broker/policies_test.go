package broker

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/podguard/podguard/events"
)

// identityDir is a small install with sender identity (testdata/identity).
const identityDir = "testdata/identity"

// localNamespace is where these tests run the broker: not podguard, so that the
// rewriting of subjects shows.
const localNamespace = "pg-local"

func TestLoadPolicies(t *testing.T) {
	got, err := LoadPolicies(identityDir, localNamespace)
	if err != nil {
		t.Fatal(err)
	}
	sa := func(name string) string { return events.ServiceAccountUser(localNamespace, name) }
	want := []Policy{
		{Name: "from-back-up-volume", From: []string{sa(events.ServiceAccount(events.FnBackupVolume))}, Filters: []Filter{
			{Exact: map[string]string{"type": events.VolumeBackedUp}},
			{Not: &Filter{Prefix: map[string]string{"source": "/untrusted"}}},
		}},
		{Name: "from-choreographer", From: []string{sa(events.ServiceAccount(events.FnChoreographer))}, Filters: []Filter{
			{Any: []Filter{
				{Exact: map[string]string{"type": events.VolumeBackup}},
				{Exact: map[string]string{"type": events.MetadataSnapshot}},
			}},
		}},
		{Name: "from-operator", From: []string{"system:serviceaccount:ops:operator"}},
		{Name: "from-replies", From: []string{sa(events.FnBackupVolume + "-*")}, Filters: []Filter{
			{All: []Filter{{Prefix: map[string]string{"type": "dev.podguard."}}, {Suffix: map[string]string{"type": ".backedup"}}}},
		}},
		{Name: "zz-choreographer-any-type", From: []string{sa(events.ServiceAccount(events.FnChoreographer))}},
	}
	var names []string
	for i := range got {
		names = append(names, got[i].Name)
		if filepath.Base(got[i].File) != "eventpolicies.yaml" {
			t.Errorf("%s: loaded from %s", got[i].Name, got[i].File)
		}
		got[i].File = ""
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("policies %v:\n got %+v\nwant %+v", names, got, want)
	}

	// Written for podguard, loaded for podguard: the subjects stay.
	same, err := LoadPolicies(identityDir, ManifestNamespace)
	if err != nil {
		t.Fatal(err)
	}
	if s := same[0].From[0]; s != "system:serviceaccount:podguard:podguard-back-up-volume" {
		t.Errorf("in namespace podguard, subject %q", s)
	}
}

// TestLoadTriggersAudience: the audiences of subscribers and dead-letter sinks are read,
// the Broker's with its delivery spec.
func TestLoadTriggersAudience(t *testing.T) {
	triggers, err := LoadTriggers(identityDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(triggers) != 2 {
		t.Fatalf("triggers %+v", triggers)
	}
	for _, tr := range triggers {
		if want := events.FunctionAudience(tr.Subscriber.Ref); tr.Subscriber.Audience != want {
			t.Errorf("%s: subscriber audience %q, want %q", tr.Name, tr.Subscriber.Audience, want)
		}
		dls := tr.Delivery.DeadLetterSink
		if want := (Destination{Ref: events.FnDeadLetters, Audience: events.FunctionAudience(events.FnDeadLetters)}); dls == nil || *dls != want {
			t.Errorf("%s: dead-letter sink %+v, want %+v", tr.Name, dls, want)
		}
	}
}

func TestLoadPoliciesWithoutPolicies(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "t.yaml", brokerYAML+triggerYAML("a", subscriberYAML))
	got, err := LoadPolicies(dir, localNamespace)
	if err != nil || len(got) != 0 {
		t.Errorf("got %+v, %v; want no policies", got, err)
	}
	// The base may have policies or not yet; either way they load.
	if _, err := LoadPolicies(baseDir, ManifestNamespace); err != nil {
		t.Errorf("the policies of %s: %v", baseDir, err)
	}
}

func policyYAML(name, spec string) string {
	return "---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

const fromYAML = "  from:\n    - sub: system:serviceaccount:podguard:a\n"

func TestLoadPoliciesErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"cesql", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - cesql: type = 'x'\n")},
			[]string{"p.yaml", `event policy "p"`, "filters[0]", "cesql", "CloudEvents SQL"}},
		{"nested cesql", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - any:\n        - exact: {type: x}\n        - cesql: type = 'y'\n")},
			[]string{"filters[0]: any[1]: cesql"}},
		{"from ref", map[string]string{"p.yaml": policyYAML("p", "  from:\n    - ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: tick}\n")},
			[]string{`event policy "p"`, "spec.from[0]: ref", "sub"}},
		{"from neither", map[string]string{"p.yaml": policyYAML("p", "  from:\n    - sub: \"\"\n")},
			[]string{"spec.from[0]: neither ref nor sub"}},
		{"star inside", map[string]string{"p.yaml": policyYAML("p", "  from:\n    - sub: system:serviceaccount:*:a\n")},
			[]string{"spec.from[0].sub", "only allowed at the end"}},
		{"to selector", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  to:\n    - selector: {apiVersion: eventing.knative.dev/v1, kind: Broker, matchLabels: {a: b}}\n")},
			[]string{"spec.to[0]: selector"}},
		{"to ref without kind", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  to:\n    - ref: {apiVersion: eventing.knative.dev/v1, name: podguard}\n")},
			[]string{"spec.to[0].ref", "required"}},
		{"two dialects", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - exact: {type: x}\n      prefix: {source: z}\n")},
			[]string{"filters[0]", "multiple dialects"}},
		{"attribute name", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - not:\n        exact: {Type: x}\n")},
			[]string{"filters[0]: not: exact", `"Type"`}},
		{"empty value", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - suffix: {type: \"\"}\n")},
			[]string{"suffix", "empty value"}},
		{"misspelt field", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filter:\n    - exact: {type: x}\n")},
			[]string{"p.yaml", `event policy "p"`, "filter"}},
		{"misspelt dialect", map[string]string{"p.yaml": policyYAML("p", fromYAML+"  filters:\n    - exacts: {type: x}\n")},
			[]string{`event policy "p"`, "exacts"}},
		{"duplicate", map[string]string{"p.yaml": policyYAML("p", fromYAML), "q.yaml": policyYAML("p", fromYAML)},
			[]string{"q.yaml", `event policy "p"`, "already used in", "p.yaml"}},
		{"bad name", map[string]string{"p.yaml": policyYAML("P", fromYAML)},
			[]string{`event policy "P"`, "DNS-1123"}},
		{"other namespace", map[string]string{"p.yaml": strings.Replace(policyYAML("p", fromYAML), "name: p\n", "name: p\n  namespace: elsewhere\n", 1)},
			[]string{`event policy "p"`, `"elsewhere"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				write(t, dir, name, content)
			}
			_, err := LoadPolicies(dir, localNamespace)
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
	if _, err := LoadPolicies(identityDir, "Not_A_Namespace"); err == nil {
		t.Error("a bad namespace is no error")
	}
	if _, err := LoadPolicies(filepath.Join(t.TempDir(), "missing"), localNamespace); err == nil {
		t.Error("a missing directory is no error")
	}
}

func TestPolicyFilters(t *testing.T) {
	e := newEvent("1", events.VolumeBackup)
	e.SetSubject("default:web")
	e.SetExtension(events.ExtFlow, events.FlowProtect)
	e.SetExtension("podguardattempt", 3)
	exact := func(k, v string) Filter { return Filter{Exact: map[string]string{k: v}} }
	tests := []struct {
		name    string
		filters []Filter
		want    bool
	}{
		{"no filters", nil, true},
		{"empty filter", []Filter{{}}, true},
		{"exact type", []Filter{exact("type", events.VolumeBackup)}, true},
		{"exact other type", []Filter{exact("type", events.VolumeBackedUp)}, false},
		{"exact needs every attribute", []Filter{{Exact: map[string]string{"type": events.VolumeBackup, "subject": "other"}}}, false},
		{"exact extension", []Filter{exact(events.ExtFlow, events.FlowProtect)}, true},
		{"exact integer extension", []Filter{exact("podguardattempt", "3")}, true},
		{"exact missing attribute", []Filter{exact("podguardcheckpoint", "c")}, false},
		{"exact is case-sensitive", []Filter{exact("subject", "Default:web")}, false},
		{"prefix", []Filter{{Prefix: map[string]string{"type": "dev.podguard.volume."}}}, true},
		{"prefix fails", []Filter{{Prefix: map[string]string{"source": "other/"}}}, false},
		{"suffix", []Filter{{Suffix: map[string]string{"subject": ":web"}}}, true},
		{"suffix fails", []Filter{{Suffix: map[string]string{"type": ".done"}}}, false},
		{"every top-level filter must pass", []Filter{exact("type", events.VolumeBackup), exact("source", "other")}, false},
		{"any", []Filter{{Any: []Filter{exact("type", "x"), exact("type", events.VolumeBackup)}}}, true},
		{"any fails", []Filter{{Any: []Filter{exact("type", "x"), exact("type", "y")}}}, false},
		{"all", []Filter{{All: []Filter{exact("type", events.VolumeBackup), exact("subject", "default:web")}}}, true},
		{"all fails", []Filter{{All: []Filter{exact("type", events.VolumeBackup), exact("subject", "x")}}}, false},
		{"not", []Filter{{Not: &Filter{Prefix: map[string]string{"source": "/untrusted"}}}}, true},
		{"not fails", []Filter{{Not: &Filter{Exact: map[string]string{"type": events.VolumeBackup}}}}, false},
		{"not of a missing attribute", []Filter{{Not: &Filter{Exact: map[string]string{"podguardcheckpoint": "c"}}}}, true},
		{"not of no filter is no filter", []Filter{{Not: &Filter{}}}, true},
		{"any of no filter is no filter", []Filter{{Any: []Filter{{}, {}}}}, true},
		{"empty filters are left out of any", []Filter{{Any: []Filter{{}, exact("type", "x")}}}, false},
		{"empty filters are left out of all", []Filter{{All: []Filter{{}, exact("type", events.VolumeBackup)}}}, true},
		{"nested", []Filter{{All: []Filter{
			{Prefix: map[string]string{"type": "dev.podguard."}},
			{Not: &Filter{Any: []Filter{{Suffix: map[string]string{"type": ".backedup"}}, exact("subject", "x")}}},
		}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Policy{Filters: tt.filters}).accepts(e); got != tt.want {
				t.Fatalf("accepts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPolicyAdmits(t *testing.T) {
	p := Policy{From: []string{"system:serviceaccount:pg:podguard-a", "system:serviceaccount:pg:b-*"}}
	for subject, want := range map[string]bool{
		"system:serviceaccount:pg:podguard-a":          true,
		"System:ServiceAccount:pg:Podguard-A":          true, // exact subjects match in any case, as in Knative
		"system:serviceaccount:pg:podguard-ab":         false,
		"system:serviceaccount:pg:b-":                  true,
		"system:serviceaccount:pg:b-anything":          true,
		"system:serviceaccount:pg:c-anything":          false,
		"system:serviceaccount:other:b-anything":       false,
		"":                                             false,
		"system:serviceaccount:pg:podguard-a:trailing": false,
	} {
		if got := p.admits(subject); got != want {
			t.Errorf("admits(%q) = %v, want %v", subject, got, want)
		}
	}
	if (Policy{}).admits(events.ServiceAccountUser("pg", "a")) {
		t.Error("a policy without subjects admits someone")
	}
}
