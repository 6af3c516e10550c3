package eventing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Group is Knative Eventing's API group; the Broker and the Triggers are its v1 kinds,
// EventPolicies its v1alpha1 kind.
const Group = "eventing.knative.dev"

var (
	brokers  = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "brokers"}
	triggers = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "triggers"}
	policies = schema.GroupVersionResource{Group: Group, Version: "v1alpha1", Resource: "eventpolicies"}
	imcs     = schema.GroupVersionResource{Group: "messaging.knative.dev", Version: "v1", Resource: "inmemorychannels"}
	subs     = schema.GroupVersionResource{Group: "messaging.knative.dev", Version: "v1", Resource: "subscriptions"}
)

// fieldManager owns what this package applies (server-side apply).
const fieldManager = "podguard-local"

// Render renders a kustomization with `kubectl kustomize` and returns its Broker, Triggers
// and EventPolicies (the eventing.knative.dev objects); the rest of the install is left
// out.
func Render(ctx context.Context, kubectl, dir string) ([]*unstructured.Unstructured, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	return objs, nil
}

// Decode returns the eventing.knative.dev objects (Brokers, Triggers, EventPolicies) of a
// multi-document YAML stream.
func Decode(stream []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GroupVersionKind().Group != Group {
			continue
		}
		if k := u.GetKind(); k != "Broker" && k != "Trigger" && k != "EventPolicy" {
			return nil, fmt.Errorf("%s %s: only Brokers, Triggers and EventPolicies are installed", k, u.GetName())
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no Broker or Trigger")
	}
	return out, nil
}

// Trigger is a Trigger to a URI, as tests and tools add them beside an install's.
type Trigger struct {
	Name   string
	Broker string
	// Filter is the Trigger's exact attribute filter.
	Filter map[string]string
	// URI is the subscriber.
	URI string
	// Delivery, when set, is the Trigger's delivery spec; without it the Broker's applies.
	Delivery *Delivery
	// Labels are added to the Trigger's.
	Labels map[string]string
}

// Delivery is a Knative delivery spec.
type Delivery struct {
	Retry int
	// BackoffPolicy is linear or exponential; BackoffDelay the delay it grows from.
	BackoffPolicy string
	BackoffDelay  time.Duration
	// Timeout bounds one attempt; zero leaves it unset.
	Timeout time.Duration
	// DeadLetterURI receives what failed for good; empty: none.
	DeadLetterURI string
}

// isoDuration writes d as an ISO-8601 duration (PT0.5S).
func isoDuration(d time.Duration) string {
	return "PT" + strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S"
}

func (d *Delivery) spec() map[string]any {
	m := map[string]any{"retry": int64(d.Retry)}
	if d.BackoffPolicy != "" {
		m["backoffPolicy"] = d.BackoffPolicy
	}
	if d.BackoffDelay > 0 {
		m["backoffDelay"] = isoDuration(d.BackoffDelay)
	}
	if d.Timeout > 0 {
		m["timeout"] = isoDuration(d.Timeout)
	}
	if d.DeadLetterURI != "" {
		m["deadLetterSink"] = map[string]any{"uri": d.DeadLetterURI}
	}
	return m
}

func (t Trigger) object(ns string) *unstructured.Unstructured {
	filter := map[string]any{}
	for k, v := range t.Filter {
		filter[k] = v
	}
	spec := map[string]any{
		"broker":     t.Broker,
		"filter":     map[string]any{"attributes": filter},
		"subscriber": map[string]any{"uri": t.URI},
	}
	if t.Delivery != nil {
		spec["delivery"] = t.Delivery.spec()
	}
	labels := map[string]any{"app.kubernetes.io/managed-by": fieldManager}
	for k, v := range t.Labels {
		labels[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/v1",
		"kind":       "Trigger",
		"metadata":   map[string]any{"name": t.Name, "namespace": ns, "labels": labels},
		"spec":       spec,
	}}
}

// TriggerName turns any text into a Trigger name (a DNS-1123 label).
func TriggerName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) > 63 {
		n = strings.Trim(n[:63], "-")
	}
	return n
}

// Client works with the Knative Eventing objects of one namespace.
type Client struct {
	dyn       dynamic.Interface
	kube      kubernetes.Interface
	namespace string
	log       *zap.SugaredLogger
	// poll is the interval of the readiness checks.
	poll time.Duration
	// tokens, when set, issues the canaries' tokens (WithIdentity).
	tokens Tokens
}

// NewClient returns a client of namespace ns.
func NewClient(cfg *rest.Config, ns string, log *zap.SugaredLogger) (*Client, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if log == nil {
		log = zap.NewNop().Sugar()
	}
	return &Client{dyn: dyn, kube: kube, namespace: ns, log: log, poll: 100 * time.Millisecond}, nil
}

// Namespace is the client's namespace.
func (c *Client) Namespace() string { return c.namespace }

// EnsureNamespace creates the namespace unless it exists.
func (c *Client) EnsureNamespace(ctx context.Context) error {
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", c.namespace, err)
	}
	return nil
}

// Apply creates or updates the Brokers, Triggers and EventPolicies in the client's
// namespace (server-side apply); their own namespace, if any, is replaced, and so is the
// namespace of the service accounts an EventPolicy admits (written for podguard's
// namespace, InstallNamespace).
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		o = o.DeepCopy()
		o.SetNamespace(c.namespace)
		gvr := triggers
		switch o.GetKind() {
		case "Broker":
			gvr = brokers
		case "EventPolicy":
			gvr = policies
			if err := c.rewriteSubjects(o); err != nil {
				return err
			}
		}
		if _, err := c.dyn.Resource(gvr).Namespace(c.namespace).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), c.namespace, o.GetName(), err)
		}
	}
	return nil
}

// InstallNamespace is the namespace podguard's manifests are written for: the one the
// subjects of its EventPolicies name.
const InstallNamespace = "podguard"

// rewriteSubjects moves the service-account subjects of EventPolicy o from
// InstallNamespace to the client's namespace.
func (c *Client) rewriteSubjects(o *unstructured.Unstructured) error {
	from, _, err := unstructured.NestedSlice(o.Object, "spec", "from")
	if err != nil {
		return fmt.Errorf("EventPolicy %s: spec.from: %w", o.GetName(), err)
	}
	prefix := "system:serviceaccount:" + InstallNamespace + ":"
	for _, f := range from {
		m, ok := f.(map[string]any)
		if !ok {
			continue
		}
		if sub, ok := m["sub"].(string); ok && strings.HasPrefix(sub, prefix) {
			m["sub"] = "system:serviceaccount:" + c.namespace + ":" + strings.TrimPrefix(sub, prefix)
		}
	}
	return unstructured.SetNestedSlice(o.Object, from, "spec", "from")
}

// ApplyTrigger creates or updates a Trigger to a URI.
func (c *Client) ApplyTrigger(ctx context.Context, t Trigger) error {
	return c.Apply(ctx, []*unstructured.Unstructured{t.object(c.namespace)})
}

// DeleteTrigger deletes a Trigger, and the Subscription the broker made for it; one that
// is gone already is no error. The Subscription would be garbage-collected, but the
// cluster's garbage collector can lag by minutes when it is busy, and until the
// Subscription is gone the channel keeps delivering to the Trigger's filter path.
func (c *Client) DeleteTrigger(ctx context.Context, name string) error {
	t, err := c.dyn.Resource(triggers).Namespace(c.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete trigger %s/%s: %w", c.namespace, name, err)
	}
	err = c.dyn.Resource(triggers).Namespace(c.namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete trigger %s/%s: %w", c.namespace, name, err)
	}
	list, err := c.dyn.Resource(subs).Namespace(c.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("subscriptions of trigger %s/%s: %w", c.namespace, name, err)
	}
	for _, s := range list.Items {
		if ref := metav1.GetControllerOf(&s); ref == nil || ref.UID != t.GetUID() {
			continue
		}
		err := c.dyn.Resource(subs).Namespace(c.namespace).Delete(ctx, s.GetName(), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete subscription %s/%s of trigger %s: %w", c.namespace, s.GetName(), name, err)
		}
	}
	return nil
}

// Install renders a kustomization (deploy/overlays/local-eventing) with kubectl, creates
// the client's namespace if needed and applies the Broker and Triggers there; it returns
// the Broker's name. It does not wait for routing (WaitRouted does).
func (c *Client) Install(ctx context.Context, kubectl, dir string) (string, error) {
	objs, err := Render(ctx, kubectl, dir)
	if err != nil {
		return "", err
	}
	var broker string
	for _, o := range objs {
		if o.GetKind() == "Broker" {
			if broker != "" {
				return "", fmt.Errorf("%s: two Brokers (%s, %s)", dir, broker, o.GetName())
			}
			broker = o.GetName()
		}
	}
	if broker == "" {
		return "", fmt.Errorf("%s: no Broker", dir)
	}
	if err := c.EnsureNamespace(ctx); err != nil {
		return "", err
	}
	return broker, c.Apply(ctx, objs)
}
