package runner

import (
	"context"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/kube"
)

// Identity turns on sender identity inside the broker, as Knative Eventing's
// authentication-oidc does in a cluster (events/identity.go says who is who):
//
//   - each function sends into the broker with a token of its own service account
//     (podguard-<function>) for the broker's audience, which the local apiserver issues
//     (TokenRequest);
//   - the broker admits each event type only from the senders the EventPolicies of the
//     manifests name (deploy/base/eventpolicies.yaml); the embedded broker applies them
//     itself, Knative's broker applies them as installed;
//   - each delivery carries a token of the Trigger's OIDC service account for the
//     function's audience, and each function verifies it against the apiserver's keys and
//     accepts each type only from the Trigger that routes it.
//
// The embedded broker runs in namespace Namespace (podguard when empty), where the runner
// creates the functions' and the Triggers' service accounts; behind Knative the Broker's
// namespace is used, and Knative's controller makes the Triggers' service accounts.
type Identity struct {
	Namespace string
}

// identity is the running part of Identity: the apiserver that issues and verifies the
// tokens, and podguard's namespace there.
type identity struct {
	namespace string
	tokens    *broker.ServiceAccountTokens
	keys      access.KeySource
	issuer    string
}

// setUp creates the service accounts of podguard's parts in namespace (the Triggers'
// too, unless Knative makes them) and returns the runner's token issuer and verifier
// keys.
func (o *Identity) setUp(ctx context.Context, namespace string, triggers bool) (*identity, error) {
	rc, err := restConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	var names []string
	for _, fn := range []string{events.FnListPods, events.FnSnapshotMetadata, events.FnBackupVolume, events.FnChoreographer,
		events.FnFrontDoor, events.FnRestoreVolume, events.FnRecreatePod, events.FnDeleteBackup, events.FnDeadLetters} {
		names = append(names, events.ServiceAccount(fn))
	}
	// The tick's PingSource: the runner's ticker sends as it (no PingSource runs locally).
	names = append(names, events.PingSourceServiceAccount(events.TickSource))
	if triggers {
		for _, r := range events.Routes() {
			names = append(names, events.TriggerServiceAccount(r.Trigger))
		}
	}
	for _, name := range names {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
		if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("service account %s/%s: %w", namespace, name, err)
		}
	}
	keys, issuer, err := access.DiscoveryKeysFor(ctx, rc)
	if err != nil {
		return nil, err
	}
	tokens, err := broker.NewServiceAccountTokens(cs, namespace, broker.TokenOptions{})
	if err != nil {
		return nil, err
	}
	return &identity{namespace: namespace, tokens: tokens, keys: keys, issuer: issuer}, nil
}

// restConfig reaches the local apiserver (KUBECONFIG), as the functions do.
func restConfig() (*rest.Config, error) {
	var kc kube.Config
	kc.Kubeconfig = os.Getenv("KUBECONFIG")
	kc.QPS, kc.Burst = 50, 100
	return kc.RESTConfig(nil)
}

// verifier verifies tokens for audience.
func (id *identity) verifier(audience string) (*access.Verifier, error) {
	return access.NewVerifier(id.keys, access.VerifierOptions{Issuer: id.issuer, Audience: audience})
}

// gate verifies the deliveries to function fn.
func (id *identity) gate(fn string) (function.Gate, error) {
	v, err := id.verifier(events.FunctionAudience(fn))
	if err != nil {
		return nil, err
	}
	return function.NewDeliveryGate(v, id.namespace, fn), nil
}

// source is the token of service account sa for the broker's audience.
func (id *identity) source(sa string) function.TokenSource {
	return tokenFunc(func(ctx context.Context) (string, error) {
		return id.tokens.Token(ctx, sa, events.BrokerAudience(id.namespace))
	})
}

type tokenFunc func(ctx context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// IssueToken issues a token of service account sa of podguard's namespace for audience, as
// the parts of podguard get theirs (tests send as one of them, or as a stranger); an
// error when the runner runs without Identity.
func (r *Runner) IssueToken(ctx context.Context, sa, audience string) (string, error) {
	if r.identity == nil {
		return "", errors.New("the runner runs without sender identity (Options.Identity)")
	}
	return r.identity.tokens.Token(ctx, sa, audience)
}

// Namespace is podguard's namespace on the apiserver with Identity: where its service
// accounts are, and the namespace of the broker's audience.
func (r *Runner) Namespace() string {
	if r.identity == nil {
		return ""
	}
	return r.identity.namespace
}
