package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
)

// installedTriggers loads the Triggers of a rendered install the way the local broker
// loads deploy/base.
func installedTriggers(t *testing.T, m *manifests) []broker.Trigger {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rendered.yaml"), m.yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	triggers, err := broker.LoadTriggers(dir)
	if err != nil {
		t.Fatalf("the rendered install: %v", err)
	}
	return triggers
}

// TestLocalRoutingIsInstalled: the local runner routes by deploy/base; what each overlay
// installs must be the same Triggers, filters, subscribers and delivery specs, so the
// local tests exercise the routing of a cluster.
func TestLocalRoutingIsInstalled(t *testing.T) {
	local, err := broker.LoadTriggers("base")
	if err != nil {
		t.Fatal(err)
	}
	strip := func(ts []broker.Trigger) []broker.Trigger {
		out := slices.Clone(ts)
		for i := range out {
			out[i].File = ""
		}
		return out
	}
	for _, dir := range []string{clusterOverlay, namespacedOverlay} {
		installed := installedTriggers(t, render(t, dir))
		if !reflect.DeepEqual(strip(installed), strip(local)) {
			t.Errorf("%s installs other Triggers than the local runner routes by (deploy/base):\ninstalled %+v\nlocal     %+v", dir, installed, local)
		}
	}
}

// TestCatalogTriggers walks the event catalog and the installed Triggers both ways:
// every type a function consumes (whoever emits it: a function, users, the PingSource)
// reaches that function's Service; every Trigger routes a type that some function, users
// or the PingSource emit, to a function that consumes it.
func TestCatalogTriggers(t *testing.T) {
	m := render(t, clusterOverlay)
	triggers := installedTriggers(t, m)
	catalog := map[string]events.Type{}
	for _, typ := range events.Catalog() {
		catalog[typ.Name] = typ
	}
	// The flows an event may belong to: Triggers may filter on it.
	flows := []string{"", events.FlowProtect, events.FlowRestore, events.FlowDelete}

	for _, typ := range events.Catalog() {
		if len(typ.Producers) == 0 {
			t.Errorf("%s: no producer in the catalog", typ.Name)
		}
		for _, fn := range typ.Consumers {
			if fn == events.User {
				continue // people subscribe with Triggers of their own
			}
			if typ.FrontDoor && fn == events.FnFrontDoor {
				continue // sent to the front door directly, never through the broker
			}
			reached := false
			for _, flow := range flows {
				if slices.Contains(routedTo(triggers, typ.Name, flow), fn) {
					reached = true
				}
			}
			if !reached {
				t.Errorf("%s (from %v) is consumed by %s, but no Trigger routes it there", typ.Name, typ.Producers, fn)
			}
		}
		if slices.Contains(typ.Producers, events.PingSource) && len(m.all(sourcesGroup, "PingSource")) == 0 {
			t.Errorf("%s comes from a PingSource, but none is installed", typ.Name)
		}
	}

	for _, tr := range triggers {
		name := tr.Filter["type"]
		typ, ok := catalog[name]
		switch {
		case name == "":
			t.Errorf("trigger %s: no exact filter on type", tr.Name)
		case !ok:
			t.Errorf("trigger %s: type %q is not in the event catalog", tr.Name, name)
		case !slices.Contains(typ.Consumers, tr.Subscriber.Ref):
			t.Errorf("trigger %s: routes %s to %s, which does not consume it (consumers %v)", tr.Name, name, tr.Subscriber.Ref, typ.Consumers)
		}
		for attr, v := range tr.Filter {
			switch attr {
			case "type":
			case events.ExtFlow:
				if v == "" || !slices.Contains(flows, v) {
					t.Errorf("trigger %s: %s=%q is not a flow", tr.Name, attr, v)
				}
			default:
				t.Errorf("trigger %s: filters on %s, which podguard's events do not carry", tr.Name, attr)
			}
		}
	}
}

// routedTo lists the subscribers an event of the type and flow reaches.
func routedTo(triggers []broker.Trigger, typ, flow string) []string {
	e := event.New()
	e.SetID("probe")
	e.SetSource("test/probe")
	e.SetType(typ)
	if flow != "" {
		e.SetExtension(events.ExtFlow, flow)
	}
	var out []string
	for _, tr := range triggers {
		if tr.Matches(e) {
			out = append(out, tr.Subscriber.Ref)
		}
	}
	return out
}
