package eventing_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/shared/stacktest"
)

// running returns the env of the local Knative mode, skipping the test when it is not
// running (unless PODGUARD_REQUIRE_EVENTING=1).
func running(t *testing.T) *eventing.Env {
	t.Helper()
	env, err := eventing.LoadEnv(eventing.EnvFile())
	if err != nil {
		if os.Getenv("PODGUARD_REQUIRE_EVENTING") == "1" {
			t.Fatal(err)
		}
		t.Skipf("the local Knative mode is not running (make eventing-up): %v", err)
	}
	// An env file outlives processes that were killed; the ingress answering is what
	// says the mode runs.
	if u, err := url.Parse(env.Ingress); err == nil {
		c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
		if err != nil {
			if os.Getenv("PODGUARD_REQUIRE_EVENTING") == "1" {
				t.Fatalf("the broker ingress %s does not answer: %v", env.Ingress, err)
			}
			t.Skipf("the local Knative mode is not running (its ingress %s does not answer: %v)", env.Ingress, err)
		}
		c.Close()
	}
	return env
}

// TestInstallRoutes installs deploy/overlays/local-eventing into a new namespace, waits
// until the broker routes, then routes an event by its type to a Trigger of the test's
// own, and none of another type.
func TestInstallRoutes(t *testing.T) {
	st := stacktest.Load(t)
	env := running(t)
	ns := st.Namespace(t, st.Kube(t), "eventing")
	cfg, err := st.KubeConfig().RESTConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventing.NewClient(cfg, ns, zaptest.NewLogger(t).Sugar())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	broker, err := c.Install(ctx, st.Env["PODGUARD_KUBECTL"], filepath.Join(stacktest.RepoRoot(t), "deploy", "overlays", "local-eventing"))
	if err != nil {
		t.Fatal(err)
	}
	url := env.BrokerURL(ns, broker)
	if err := c.WaitRouted(ctx, broker, url); err != nil {
		t.Fatal(err)
	}
	t.Logf("overlay installed and routed in %s", time.Since(start).Round(time.Millisecond))

	got := make(chan cloudevents.Event, 4)
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		if err == nil {
			got <- *e
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sub.Close()
	start = time.Now()
	if err := c.ApplyTrigger(ctx, eventing.Trigger{Name: "probe", Broker: broker, Filter: map[string]string{"type": "com.example.probe"}, URI: sub.URL}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRouted(ctx, broker, url); err != nil {
		t.Fatal(err)
	}
	t.Logf("one more Trigger routed in %s", time.Since(start).Round(time.Millisecond))
	client, _ := cloudevents.NewClientHTTP()
	for _, typ := range []string{"com.example.other", "com.example.probe"} {
		e := cloudevents.NewEvent()
		e.SetID(uuid.NewString())
		e.SetSource("test")
		e.SetType(typ)
		if res := client.Send(cloudevents.ContextWithTarget(ctx, url), e); !cloudevents.IsACK(res) {
			t.Fatalf("send %s: %v", typ, res)
		}
	}
	select {
	case e := <-got:
		if e.Type() != "com.example.probe" {
			t.Fatalf("delivered %s", e.Type())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nothing delivered")
	}
}
