package deploy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
)

// localEventingOverlay is what the local Knative mode applies (deploy/local/eventing.sh).
const localEventingOverlay = "overlays/local-eventing"

// functionPorts reads FUNCTION_PORTS of deploy/local/stack.env: where each function
// listens in the local Knative mode.
func functionPorts(t *testing.T) map[string]string {
	t.Helper()
	ports := map[string]string{}
	for _, f := range strings.Fields(stackSetting(t, "FUNCTION_PORTS")) {
		name, port, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("FUNCTION_PORTS: %q is not name=port", f)
		}
		ports[name] = port
	}
	for fn := range functionMains {
		if ports[fn] == "" {
			t.Errorf("FUNCTION_PORTS has no port for %s", fn)
		}
	}
	return ports
}

// TestLocalEventingOverlay: the overlay the local Knative mode applies routes exactly
// like deploy/base (the Triggers the embedded broker routes by, and what the installs
// apply): same Triggers, filters and delivery specs, except that each subscriber and
// dead-letter sink is the function's process on 127.0.0.1, at its port in
// FUNCTION_PORTS, with the function's audience. Every other object and field, the
// EventPolicies included, is deploy/base's.
func TestLocalEventingOverlay(t *testing.T) {
	ports := functionPorts(t)
	uri := func(fn string) string { return fmt.Sprintf("http://127.0.0.1:%s", ports[fn]) }
	base, err := broker.LoadTriggers("base")
	if err != nil {
		t.Fatal(err)
	}
	local := installedTriggers(t, render(t, localEventingOverlay))
	if len(local) != len(base) {
		t.Fatalf("%d Triggers in the overlay, %d in deploy/base", len(local), len(base))
	}
	for i, want := range base {
		want.File = ""
		// The destinations keep their audience: the broker delivers with a token for it,
		// and the local functions verify it.
		want.Subscriber = broker.Destination{URI: uri(want.Subscriber.Ref), Audience: events.FunctionAudience(want.Subscriber.Ref)}
		if want.Delivery.DeadLetterSink != nil {
			want.Delivery.DeadLetterSink = &broker.Destination{URI: uri(want.Delivery.DeadLetterSink.Ref), Audience: events.FunctionAudience(want.Delivery.DeadLetterSink.Ref)}
		}
		got := local[i]
		got.File = ""
		if !reflect.DeepEqual(got, want) {
			t.Errorf("trigger %s:\n got %+v\nwant %+v", want.Name, got, want)
		}
	}

	// Apart from those destinations, the rendered overlay is deploy/base.
	strip := func(m *manifests) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, o := range m.objects {
			var v map[string]any
			o.decode(t, &v)
			if o.group() == eventingGroup {
				spec, _ := v["spec"].(map[string]any)
				delete(spec, "subscriber")
				if d, ok := spec["delivery"].(map[string]any); ok {
					delete(d, "deadLetterSink")
				}
			}
			out[o.String()] = v
		}
		return out
	}
	got, want := strip(render(t, localEventingOverlay)), strip(render(t, "base"))
	if len(got) != len(want) {
		t.Errorf("%d objects in the overlay, %d in deploy/base", len(got), len(want))
	}
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s differs from deploy/base beyond its destinations:\n got %v\nwant %v", k, got[k], w)
		}
	}
	// The Broker's default dead-letter sink is the dead-letters process too.
	var b brokerObject
	brokers := render(t, localEventingOverlay).all(eventingGroup, "Broker")
	if len(brokers) != 1 {
		t.Fatalf("%d Brokers", len(brokers))
	}
	brokers[0].decode(t, &b)
	if d := b.Spec.Delivery; d == nil || d.DeadLetterSink == nil || d.DeadLetterSink.URI != uri(deadLetters) || d.DeadLetterSink.Ref != nil ||
		d.DeadLetterSink.Audience != events.FunctionAudience(deadLetters) {
		t.Errorf("Broker deadLetterSink %+v, want %s with audience %s", b.Spec.Delivery, uri(deadLetters), events.FunctionAudience(deadLetters))
	}
}
