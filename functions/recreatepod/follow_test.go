package recreatepod

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

func claimIn(name string, phase corev1.PersistentVolumeClaimPhase) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
}

func followFake(ctx context.Context, fw watch.Interface, err error) *follower[*corev1.PersistentVolumeClaim] {
	return follow[*corev1.PersistentVolumeClaim](ctx, "claim", func(context.Context, metav1.ListOptions) (watch.Interface, error) {
		return fw, err
	}, metav1.ListOptions{}, map[string]bool{"mine": true, "other": true})
}

// A wait ends when its own object reaches the state waited for, whatever else the watch
// reports meanwhile.
func TestFollowerAwaitsTheNamedObject(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fw := watch.NewFake()
	f := followFake(ctx, fw, nil)
	seen := make(chan corev1.PersistentVolumeClaimPhase, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.await(ctx, "mine", time.Now().Add(time.Hour), func(c *corev1.PersistentVolumeClaim) bool {
			seen <- c.Status.Phase
			return c.Status.Phase == corev1.ClaimBound
		})
	}()
	fw.Add(claimIn("other", corev1.ClaimBound))
	fw.Add(claimIn("mine", corev1.ClaimPending))
	for phase := range seen {
		if phase == corev1.ClaimPending {
			break // the wait saw the claim unbound and goes on waiting
		}
		t.Fatalf("checked another claim's state %s", phase)
	}
	select {
	case <-done:
		t.Fatal("the wait ended while the claim was pending")
	default:
	}
	fw.Modify(claimIn("mine", corev1.ClaimBound))
	<-done
}

// An object seen before the wait starts counts at once; a deleted one is waited for again;
// objects of other batches are not kept.
func TestFollowerKeepsTheLatestState(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fw := watch.NewFake()
	f := followFake(ctx, fw, nil)
	fw.Add(claimIn("another-batch", corev1.ClaimBound))
	fw.Add(claimIn("mine", corev1.ClaimBound))
	fw.Delete(claimIn("mine", corev1.ClaimBound))
	fw.Add(claimIn("mine", corev1.ClaimBound)) // the follower has taken the delete once this returns
	f.await(ctx, "mine", time.Now().Add(time.Hour), func(c *corev1.PersistentVolumeClaim) bool { return c.Status.Phase == corev1.ClaimBound })
	f.mu.Lock()
	n := len(f.latest)
	f.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d objects kept, want 1", n)
	}
}

// Waiting is only an optimisation: a watch that cannot start or that ends, and a wait
// past its time, end the wait without the state waited for.
func TestFollowerWaitsEnd(t *testing.T) {
	never := func(*corev1.PersistentVolumeClaim) bool { return false }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	followFake(ctx, nil, errors.New("forbidden")).await(ctx, "mine", time.Now().Add(time.Hour), never)

	fw := watch.NewFake()
	f := followFake(ctx, fw, nil)
	fw.Add(claimIn("mine", corev1.ClaimPending))
	fw.Stop()
	f.await(ctx, "mine", time.Now().Add(time.Hour), never)

	f = followFake(ctx, watch.NewFake(), nil)
	f.await(ctx, "mine", time.Now(), never)

	wctx, stop := context.WithCancel(ctx)
	f = followFake(wctx, watch.NewFake(), nil)
	stop()
	f.await(ctx, "mine", time.Now().Add(time.Hour), never)
}
