package listpods_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/stacktest"
)

type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// BenchmarkListPods lists and resolves N kwok pods with one PVC (CSI Cinder PV) each
// against the local kube-apiserver, and reports the API requests one resolution makes
// and the cost per pod; both must stay flat as N grows.
func BenchmarkListPods(b *testing.B) {
	st := stacktest.Load(b)
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			ns := fmt.Sprintf("bench-list-%d", n)
			stacktest.BulkPods(b, st.Kube(b), ns, n)

			var requests atomic.Int64
			rc, err := st.KubeConfig().RESTConfig(func(rt http.RoundTripper) http.RoundTripper {
				return countingTransport{next: rt, n: &requests}
			})
			if err != nil {
				b.Fatal(err)
			}
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				b.Fatal(err)
			}
			r := kube.NewResolver(kube.Clientset{Interface: cs}, kube.ResolverOptions{PageSize: 500})
			sel := kube.Selection{Namespaces: []string{ns}}
			b.ResetTimer()
			requests.Store(0)
			for i := 0; i < b.N; i++ {
				g, err := r.Resolve(context.Background(), sel)
				if err != nil {
					b.Fatal(err)
				}
				if pods, vols := g.Counts(); pods != n || vols != n {
					b.Fatalf("resolved %d pods and %d volumes, want %d", pods, vols, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(requests.Load())/float64(b.N), "requests/op")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/pod")
		})
	}
}
