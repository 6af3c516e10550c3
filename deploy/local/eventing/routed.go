package eventing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// CanaryType is the type of the events WaitRouted sends through the broker. Only the
// canary Triggers WaitRouted adds route it.
const CanaryType = "dev.podguard.local.canary"

// canaryLabel marks the canary Triggers.
const canaryLabel = "podguard.dev/routing-canary"

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

	client, err := cloudevents.NewClientHTTP()
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
