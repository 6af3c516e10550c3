package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
)

// senderTypes is who may send what into the Broker, by the catalog: the types of
// events.Senders, by sender (service account names in podguard's namespace), sorted.
func senderTypes() map[string][]string {
	out := map[string][]string{}
	for _, typ := range events.Catalog() {
		for _, sa := range events.Senders(typ.Name) {
			out[sa] = append(out[sa], typ.Name)
		}
	}
	for _, ts := range out {
		slices.Sort(ts)
	}
	return out
}

// admission is one EventPolicy as the Broker applies it: the subjects it names and the
// types its filters let through.
type admission struct {
	policy   string
	subjects []string
	types    []string
}

// brokerPolicies reads the EventPolicies of m, in name order: each must apply to the
// Broker alone (by ref), name its senders by subject (the local broker resolves no
// ref), and filter with one `any` of exact types, the one shape that says "these types"
// to Knative's broker and the local one alike.
func brokerPolicies(t *testing.T, m *manifests) []admission {
	t.Helper()
	var out []admission
	for _, o := range m.all(eventingGroup, "EventPolicy") {
		var p eventPolicy
		o.decodeStrict(t, &p)
		if p.APIVersion != eventingGroup+"/v1alpha1" {
			t.Errorf("%s: apiVersion %s, want %s/v1alpha1", o, p.APIVersion, eventingGroup)
		}
		if len(p.Spec.To) != 1 || p.Spec.To[0].Selector != nil || p.Spec.To[0].Ref == nil ||
			*p.Spec.To[0].Ref != (struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Name       string `json:"name"`
			}{eventingGroup + "/v1", "Broker", brokerName}) {
			t.Errorf("%s: to %+v, want the Broker %s alone, by ref (an empty `to` applies to everything in the namespace)", o, p.Spec.To, brokerName)
		}
		a := admission{policy: o.Metadata.Name}
		for _, f := range p.Spec.From {
			if f.Ref != nil || f.Sub == nil || *f.Sub == "" || strings.Contains(*f.Sub, "*") {
				t.Errorf("%s: from %+v: want a subject (sub), without patterns", o, f)
				continue
			}
			a.subjects = append(a.subjects, *f.Sub)
		}
		if len(a.subjects) != 1 {
			t.Errorf("%s: %d subjects, want one sender per policy", o, len(a.subjects))
		}
		if len(p.Spec.Filters) != 1 || len(p.Spec.Filters[0].Any) == 0 {
			t.Errorf("%s: filters %+v, want one `any` of exact types (no filter admits every type)", o, p.Spec.Filters)
		} else {
			f := p.Spec.Filters[0]
			if f.All != nil || f.Not != nil || f.Exact != nil || f.Prefix != nil || f.Suffix != nil || f.CESQL != "" {
				t.Errorf("%s: the filter has more than `any`: %+v", o, f)
			}
			for _, e := range f.Any {
				typ, ok := e.Exact["type"]
				if len(e.Exact) != 1 || !ok || typ == "" || e.All != nil || e.Any != nil || e.Not != nil || e.Prefix != nil || e.Suffix != nil || e.CESQL != "" {
					t.Errorf("%s: filter %+v, want {exact: {type: <type>}}", o, e)
					continue
				}
				if slices.Contains(a.types, typ) {
					t.Errorf("%s: type %s listed twice", o, typ)
				}
				a.types = append(a.types, typ)
			}
		}
		slices.Sort(a.types)
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b admission) int { return strings.Compare(a.policy, b.policy) })
	return out
}

// admits is the Broker's decision on an event of type typ from subject, as Knative's
// pkg/auth SubjectAndFiltersPass makes it: the first policy whose subjects match decides,
// by its filters alone; no match refuses.
func admits(ps []admission, subject, typ string) bool {
	for _, p := range ps {
		for _, s := range p.subjects {
			if strings.EqualFold(s, subject) {
				return slices.Contains(p.types, typ)
			}
		}
	}
	return false
}

// installedPolicies loads the EventPolicies of a rendered install the way the local
// broker loads deploy/base, for namespace ns.
func installedPolicies(t *testing.T, m *manifests, ns string) []admission {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rendered.yaml"), m.yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := broker.LoadPolicies(dir, ns)
	if err != nil {
		t.Fatalf("the local broker cannot load the rendered policies: %v", err)
	}
	var out []admission
	for _, p := range ps {
		a := admission{policy: p.Name, subjects: p.From}
		for _, f := range p.Filters {
			for _, e := range f.Any {
				a.types = append(a.types, e.Exact["type"])
			}
		}
		slices.Sort(a.types)
		out = append(out, a)
	}
	return out
}

// checkPolicies: the EventPolicies of an install whose subjects are in namespace ns are
// exactly events.Senders over the catalog, one policy per sender, read alike by the
// local broker, and the Broker they make admits each type from its senders and from
// nobody else.
func checkPolicies(t *testing.T, m *manifests, ns string) {
	t.Helper()
	ps := brokerPolicies(t, m)
	if local := installedPolicies(t, m, ns); !reflect.DeepEqual(local, ps) {
		t.Errorf("the local broker reads other policies than Knative would:\nlocal   %+v\nknative %+v", local, ps)
	}
	got := map[string][]string{}
	for _, p := range ps {
		for _, s := range p.subjects {
			if _, dup := got[s]; dup {
				t.Errorf("policy %s: %s has another policy: Knative applies the filters of the first only", p.policy, s)
			}
			got[s] = p.types
		}
	}
	want := map[string][]string{}
	for sa, types := range senderTypes() {
		want[events.ServiceAccountUser(ns, sa)] = types
	}
	for s, types := range want {
		if !slices.Equal(got[s], types) {
			t.Errorf("%s may send %v, want %v (events.Senders)", s, got[s], types)
		}
	}
	for s := range got {
		if _, ok := want[s]; !ok {
			t.Errorf("%s may send into the Broker, but is no sender of events.Senders", s)
		}
	}

	// The Broker's decisions, for every type and for senders that must be refused too: a
	// Trigger's identity (a reply the broker's filter would carry back), the SinkBinding's,
	// another namespace's podguard and its default service account.
	subjects := keys(want)
	subjects = append(subjects,
		events.ServiceAccountUser(ns, events.TriggerServiceAccount(events.TriggerName(events.FnListPods, events.PodsList))),
		events.ServiceAccountUser(ns, "podguard-sink-oidc-sources.knative.dev-sinkbinding"),
		events.ServiceAccountUser(ns+"-other", events.ServiceAccount(events.FnChoreographer)),
		events.ServiceAccountUser(ns, "default"))
	types := []string{"dev.example.unknown"}
	for _, typ := range events.Catalog() {
		types = append(types, typ.Name)
	}
	admitted := 0
	for _, s := range subjects {
		for _, typ := range types {
			sa, _ := strings.CutPrefix(s, "system:serviceaccount:"+ns+":")
			wantIn := strings.HasPrefix(s, "system:serviceaccount:"+ns+":") && slices.Contains(events.Senders(typ), sa)
			if in := admits(ps, s, typ); in != wantIn {
				t.Errorf("the Broker admits %s from %s: %v, want %v", typ, s, in, wantIn)
			} else if in {
				admitted++
			}
		}
	}
	t.Logf("event policies: %d senders, %d (sender, type) pairs admitted of %d", len(ps), admitted, len(subjects)*len(types))
}

// TestSendersFollowTheCatalog: what the policies are made from says what the flows need.
// Every type a Trigger routes has a sender that produces it; no sender may send a type
// it does not produce, except dead-letters, which replays dead letters of the routed
// types as they were first sent; the tick's PingSource is the one the install has.
func TestSendersFollowTheCatalog(t *testing.T) {
	catalog := map[string]events.Type{}
	for _, typ := range events.Catalog() {
		catalog[typ.Name] = typ
	}
	routed := map[string]bool{}
	for _, r := range events.Routes() {
		routed[r.Type] = true
		producers := slices.DeleteFunc(slices.Clone(events.Senders(r.Type)), func(sa string) bool {
			return sa == events.ServiceAccount(events.FnDeadLetters)
		})
		if len(producers) == 0 {
			t.Errorf("%s is routed to %s (Trigger %s), but nobody may send it into the Broker", r.Type, r.Function, r.Trigger)
		}
	}
	tick := events.PingSourceServiceAccount(events.TickSource)
	for sa, types := range senderTypes() {
		for _, typ := range types {
			producers := catalog[typ].Producers
			switch {
			case sa == events.ServiceAccount(events.FnDeadLetters):
				if !routed[typ] && !slices.Contains(producers, events.FnDeadLetters) {
					t.Errorf("dead-letters may send %s, which no Trigger routes and it does not produce", typ)
				}
			case sa == tick:
				if !slices.Contains(producers, events.PingSource) {
					t.Errorf("the tick's PingSource may send %s, which a PingSource does not produce", typ)
				}
			default:
				fn, ok := strings.CutPrefix(sa, "podguard-")
				if !ok || !slices.Contains(producers, fn) {
					t.Errorf("%s may send %s, produced by %v only", sa, typ, producers)
				}
			}
		}
	}
	m := render(t, "base")
	pings := m.all(sourcesGroup, "PingSource")
	if len(pings) != 1 || pings[0].Metadata.Name != events.TickSource {
		t.Errorf("PingSources %v, want the tick %s (events.TickSource), whose identity the policies name", pings, events.TickSource)
	}
}

// TestEventPoliciesInstalled: the local Knative mode applies the policies of its overlay
// as they are written, for namespace podguard (it rewrites the subjects to its own).
func TestEventPoliciesInstalled(t *testing.T) {
	m := render(t, localEventingOverlay)
	checkPolicies(t, m, installNamespace)
	for _, o := range m.all(eventingGroup, "EventPolicy") {
		if o.Metadata.Namespace != "" {
			t.Errorf("%s: the local mode applies its policies into a namespace of its choice: set none", o)
		}
	}
}

// TestInstallIntoAnotherNamespace installs each overlay into another namespace the way
// the overlays' comments tell users to (a kustomization of their own with `namespace:`
// and a copy of namespace-replacements.yaml): the policies' subjects and the functions'
// Broker audience follow, and nothing else names podguard's namespace.
func TestInstallIntoAnotherNamespace(t *testing.T) {
	a, err := os.ReadFile(filepath.Join(clusterOverlay, replacementsFile))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(namespacedOverlay, replacementsFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s differs between %s and %s: users copy either", replacementsFile, clusterOverlay, namespacedOverlay)
	}
	const other = "backup-system"
	for _, tc := range []struct{ overlay, target string }{{clusterOverlay, ""}, {namespacedOverlay, "team-apps"}} {
		t.Run(filepath.Base(tc.overlay), func(t *testing.T) {
			m := render(t, retarget(t, tc.overlay, other, tc.target))
			checkPolicies(t, m, other)
			if cm, ok := m.get("", "ConfigMap", other, configMapName); !ok {
				t.Errorf("no ConfigMap %s in %s", configMapName, other)
			} else {
				var config corev1.ConfigMap
				cm.decode(t, &config)
				if got := config.Data["POD_NAMESPACE"]; got != other {
					t.Errorf("%s: POD_NAMESPACE %q, want %q", configMapName, got, other)
				}
			}
			for _, o := range m.all(servingGroup, "Service") {
				var s knativeService
				o.decode(t, &s)
				checkBrokerToken(t, o.Metadata.Name, s.Spec.Template.Spec.PodSpec, s.Spec.Template.Spec.Containers[0], other)
			}
			for _, o := range m.objects {
				if regexp.MustCompile(`(serviceaccount|broker)[:/]` + installNamespace + `[:/]`).Match(o.raw) {
					t.Errorf("%s still names namespace %s inside a value", o, installNamespace)
				}
			}
		})
	}
}

// replacementsFile rewrites the namespace inside the policies and the Broker audience,
// in each overlay and in a user's kustomization over one.
const replacementsFile = "namespace-replacements.yaml"

// TestReadmeBrokerSenders: the README's table of who may send what into the Broker is
// the policies'. A row lists a sender's types without the dev.podguard. prefix; "every
// routed type" stands for the types the Triggers route.
func TestReadmeBrokerSenders(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var routed []string
	for _, r := range events.Routes() {
		routed = append(routed, r.Type)
	}
	code := regexp.MustCompile("`([^`]+)`")
	for sa, want := range senderTypes() {
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(sa) + "` \\|(.*)\\|\\s*$").FindSubmatch(b)
		if row == nil {
			t.Errorf("README.md: no row for %s in the table of senders (Security, Inside the broker)", sa)
			continue
		}
		var got []string
		if strings.Contains(string(row[1]), "every routed type") {
			got = append(got, routed...)
		}
		for _, c := range code.FindAllSubmatch(row[1], -1) {
			typ := string(c[1])
			if !strings.HasPrefix(typ, "dev.") {
				typ = "dev.podguard." + typ
			}
			got = append(got, typ)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Errorf("README.md: %s may send %v, the policies say %v", sa, got, want)
		}
	}
}
