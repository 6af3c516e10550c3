// Package batch runs the work on the resources of a batch a few at a time.
//
//	err := batch.Each(ctx, pods, 8, func(ctx context.Context, p graph.Resource) error { ... })
package batch

import (
	"context"
	"sync"

	"github.com/podguard/podguard/shared/graph"
)

// Each calls fn for every item, at most workers at a time, and returns the first error
// (every item is still attempted). fn must guard whatever it shares.
func Each[T any](ctx context.Context, items []T, workers int, fn func(context.Context, T) error) error {
	if workers < 1 {
		workers = 1
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	work := make(chan T)
	for i := 0; i < min(workers, len(items)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := fn(ctx, it); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
	return firstErr
}

// Settle calls fn for every resource of a batch, at most workers at a time. fn starts or
// checks the work on one resource and reports whether it is settled. Settle returns the
// outcomes of the settled resources, by key, and how many are still in progress.
func Settle[R any](ctx context.Context, resources []graph.Resource, workers int, fn func(context.Context, graph.Resource) (R, bool, error)) (map[string]R, int, error) {
	var (
		mu         sync.Mutex
		settled    = make(map[string]R, len(resources))
		inProgress int
	)
	err := Each(ctx, resources, workers, func(ctx context.Context, r graph.Resource) error {
		out, done, err := fn(ctx, r)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if done {
			settled[r.Key()] = out
		} else {
			inProgress++
		}
		return nil
	})
	return settled, inProgress, err
}
