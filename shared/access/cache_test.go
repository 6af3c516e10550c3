package access

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// waitForWaiters returns once n callers wait for the review under way for key.
func waitForWaiters[K comparable, V any](t *testing.T, c *cache[K, V], key K, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		f := c.flights[key]
		got := 0
		if f != nil {
			got = f.waiters
		}
		c.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers wait for the review, want %d", got, n)
		}
		runtime.Gosched()
	}
}

func TestCacheSharesAReviewUnderWay(t *testing.T) {
	c := newCache[string, int](8, time.Now)
	var reviews atomic.Int32
	release := make(chan struct{})
	review := func(context.Context) (int, time.Time, error) {
		reviews.Add(1)
		<-release
		return 42, time.Now().Add(time.Minute), nil
	}
	const callers = 5
	results := make(chan string, callers)
	for range callers {
		go func() {
			v, err := c.do(context.Background(), "k", review)
			results <- fmt.Sprint(v, err)
		}()
	}
	waitForWaiters(t, c, "k", callers-1)
	close(release)
	for range callers {
		select {
		case r := <-results:
			if r != "42 <nil>" {
				t.Errorf("got %s", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a caller did not return")
		}
	}
	if reviews.Load() != 1 {
		t.Fatalf("%d reviews, want 1", reviews.Load())
	}
}

func TestCacheReviewsAgainWhenTheLeadersContextEnds(t *testing.T) {
	c := newCache[string, int](8, time.Now)
	leaderCtx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		_, err := c.do(leaderCtx, "k", func(ctx context.Context) (int, time.Time, error) {
			close(started)
			<-ctx.Done()
			return 0, time.Time{}, fmt.Errorf("review: %w", ctx.Err())
		})
		leader <- err
	}()
	<-started
	waiter := make(chan string, 1)
	go func() {
		v, err := c.do(context.Background(), "k", func(context.Context) (int, time.Time, error) {
			return 7, time.Now().Add(time.Minute), nil
		})
		waiter <- fmt.Sprint(v, err)
	}()
	waitForWaiters(t, c, "k", 1)
	cancel()
	select {
	case r := <-waiter:
		if r != "7 <nil>" {
			t.Fatalf("waiter got %s", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not return")
	}
	if err := <-leader; err == nil {
		t.Fatal("the leader's review did not fail")
	}
}

func TestCacheWaiterGivesUpWithItsContext(t *testing.T) {
	c := newCache[string, int](8, time.Now)
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	go func() {
		_, _ = c.do(context.Background(), "k", func(context.Context) (int, time.Time, error) {
			close(started)
			<-release
			return 1, time.Now().Add(time.Minute), nil
		})
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.do(ctx, "k", nil); err == nil {
		t.Fatal("no error with an ended context")
	}
}
