package access

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// cache keeps the results of reviews until they expire, at most size of them (the oldest
// go first), and lets concurrent lookups of one missing key share a single review.
type cache[K comparable, V any] struct {
	now  func() time.Time
	size int

	mu      sync.Mutex
	entries map[K]*list.Element // values are *entry[K, V]
	order   *list.List          // oldest first
	flights map[K]*flight[V]
}

type entry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time
}

// flight is a review under way; done is closed once val and err are set.
type flight[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int // callers waiting for it besides the one running it
}

var errAbandoned = errors.New("review abandoned")

func newCache[K comparable, V any](size int, now func() time.Time) *cache[K, V] {
	return &cache[K, V]{now: now, size: size, entries: map[K]*list.Element{}, order: list.New(), flights: map[K]*flight[V]{}}
}

// do returns the value kept for key or, when there is none, the result of review, kept
// until the time review returns unless review fails. A caller that finds the same review
// under way waits for it; if that review failed only because its own caller's context
// ended, the waiter reviews again with its own.
func (c *cache[K, V]) do(ctx context.Context, key K, review func(context.Context) (V, time.Time, error)) (V, error) {
	for {
		c.mu.Lock()
		if v, ok := c.lookup(key); ok {
			c.mu.Unlock()
			return v, nil
		}
		if f, ok := c.flights[key]; ok {
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
				if f.err != nil && ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
					continue
				}
				return f.val, f.err
			case <-ctx.Done():
				var zero V
				return zero, fmt.Errorf("wait for a review under way: %w", ctx.Err())
			}
		}
		f := &flight[V]{done: make(chan struct{}), err: errAbandoned}
		c.flights[key] = f
		c.mu.Unlock()
		return c.lead(ctx, key, f, review)
	}
}

// lead runs review for the callers of key, keeps its result unless it failed, and hands
// it to those waiting.
func (c *cache[K, V]) lead(ctx context.Context, key K, f *flight[V], review func(context.Context) (V, time.Time, error)) (V, error) {
	var expires time.Time
	defer func() {
		c.mu.Lock()
		delete(c.flights, key)
		if f.err == nil {
			c.store(key, f.val, expires)
		}
		c.mu.Unlock()
		close(f.done)
	}()
	v, exp, err := review(ctx)
	f.val, f.err, expires = v, err, exp
	return v, err
}

// lookup returns the value kept for key, if it has not expired. c.mu is held.
func (c *cache[K, V]) lookup(key K) (V, bool) {
	var zero V
	el, ok := c.entries[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*entry[K, V])
	if !c.now().Before(e.expires) {
		c.order.Remove(el)
		delete(c.entries, key)
		return zero, false
	}
	return e.val, true
}

// store keeps val for key until expires, unless that has passed, and drops the oldest
// entries beyond the cache's size. c.mu is held.
func (c *cache[K, V]) store(key K, val V, expires time.Time) {
	if !c.now().Before(expires) {
		return
	}
	if el, ok := c.entries[key]; ok {
		c.order.Remove(el)
	}
	c.entries[key] = c.order.PushBack(&entry[K, V]{key: key, val: val, expires: expires})
	for c.order.Len() > c.size {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*entry[K, V]).key)
	}
}
