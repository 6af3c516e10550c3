package eventing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// CanaryType is the type of the events WaitRouted sends through the broker. Only the
// canary Triggers WaitRouted adds route it.
const CanaryType = "dev.podguard.local.canary"

// canaryLabel marks the canary Triggers.
const canaryLabel = "podguard.dev/routing-canary"

// CanaryServiceAccount is who sends the canaries into a Broker that authenticates its
// senders (WithIdentity); the EventPolicy CanaryPolicy admits it for CanaryType only.
const (
	CanaryServiceAccount = "podguard-local-canary"
	CanaryPolicy         = "from-local-canary"
)

// Tokens issues a token of a service account of the client's namespace for an audience
// (a TokenRequest).
type Tokens func(ctx context.Context, serviceAccount, audience string) (string, error)

// WithIdentity is for a Broker with Knative's authentication-oidc: WaitRouted then sends
// its canaries with a token tokens issues for CanaryServiceAccount (created, with
// CanaryPolicy, when missing), and waits for the Broker to apply every EventPolicy of the
// namespace before it sends.
func (c *Client) WithIdentity(tokens Tokens) { c.tokens = tokens }

// canaryIdentity creates the canary's service account and EventPolicy and returns a token
// of it for the Broker's audience.
func (c *Client) canaryIdentity(ctx context.Context, broker string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: CanaryServiceAccount, Namespace: c.namespace}}
	if _, err := c.kube.CoreV1().ServiceAccounts(c.namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("canary service account: %w", err)
	}
	policy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/v1alpha1",
		"kind":       "EventPolicy",
		"metadata":   map[string]any{"name": CanaryPolicy, "labels": map[string]any{canaryLabel: "true"}},
		"spec": map[string]any{
			"to":      []any{map[string]any{"ref": map[string]any{"apiVersion": Group + "/v1", "kind": "Broker", "name": broker}}},
			"from":    []any{map[string]any{"sub": "system:serviceaccount:" + InstallNamespace + ":" + CanaryServiceAccount}},
			"filters": []any{map[string]any{"exact": map[string]any{"type": CanaryType}}},
		},
	}}
	if err := c.Apply(ctx, []*unstructured.Unstructured{policy}); err != nil {
		return "", err
	}
	b, err := c.dyn.Resource(brokers).Namespace(c.namespace).Get(ctx, broker, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("broker %s: %w", broker, err)
	}
	audience, _, _ := unstructured.NestedString(b.Object, "status", "address", "audience")
	if audience == "" {
		return "", fmt.Errorf("broker %s/%s has no audience: is authentication-oidc enabled in Knative's config-features?", c.namespace, broker)
	}
	return c.tokens(ctx, CanaryServiceAccount, audience)
}

// WaitRouted waits until broker, in the client's namespace, routes events to every one of
// its Triggers:
//
//  1. the Broker and every Trigger of it are Ready, and its channel (an InMemoryChannel)
//     is Ready at its current generation with a subscriber per Trigger;
//  2. then a canary Trigger is added, the same is waited for, and canary events are sent
//     to brokerURL until one arrives.
//
// Ready conditions alone are not enough: the channel dispatcher marks a new subscriber
// ready before it routes to it (it configures its fan-out once it sees the channel Ready
// at the new generation, up to about a second later). The canary's subscription is the
// last one added to the channel, so once a canary arrives, every earlier Trigger is
// routed too.
//
// Canary Triggers stay (each one's filter matches canaries of its own source only, so the
// broker's filter drops every other event for it). Deleting one is worse: its
// subscription can stay in the channel for minutes after the Trigger is gone (a busy
// controller finalizes it late), and the in-memory channel, which delivers synchronously,
// then answers 500 to every event sent to the broker meanwhile.
func (c *Client) WaitRouted(ctx context.Context, broker, brokerURL string) error {
	start := time.Now()
	var opts []cehttp.Option
	if c.tokens != nil {
		if _, err := c.waitReady(ctx, broker, ""); err != nil {
			return err
		}
		token, err := c.canaryIdentity(ctx, broker)
		if err != nil {
			return err
		}
		opts = append(opts, cehttp.WithHeader("Authorization", "Bearer "+token))
	}
	n, err := c.waitReady(ctx, broker, "")
	if err != nil {
		return err
	}
	ready := time.Since(start)

	arrived := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("canary receiver: %w", err)
	}
	name := TriggerName("routing-canary-" + uuid.NewString()[:8])
	source := "podguard-local/" + name
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-source") == source {
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	t := Trigger{Name: name, Broker: broker, Filter: map[string]string{"type": CanaryType, "source": source},
		URI: "http://" + ln.Addr().String(), Labels: map[string]string{canaryLabel: "true"}}
	if err := c.ApplyTrigger(ctx, t); err != nil {
		return err
	}
	if _, err := c.waitReady(ctx, broker, name); err != nil {
		return err
	}

	client, err := cloudevents.NewClientHTTP(opts...)
	if err != nil {
		return err
	}
	target := cloudevents.ContextWithTarget(ctx, brokerURL)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for sent := 1; ; sent++ {
		e := cloudevents.NewEvent()
		e.SetID(uuid.NewString())
		e.SetSource(source)
		e.SetType(CanaryType)
		e.SetTime(time.Now().UTC())
		if res := client.Send(target, e); !cloudevents.IsACK(res) {
			last = res
		}
		select {
		case <-arrived:
			c.log.Infow("broker routes", "namespace", c.namespace, "broker", broker, "triggers", n,
				"ready", ready.Round(time.Millisecond), "routed", time.Since(start).Round(time.Millisecond), "canaries", sent)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("broker %s/%s: no canary through %s after %d tries (last send: %v): %w", c.namespace, broker, brokerURL, sent, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitReady polls until the Broker, its Triggers (including want, when set) and its
// channel are ready as WaitRouted describes; it returns the number of Triggers.
func (c *Client) waitReady(ctx context.Context, broker, want string) (int, error) {
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	var why string
	for {
		n, err := c.ready(ctx, broker, want)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, errNotReady) {
			return 0, err
		}
		why = err.Error()
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("broker %s/%s not routable: %s: %w", c.namespace, broker, why, ctx.Err())
		case <-tick.C:
		}
	}
}

var errNotReady = errors.New("not ready")

func notReady(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errNotReady)
}

func (c *Client) ready(ctx context.Context, broker, want string) (int, error) {
	b, err := c.dyn.Resource(brokers).Namespace(c.namespace).Get(ctx, broker, metav1.GetOptions{})
	if err != nil {
		return 0, notReady("broker: %v", err)
	}
	if !isReady(b) {
		return 0, notReady("broker %s not Ready", broker)
	}
	if c.tokens != nil {
		if err := c.policiesApplied(ctx, b); err != nil {
			return 0, err
		}
	}
	channel, _, _ := unstructured.NestedString(b.Object, "status", "annotations", "knative.dev/channelName")
	if channel == "" {
		return 0, notReady("broker %s names no channel yet", broker)
	}
	list, err := c.dyn.Resource(triggers).Namespace(c.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, notReady("triggers: %v", err)
	}
	n, found := 0, want == ""
	for i := range list.Items {
		t := &list.Items[i]
		if b, _, _ := unstructured.NestedString(t.Object, "spec", "broker"); b != broker || t.GetDeletionTimestamp() != nil {
			continue
		}
		n++
		found = found || t.GetName() == want
		if !isReady(t) {
			return 0, notReady("trigger %s not Ready", t.GetName())
		}
	}
	if !found {
		return 0, notReady("trigger %s not listed yet", want)
	}
	ch, err := c.dyn.Resource(imcs).Namespace(c.namespace).Get(ctx, channel, metav1.GetOptions{})
	if err != nil {
		return 0, notReady("channel %s: %v", channel, err)
	}
	if !isReady(ch) {
		return 0, notReady("channel %s not Ready at generation %d", channel, ch.GetGeneration())
	}
	// A deleted Trigger's subscriber can stay in the channel for a while (its Subscription
	// is finalized by a busy controller): extra subscribers are allowed; the canary that
	// must arrive afterwards proves the routing.
	subs, _, _ := unstructured.NestedSlice(ch.Object, "spec", "subscribers")
	if len(subs) < n {
		return 0, notReady("channel %s has %d subscribers for %d triggers", channel, len(subs), n)
	}
	status, _, _ := unstructured.NestedSlice(ch.Object, "status", "subscribers")
	readySubs := 0
	for _, s := range status {
		if m, ok := s.(map[string]any); ok && m["ready"] == "True" {
			readySubs++
		}
	}
	if readySubs < n {
		return 0, notReady("channel %s: %d of %d subscribers ready", channel, readySubs, n)
	}
	return n, nil
}

// policiesApplied: every EventPolicy of the namespace is Ready and listed among those
// broker b applies (Knative's ingress authorizes by that list).
func (c *Client) policiesApplied(ctx context.Context, b *unstructured.Unstructured) error {
	list, err := c.dyn.Resource(policies).Namespace(c.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return notReady("event policies: %v", err)
	}
	applied := map[string]bool{}
	refs, _, _ := unstructured.NestedSlice(b.Object, "status", "policies")
	for _, r := range refs {
		if m, ok := r.(map[string]any); ok {
			if name, ok := m["name"].(string); ok {
				applied[name] = true
			}
		}
	}
	for i := range list.Items {
		p := &list.Items[i]
		if !appliesTo(p, b.GetName()) { // the broker's own policy for its channel, say
			continue
		}
		if !isReady(p) {
			return notReady("event policy %s not Ready", p.GetName())
		}
		if !applied[p.GetName()] {
			return notReady("broker %s does not apply event policy %s yet", b.GetName(), p.GetName())
		}
	}
	return nil
}

// appliesTo: EventPolicy p names Broker broker in its spec.to, or names nothing (it then
// applies to every resource of its namespace).
func appliesTo(p *unstructured.Unstructured, broker string) bool {
	to, _, _ := unstructured.NestedSlice(p.Object, "spec", "to")
	if len(to) == 0 {
		return true
	}
	for _, t := range to {
		m, _ := t.(map[string]any)
		ref, _ := m["ref"].(map[string]any)
		if ref["kind"] == "Broker" && ref["name"] == broker {
			return true
		}
	}
	return false
}

// isReady: the object's status is of its current generation and its Ready condition is
// True.
func isReady(u *unstructured.Unstructured) bool {
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed != u.GetGeneration() {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m["status"] == "True"
		}
	}
	return false
}
