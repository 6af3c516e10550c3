package recreatepod

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/shared/kube"
)

// follower keeps the latest state of chosen objects of one kind that one watch sees, so
// that every pod of a batch waits for its own volume or claim on a single watch instead
// of a watch each.
type follower[T metav1.Object] struct {
	kind    string
	names   map[string]bool // the objects kept; the watch sees the whole restore's
	mu      sync.Mutex
	latest  map[string]T
	changed chan struct{} // closed and replaced whenever latest changes
	ended   bool          // the watch failed or ended: waits return at once
}

// follow watches the objects matching opts until ctx ends, and keeps those named in
// names. A watch without a resource version first reports every object that exists, so
// objects created before the watch started are seen too.
func follow[T metav1.Object](ctx context.Context, kind string, watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), opts metav1.ListOptions, names map[string]bool) *follower[T] {
	f := &follower[T]{kind: kind, names: names, latest: map[string]T{}, changed: make(chan struct{})}
	go f.run(ctx, watchFn, opts)
	return f
}

func (f *follower[T]) run(ctx context.Context, watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), opts metav1.ListOptions) {
	defer f.update(func() { f.ended = true })
	w, err := watchFn(ctx, opts)
	if err != nil {
		if ctx.Err() == nil {
			logging.FromContext(ctx).Warnw("watching new "+f.kind+"s failed; the restored pods may start later", zap.Error(err))
		}
		return
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			obj, isT := ev.Object.(T)
			if !isT {
				continue // a watch error: the watch ends next
			}
			if !f.names[obj.GetName()] {
				continue // another batch's
			}
			f.update(func() {
				if ev.Type == watch.Deleted {
					delete(f.latest, obj.GetName())
				} else {
					f.latest[obj.GetName()] = obj
				}
			})
		}
	}
}

func (f *follower[T]) update(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
	close(f.changed)
	f.changed = make(chan struct{})
}

// await waits until the object named name is seen in a state done accepts, the watch
// ends, ctx ends or until passes. Waiting only saves time later, so it reports nothing.
func (f *follower[T]) await(ctx context.Context, name string, until time.Time, done func(T) bool) {
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	for {
		f.mu.Lock()
		obj, ok := f.latest[name]
		changed, ended := f.changed, f.ended
		f.mu.Unlock()
		if ok && done(obj) || ended {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// waits holds the watches a batch's pods wait on: the restore's persistent volumes, and
// its claims in each namespace the batch restores into.
//
// A claim is created once the PV controller has seen its volume: the controller looks a
// claim's volume up in its own cache, so a claim created before that is bound only at its
// next periodic sync (15s by default). A pod is created once its claims are bound: the
// scheduler sets a pod with unbound claims aside until they bind, but misses that event
// now and then and leaves the pod Pending for up to five minutes, until it retries every
// pod set aside (one pod in a thousand restored at once, in two runs out of three). A
// volume or claim still waiting when the batch's wait is over is left to the
// controllers.
type waits struct {
	volumes *follower[*corev1.PersistentVolume]
	claims  map[string]*follower[*corev1.PersistentVolumeClaim]
}

// follow starts the watches of a batch; they end with ctx.
func (s *Step) follow(ctx context.Context, restoreID string, pods []*pod) *waits {
	volumes, claims := map[string]bool{}, map[string]map[string]bool{}
	for _, p := range pods {
		if p.objs == nil {
			continue
		}
		for _, pv := range p.objs.Volumes {
			volumes[pv.Name] = true
		}
		for _, c := range p.objs.Claims {
			if claims[p.out.Namespace] == nil {
				claims[p.out.Namespace] = map[string]bool{}
			}
			claims[p.out.Namespace][c.Name] = true
		}
	}
	opts := metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restoreID}
	w := &waits{claims: map[string]*follower[*corev1.PersistentVolumeClaim]{}}
	if len(volumes) > 0 {
		w.volumes = follow[*corev1.PersistentVolume](ctx, "persistent volume", s.kube.CoreV1().PersistentVolumes().Watch, opts, volumes)
	}
	for ns, names := range claims {
		w.claims[ns] = follow[*corev1.PersistentVolumeClaim](ctx, "persistent volume claim", s.kube.CoreV1().PersistentVolumeClaims(ns).Watch, opts, names)
	}
	return w
}

// volumeSeen waits until the PV controller has seen a new volume: it is no longer Pending.
func (w *waits) volumeSeen(ctx context.Context, name string, until time.Time) {
	if w.volumes == nil {
		return
	}
	w.volumes.await(ctx, name, until, func(v *corev1.PersistentVolume) bool {
		return v.Status.Phase != "" && v.Status.Phase != corev1.VolumePending
	})
}

// claimBound waits until the PV controller has bound a new claim.
func (w *waits) claimBound(ctx context.Context, ns, name string, until time.Time) {
	if f := w.claims[ns]; f != nil {
		f.await(ctx, name, until, func(c *corev1.PersistentVolumeClaim) bool { return c.Status.Phase == corev1.ClaimBound })
	}
}
