package listpods_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestListPodsResolvesWhatPodsReference runs against the local kube-apiserver: two pods
// share a ConfigMap, a Secret and a ServiceAccount; one also mounts a
// service-account-token Secret and takes env from a ConfigMap that does not exist,
// marked optional; a third reads a Secret that does not exist. Whatever the strategy
// (GETs or lists), each object is one node read once, the token Secret, the default
// ServiceAccount and kube-root-ca.crt are left out, and only the missing Secret is a
// problem.
func TestListPodsResolvesWhatPodsReference(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	ns := st.Namespace(t, cs, "lp-refs")
	ctx := context.Background()
	stacktest.CreateAppObjects(t, cs, ns)
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-sa-token",
		Annotations: map[string]string{corev1.ServiceAccountNameKey: stacktest.AppServiceAccount}}, Type: corev1.SecretTypeServiceAccountToken}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, token, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web, worker := stacktest.AppPods(ns)
	web.Spec.Volumes = append(web.Spec.Volumes, corev1.Volume{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: token.Name}}})
	broken := stacktest.Pod(ns, "broken", map[string]string{"app": "broken"})
	broken.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "t"}}}}
	plain := stacktest.Pod(ns, "plain", map[string]string{"app": "plain"}) // the default ServiceAccount and kube-root-ca.crt only
	stacktest.CreatePods(t, cs, web, worker, broken, plain)

	cm, sec, sa := graph.ObjectResource(graph.ConfigMapType, ns, stacktest.AppConfig), graph.ObjectResource(graph.SecretType, ns, stacktest.AppSecret),
		graph.ObjectResource(graph.ServiceAccountType, ns, stacktest.AppServiceAccount)
	for _, c := range []struct {
		threshold int
		requests  map[string]int64
	}{
		// A list of pods, then one GET per object: app-config and absent-config,
		// app-secret, app-sa-token and gone, app-sa.
		{32, map[string]int64{"list pods": 1, "get configmaps": 2, "get secrets": 3, "get serviceaccounts": 1}},
		// Past the threshold, one list per kind in the namespace; a single object is still
		// read by itself.
		{1, map[string]int64{"list pods": 1, "list configmaps": 1, "list secrets": 1, "get serviceaccounts": 1}},
	} {
		t.Run(fmt.Sprintf("getThreshold=%d", c.threshold), func(t *testing.T) {
			counts := map[string]*atomic.Int64{}
			for _, verb := range []string{"get", "list"} {
				for _, res := range []string{"pods", "persistentvolumeclaims", "persistentvolumes", "configmaps", "secrets", "serviceaccounts"} {
					counts[verb+" "+res] = &atomic.Int64{}
				}
			}
			rc, err := st.KubeConfig().RESTConfig(func(rt http.RoundTripper) http.RoundTripper { return byResource{next: rt, counts: counts} })
			if err != nil {
				t.Fatal(err)
			}
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				t.Fatal(err)
			}
			g, err := kube.NewResolver(kube.Clientset{Interface: client}, kube.ResolverOptions{GetThreshold: c.threshold}).
				Resolve(ctx, kube.Selection{Namespaces: []string{ns}})
			if err != nil {
				t.Fatal(err)
			}
			for what, n := range counts {
				if got := n.Load(); got != c.requests[what] {
					t.Errorf("%s: %d requests, want %d", what, got, c.requests[what])
				}
			}
			var nodes []string
			children := map[string][]string{}
			for _, n := range g.Nodes {
				nodes = append(nodes, graph.Kind(n.Type)+" "+n.Name)
				children[n.Name] = n.Children
			}
			want := []string{"Pod " + ns + ":broken", "Pod " + ns + ":plain", "Pod " + ns + ":web", "ConfigMap " + ns + ":app-config",
				"Secret " + ns + ":app-secret", "ServiceAccount " + ns + ":app-sa", "Pod " + ns + ":worker"}
			if strings.Join(nodes, ", ") != strings.Join(want, ", ") {
				t.Fatalf("nodes\n got %v\nwant %v", nodes, want)
			}
			for _, pod := range []string{"web", "worker"} {
				got := append([]string(nil), children[ns+":"+pod]...)
				sort.Strings(got)
				exp := []string{cm.Key(), sec.Key(), sa.Key()}
				sort.Strings(exp)
				if strings.Join(got, ",") != strings.Join(exp, ",") {
					t.Errorf("children of %s: %v, want %v", pod, got, exp)
				}
			}
			if len(children[ns+":plain"]) != 0 {
				t.Errorf("plain pod's children %v: what every namespace has is left out", children[ns+":plain"])
			}
			if len(g.Problems) != 1 || g.Problems[0].Key() != ns+":broken/Secret/gone" ||
				g.Problems[0].Describe() != "Secret gone of pod "+ns+":broken is not in the checkpoint: not found; referenced by env TOKEN of container app" {
				t.Fatalf("problems %+v", g.Problems)
			}
		})
	}

	t.Run("through the function", func(t *testing.T) {
		url := startListPods(t, map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": "podguard-test-" + ns, "MAX_INLINE_GRAPH_BYTES": "49152"})
		var res events.PodsListedResult
		if err := send(t, url, events.PodsList, events.PodsListRequest{Scope: events.Scope{Namespaces: []string{ns}}}).DataAs(&res); err != nil {
			t.Fatal(err)
		}
		if res.Graph == nil || res.Pods != 4 || len(res.Graph.Nodes) != 7 || len(res.Graph.Problems) != 1 || res.Graph.Problems[0].Object != "Secret/gone" {
			t.Fatalf("listing %+v", res)
		}
	})
}

// byResource counts the API requests by verb and resource ("get secrets").
type byResource struct {
	next   http.RoundTripper
	counts map[string]*atomic.Int64
}

func (b byResource) RoundTrip(r *http.Request) (*http.Response, error) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // api/v1/namespaces/<ns>/<resource>[/<name>]
	verb, res := "list", ""
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			res = parts[i+2]
			if i+3 < len(parts) {
				verb = "get"
			}
		}
	}
	if n := b.counts[verb+" "+res]; n != nil {
		n.Add(1)
	}
	return b.next.RoundTrip(r)
}
