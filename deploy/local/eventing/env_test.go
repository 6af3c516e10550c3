package eventing

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadEnv(t *testing.T) {
	f := filepath.Join(t.TempDir(), "eventing.env")
	body := `# comment
export PODGUARD_EVENTING_ENV='` + f + `'
export PODGUARD_EVENTING_VERSION='v0.50.0'
export PODGUARD_EVENTING_INGRESS='http://127.0.0.1:18601'
export PODGUARD_FUNCTION_ADDRS='list-pods=127.0.0.1:18511,dead-letters=127.0.0.1:18519'
`
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := LoadEnv(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"list-pods": "127.0.0.1:18511", "dead-letters": "127.0.0.1:18519"}
	if e.Version != "v0.50.0" || !reflect.DeepEqual(e.Functions, want) {
		t.Fatalf("env %+v", e)
	}
	if u := e.BrokerURL("ns", "podguard"); u != "http://127.0.0.1:18601/ns/podguard" {
		t.Fatalf("broker URL %s", u)
	}
	if got, _ := ParseAddrs(FormatAddrs(want)); !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip %v", got)
	}
	if _, err := LoadEnv(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "make eventing-up") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := ParseAddrs("list-pods"); err == nil {
		t.Fatal("an address without a name was parsed")
	}
}

func TestDecodeKeepsBrokerAndTriggers(t *testing.T) {
	objs, err := Decode([]byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: c}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: podguard}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec: {broker: podguard, subscriber: {uri: "http://127.0.0.1:1"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "Broker" || objs[1].GetName() != "t" {
		t.Fatalf("decoded %v", objs)
	}
	if _, err := Decode([]byte("apiVersion: eventing.knative.dev/v1\nkind: EventType\nmetadata: {name: e}\n")); err == nil {
		t.Fatal("an EventType was accepted")
	}
}

func TestTriggerObject(t *testing.T) {
	if n := TriggerName("observer-dev.podguard.checkpoint.finished"); n != "observer-dev-podguard-checkpoint-finished" {
		t.Fatalf("name %s", n)
	}
	if n := TriggerName(strings.Repeat("a.", 40)); len(n) > 63 || strings.HasSuffix(n, "-") {
		t.Fatalf("long name %s", n)
	}
	tr := Trigger{Name: "x", Broker: "b", Filter: map[string]string{"type": "t"}, URI: "http://127.0.0.1:1",
		Delivery: &Delivery{Retry: 2, BackoffPolicy: "linear", BackoffDelay: 250 * time.Millisecond, DeadLetterURI: "http://127.0.0.1:2"}}
	o := tr.object("ns")
	spec := o.Object["spec"].(map[string]any)
	d := spec["delivery"].(map[string]any)
	if o.GetNamespace() != "ns" || d["backoffDelay"] != "PT0.25S" || d["retry"] != int64(2) ||
		d["deadLetterSink"].(map[string]any)["uri"] != "http://127.0.0.1:2" || spec["subscriber"].(map[string]any)["uri"] != tr.URI {
		t.Fatalf("trigger %v", o.Object)
	}
}
