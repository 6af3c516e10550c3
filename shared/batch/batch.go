// Package batch runs the work on the resources of a batch a few at a time.
//
//	err := batch.Each(ctx, pods, 8, func(ctx context.Context, p graph.Resource) error { ... })
package batch

import (
	"context"
	"sync"
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
