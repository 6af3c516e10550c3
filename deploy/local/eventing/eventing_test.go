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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/events"
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
// own, and none of another type. The broker authenticates its senders
// (authentication-oidc): the test sends as a service account of its own, admitted for
// its types by an EventPolicy of its own, and an event without a token is refused.
func TestInstallRoutes(t *testing.T) {
	st := stacktest.Load(t)
	env := running(t)
	kube := st.Kube(t)
	ns := st.Namespace(t, kube, "eventing")
	cfg, err := st.KubeConfig().RESTConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventing.NewClient(cfg, ns, zaptest.NewLogger(t).Sugar())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := broker.NewServiceAccountTokens(kube, ns, broker.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.WithIdentity(tokens.Token)
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
	// The probe's sender and its EventPolicy.
	const sender = "probe-sender"
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sender}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	policy, err := eventing.Decode([]byte(`apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: from-probe-sender}
spec:
  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: ` + broker + `}}]
  from: [{sub: "system:serviceaccount:podguard:` + sender + `"}]
  filters: [{prefix: {type: com.example.}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, policy); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRouted(ctx, broker, url); err != nil { // waits for the policy to apply
		t.Fatal(err)
	}
	anonymous, _ := cloudevents.NewClientHTTP()
	probe := cloudevents.NewEvent()
	probe.SetID(uuid.NewString())
	probe.SetSource("test")
	probe.SetType("com.example.probe")
	if res := anonymous.Send(cloudevents.ContextWithTarget(ctx, url), probe); cloudevents.IsACK(res) {
		t.Fatal("an event without a token was accepted")
	} else {
		t.Logf("without a token: %v", res)
	}
	token, err := tokens.Token(ctx, sender, events.BrokerAudience(ns))
	if err != nil {
		t.Fatal(err)
	}
	client, _ := cloudevents.NewClientHTTP(cehttp.WithHeader("Authorization", "Bearer "+token))
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
