// Package kube holds podguard's Kubernetes side: building a client the way a deployment
// does (in-cluster, or a kubeconfig), resolving pods into Karbor's dependency graph,
// pod -> PVC -> PV -> Cinder volume, and pod -> the ConfigMaps, Secrets and ServiceAccount
// it references; the definitions a checkpoint saves, and the objects a restore creates.
//
//	cs, err := kube.NewClientset(ctx, kube.Config{Kubeconfig: os.Getenv("KUBECONFIG")})
//	r := kube.NewResolver(kube.Clientset{Interface: cs}, kube.ResolverOptions{})
//	g, err := r.Resolve(ctx, kube.Selection{LabelSelector: "app=web"}) // all namespaces
package kube

import (
	"context"
	"fmt"
	"net/http"

	"github.com/podguard/podguard/shared/observe"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config is how a function reaches the Kubernetes API. With no kubeconfig it uses the
// in-cluster service account, then the default kubeconfig rules (~/.kube/config).
type Config struct {
	Kubeconfig string  `envconfig:"KUBECONFIG"`
	Context    string  `envconfig:"KUBE_CONTEXT"`
	QPS        float32 `envconfig:"KUBE_API_QPS" default:"200"`
	Burst      int     `envconfig:"KUBE_API_BURST" default:"500"`
	// PageSize is the limit of one list request; larger scopes page with continue tokens.
	PageSize int64 `envconfig:"KUBE_LIST_PAGE_SIZE" default:"500"`
}

// RESTConfig builds the client configuration; wrap, when not nil, wraps the transport
// (for instance to count requests).
func (c Config) RESTConfig(wrap func(http.RoundTripper) http.RoundTripper) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if c.Kubeconfig == "" && c.Context == "" {
		rc, err = rest.InClusterConfig()
	}
	if rc == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if c.Kubeconfig != "" {
			rules.ExplicitPath = c.Kubeconfig
		}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: c.Context}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (kubeconfig %q): %w", c.Kubeconfig, err)
	}
	rc.QPS, rc.Burst = c.QPS, c.Burst
	rc.UserAgent = "podguard"
	if wrap != nil {
		rc.Wrap(wrap)
	}
	return rc, nil
}

// NewClientset builds a typed client from c; its calls are spans of the caller's trace
// when ctx's telemetry traces.
func NewClientset(ctx context.Context, c Config) (kubernetes.Interface, error) {
	var wrap func(http.RoundTripper) http.RoundTripper
	if t := observe.FromContext(ctx); t.Tracing() {
		wrap = func(rt http.RoundTripper) http.RoundTripper { return t.Transport(rt, "kubernetes") }
	}
	rc, err := c.RESTConfig(wrap)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
