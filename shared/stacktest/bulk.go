package stacktest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// BulkPods makes sure namespace ns holds n Running kwok pods, each with one claim bound
// to a CSI Cinder PV. The namespace is kept between runs (benchmarks reuse it); objects
// that already exist are left alone.
func BulkPods(tb testing.TB, cs kubernetes.Interface, ns string, n int) {
	tb.Helper()
	ctx := context.Background()
	if err := IgnoreExists(createNS(ctx, cs, ns)); err != nil {
		tb.Fatal(err)
	}
	running, _, err := countRunning(ctx, cs, ns)
	if err != nil {
		tb.Fatal(err)
	}
	if running >= n {
		return
	}
	const workers = 16
	work := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("p%05d", i)
				pv := CinderPV(ns+"-"+name, fmt.Sprintf("00000000-0000-4000-8000-%012d", i), true, ns, name)
				if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); IgnoreExists(err) != nil {
					errs <- err
					return
				}
				if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, Claim(ns, name, pv.Name), metav1.CreateOptions{}); IgnoreExists(err) != nil {
					errs <- err
					return
				}
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, Pod(ns, name, map[string]string{"bench": ns}, name), metav1.CreateOptions{}); IgnoreExists(err) != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case work <- i:
		case err := <-errs:
			tb.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
	WaitRunning(tb, cs, ns, n)
	WaitClaimsBound(tb, cs, ns, n, 15*time.Minute)
}

// WaitClaimsBound waits until n claims of namespace ns are Bound (the PV controller binds
// pre-bound pairs at its own pace).
func WaitClaimsBound(tb testing.TB, cs kubernetes.Interface, ns string, n int, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		bound, opts := 0, metav1.ListOptions{Limit: 1000}
		for {
			l, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, opts)
			if err != nil {
				tb.Fatalf("claims of %s: %v (%d of %d bound)", ns, err, bound, n)
			}
			for i := range l.Items {
				if l.Items[i].Status.Phase == corev1.ClaimBound {
					bound++
				}
			}
			if l.Continue == "" {
				break
			}
			opts.Continue = l.Continue
		}
		if bound >= n {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("claims of %s: %d of %d bound within %s", ns, bound, n, timeout)
		case <-tick.C:
		}
	}
}

func createNS(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	return err
}

// countRunning counts the Running pods of ns and returns the list's resourceVersion.
func countRunning(ctx context.Context, cs kubernetes.Interface, ns string) (int, string, error) {
	n := 0
	opts := metav1.ListOptions{Limit: 1000, FieldSelector: runningSelector}
	for {
		l, err := cs.CoreV1().Pods(ns).List(ctx, opts)
		if err != nil {
			return 0, "", err
		}
		n += len(l.Items)
		if l.Continue == "" {
			return n, l.ResourceVersion, nil
		}
		opts.Continue = l.Continue
	}
}

const runningSelector = "status.phase=Running"

// WaitRunning watches namespace ns until n of its pods are Running.
func WaitRunning(tb testing.TB, cs kubernetes.Interface, ns string, n int) {
	tb.Helper()
	ctx := context.Background()
	running, rv, err := countRunning(ctx, cs, ns)
	if err != nil {
		tb.Fatal(err)
	}
	for running < n {
		// With a field selector, a pod that starts matching arrives as ADDED and one that
		// stops matching as DELETED.
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: runningSelector, ResourceVersion: rv})
		if err != nil {
			tb.Fatal(err)
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added:
				running++
			case watch.Deleted:
				running--
			case watch.Error:
				running = -1 // stale resourceVersion: recount
			}
			if running >= n || running < 0 {
				break
			}
		}
		w.Stop()
		if running >= n {
			return
		}
		if running, rv, err = countRunning(ctx, cs, ns); err != nil {
			tb.Fatal(err)
		}
	}
}
