package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"sigs.k8s.io/yaml"

	"github.com/podguard/podguard/events"
)

// ManifestNamespace is the namespace the subjects of podguard's EventPolicies are written
// for (system:serviceaccount:podguard:<name>): LoadPolicies rewrites them to the namespace
// the broker runs in, which for the local runner may be another.
const ManifestNamespace = "podguard"

// Policy is a Knative EventPolicy (eventing.knative.dev/v1alpha1) that applies to the
// Broker: who may send it events, and which. With sender identity on
// (Options.Identity), an event is admitted when the FIRST policy (by name) with a subject
// that matches its sender's also passes its filters; when no policy applies to the
// Broker, Knative's default mode allow-same-namespace admits any service account of the
// broker's namespace.
type Policy struct {
	// Name is the policy's metadata.name.
	Name string
	// File is the manifest the policy was loaded from, if any.
	File string
	// From are the subjects admitted: usernames such as
	// system:serviceaccount:<namespace>:<name>, matched regardless of case, or, ending in
	// "*", prefixes of usernames. None admits nobody.
	From []string
	// Filters must all pass for an event to be admitted; none admits every event.
	Filters []Filter
}

// Filter is a Knative SubscriptionsAPIFilter over the context attributes and extensions
// of an event. At most one dialect is set; a filter with none is no filter: it neither
// passes nor fails an event, and is left out of All, Any and Not.
type Filter struct {
	// All passes when each of its filters passes.
	All []Filter
	// Any passes when one of its filters passes.
	Any []Filter
	// Not passes when its filter fails.
	Not *Filter
	// Exact, Prefix and Suffix map attribute names to the value an event's attribute
	// must equal, start or end with (case-sensitive); every attribute must match.
	Exact, Prefix, Suffix map[string]string
}

// policyManifest is an EventPolicy as written; its spec is read strictly, so that a
// misspelt field is an error rather than a policy that admits more than meant.
type policyManifest struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
	Status     json.RawMessage `json:"status"`
}

type policySpec struct {
	To []struct {
		Ref *struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"ref"`
		Selector json.RawMessage `json:"selector"`
	} `json:"to"`
	From []struct {
		Ref json.RawMessage `json:"ref"`
		Sub *string         `json:"sub"`
	} `json:"from"`
	Filters []filterSpec `json:"filters"`
}

type filterSpec struct {
	All    []filterSpec      `json:"all"`
	Any    []filterSpec      `json:"any"`
	Not    *filterSpec       `json:"not"`
	Exact  map[string]string `json:"exact"`
	Prefix map[string]string `json:"prefix"`
	Suffix map[string]string `json:"suffix"`
	CESQL  string            `json:"cesql"`
}

// LoadPolicies reads the EventPolicies of the manifests in dir, found as LoadTriggers
// finds Triggers (a kustomization's resources, or every manifest file), and returns
// those that apply to the Broker, sorted by name as Knative orders them; a folder
// without EventPolicies gives none. A policy applies to the Broker when its spec.to is
// empty or names it by ref (the Broker of the manifests, else events.BrokerName).
// namespace is the one the broker runs in: subjects of ManifestNamespace
// (system:serviceaccount:podguard:...) are rewritten to it, and a policy whose
// metadata.namespace is another than these two is an error.
//
// What Knative resolves and the local broker cannot is refused with an error saying so:
// spec.from[].ref (name the sender's identity with sub), spec.to[].selector and cesql
// filters. So are what Knative's webhook refuses: a sub with "*" other than at its end, a
// filter with two dialects, an attribute name that is not lower-case letters and digits.
// Filters with an empty value, which Knative drops, are refused too.
func LoadPolicies(dir, namespace string) ([]Policy, error) {
	if !isDNSLabel(namespace) {
		return nil, fmt.Errorf("load event policies of %s: namespace %q is not a DNS-1123 label", dir, namespace)
	}
	type loaded struct {
		Policy
		to []target
	}
	var (
		all        []loaded
		brokerName string
	)
	err := eventingDocuments(dir, func(file string, m header, doc []byte) error {
		switch m.Kind {
		case "Broker":
			if brokerName == "" {
				brokerName = m.Metadata.Name
			}
		case "EventPolicy":
			if ns := m.Metadata.Namespace; ns != "" && ns != namespace && ns != ManifestNamespace {
				return fmt.Errorf("%s: event policy %q: namespace %q, but the broker runs in %q", file, m.Metadata.Name, ns, namespace)
			}
			p, to, err := policy(m.Metadata.Name, doc, namespace)
			if err != nil {
				return fmt.Errorf("%s: event policy %q: %w", file, m.Metadata.Name, err)
			}
			p.File = file
			all = append(all, loaded{Policy: p, to: to})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if brokerName == "" {
		brokerName = events.BrokerName
	}
	var out []Policy
	seen := map[string]string{}
	for _, p := range all {
		if prev, ok := seen[p.Name]; ok {
			return nil, fmt.Errorf("%s: event policy %q: name already used in %s", p.File, p.Name, prev)
		}
		seen[p.Name] = p.File
		if len(p.to) == 0 || slices.ContainsFunc(p.to, func(t target) bool { return t.isBroker(brokerName) }) {
			out = append(out, p.Policy)
		}
	}
	slices.SortFunc(out, func(a, b Policy) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// target is a resource an EventPolicy's spec.to names.
type target struct{ group, kind, name string }

// isBroker reports whether t is the Broker called name.
func (t target) isBroker(name string) bool {
	return strings.EqualFold(t.group, strings.TrimSuffix(eventingGroup, "/")) && strings.EqualFold(t.kind, "Broker") &&
		strings.EqualFold(t.name, name)
}

// policy reads the EventPolicy doc called name, with its subjects for namespace, and
// the resources it applies to (none: all of the namespace).
func policy(name string, doc []byte, namespace string) (Policy, []target, error) {
	p := Policy{Name: name}
	if !isDNSLabel(name) {
		return p, nil, fmt.Errorf("metadata.name is not a DNS-1123 label")
	}
	var pm policyManifest
	if err := yaml.UnmarshalStrict(doc, &pm); err != nil {
		return p, nil, err
	}
	var spec policySpec
	if len(pm.Spec) > 0 {
		dec := json.NewDecoder(bytes.NewReader(pm.Spec))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return p, nil, fmt.Errorf("spec: %w", err)
		}
	}
	var to []target
	for i, t := range spec.To {
		switch {
		case t.Ref != nil && len(t.Selector) > 0:
			return p, nil, fmt.Errorf("spec.to[%d]: both ref and selector", i)
		case len(t.Selector) > 0:
			return p, nil, fmt.Errorf("spec.to[%d]: selector: the local broker does not read labels; name the Broker with ref", i)
		case t.Ref == nil:
			return p, nil, fmt.Errorf("spec.to[%d]: neither ref nor selector", i)
		case t.Ref.APIVersion == "" || t.Ref.Kind == "" || t.Ref.Name == "":
			return p, nil, fmt.Errorf("spec.to[%d].ref: apiVersion, kind and name are required", i)
		}
		group, _, _ := strings.Cut(t.Ref.APIVersion, "/")
		if !strings.Contains(t.Ref.APIVersion, "/") {
			group = "" // the core group: apiVersion v1
		}
		to = append(to, target{group: group, kind: t.Ref.Kind, name: t.Ref.Name})
	}
	for i, f := range spec.From {
		switch {
		case len(f.Ref) > 0 && f.Sub != nil:
			return p, nil, fmt.Errorf("spec.from[%d]: both ref and sub", i)
		case len(f.Ref) > 0:
			return p, nil, fmt.Errorf("spec.from[%d]: ref: the local broker does not resolve references to their OIDC identities; name the identity with sub", i)
		case f.Sub == nil || *f.Sub == "":
			return p, nil, fmt.Errorf("spec.from[%d]: neither ref nor sub", i)
		}
		sub := *f.Sub
		if star := strings.IndexByte(sub, '*'); star >= 0 && star != len(sub)-1 {
			return p, nil, fmt.Errorf("spec.from[%d].sub %q: '*' is only allowed at the end", i, sub)
		}
		p.From = append(p.From, inNamespace(sub, namespace))
	}
	for i, f := range spec.Filters {
		filter, err := compileFilter(f)
		if err != nil {
			return p, nil, fmt.Errorf("spec.filters[%d]: %w", i, err)
		}
		p.Filters = append(p.Filters, filter)
	}
	return p, to, nil
}

// inNamespace rewrites a subject of a service account of ManifestNamespace (or a prefix
// of those) to namespace.
func inNamespace(sub, namespace string) string {
	prefix := events.ServiceAccountUser(ManifestNamespace, "")
	if rest, ok := strings.CutPrefix(sub, prefix); ok {
		return events.ServiceAccountUser(namespace, rest)
	}
	return sub
}

// compileFilter checks f as Knative's webhook does, and refuses what the local broker
// cannot evaluate (cesql) or Knative would silently drop (empty values).
func compileFilter(f filterSpec) (Filter, error) {
	var out Filter
	dialects := 0
	for _, set := range []bool{len(f.All) > 0, len(f.Any) > 0, f.Not != nil, len(f.Exact) > 0, len(f.Prefix) > 0, len(f.Suffix) > 0, f.CESQL != ""} {
		if set {
			dialects++
		}
	}
	switch {
	case dialects > 1:
		return out, fmt.Errorf("multiple dialects found, filters can have only one dialect set")
	case f.CESQL != "":
		return out, fmt.Errorf("cesql %q: the local broker does not evaluate CloudEvents SQL; use exact, prefix, suffix, all, any and not", f.CESQL)
	}
	for _, d := range []struct {
		name string
		in   map[string]string
		out  *map[string]string
	}{{"exact", f.Exact, &out.Exact}, {"prefix", f.Prefix, &out.Prefix}, {"suffix", f.Suffix, &out.Suffix}} {
		for k, v := range d.in {
			if !isAttributeName(k) {
				return out, fmt.Errorf("%s: attribute %q: CloudEvents attribute names are lower-case letters and digits", d.name, k)
			}
			if v == "" {
				return out, fmt.Errorf("%s: attribute %q: empty value", d.name, k)
			}
		}
		if len(d.in) > 0 {
			*d.out = d.in
		}
	}
	for _, l := range []struct {
		name string
		in   []filterSpec
		out  *[]Filter
	}{{"all", f.All, &out.All}, {"any", f.Any, &out.Any}} {
		for i, sub := range l.in {
			c, err := compileFilter(sub)
			if err != nil {
				return out, fmt.Errorf("%s[%d]: %w", l.name, i, err)
			}
			*l.out = append(*l.out, c)
		}
	}
	if f.Not != nil {
		c, err := compileFilter(*f.Not)
		if err != nil {
			return out, fmt.Errorf("not: %w", err)
		}
		out.Not = &c
	}
	return out, nil
}

// verdict is what a filter makes of an event: no filter at all (an empty one) neither
// passes nor fails it.
type verdict int

const (
	noVerdict verdict = iota
	pass
	fail
)

func verdictOf(ok bool) verdict {
	if ok {
		return pass
	}
	return fail
}

// eval applies f to e, as Knative's subscriptionsapi filters do.
func (f Filter) eval(e event.Event) verdict {
	switch {
	case len(f.Exact) > 0:
		return verdictOf(attributesMatch(f.Exact, e, func(got, want string) bool { return got == want }))
	case len(f.Prefix) > 0:
		return verdictOf(attributesMatch(f.Prefix, e, strings.HasPrefix))
	case len(f.Suffix) > 0:
		return verdictOf(attributesMatch(f.Suffix, e, strings.HasSuffix))
	case len(f.All) > 0:
		return all(f.All, e)
	case len(f.Any) > 0:
		out := noVerdict
		for _, g := range f.Any {
			switch g.eval(e) {
			case pass:
				return pass
			case fail:
				out = fail
			}
		}
		return out
	case f.Not != nil:
		switch f.Not.eval(e) {
		case pass:
			return fail
		case fail:
			return pass
		}
	}
	return noVerdict
}

// all is the verdict of filters that must all pass.
func all(filters []Filter, e event.Event) verdict {
	out := noVerdict
	for _, g := range filters {
		switch g.eval(e) {
		case fail:
			return fail
		case pass:
			out = pass
		}
	}
	return out
}

// attributesMatch reports whether e has every attribute of want with a value that
// matches it.
func attributesMatch(want map[string]string, e event.Event, match func(got, want string) bool) bool {
	for name, v := range want {
		got, ok := attribute(e, name)
		if !ok || !match(got, v) {
			return false
		}
	}
	return true
}

// admits reports whether the policy names subject among its senders: exactly (in any
// case), or by a prefix ending in "*", as Knative matches subjects.
func (p Policy) admits(subject string) bool {
	return slices.ContainsFunc(p.From, func(s string) bool {
		if prefix, ok := strings.CutSuffix(s, "*"); ok {
			return strings.HasPrefix(subject, prefix)
		}
		return strings.EqualFold(s, subject)
	})
}

// accepts reports whether e passes the policy's filters.
func (p Policy) accepts(e event.Event) bool { return all(p.Filters, e) != fail }
