package bank

import (
	"context"
	"fmt"
	"sync"

	"github.com/podguard/podguard/shared/graph"
)

// Batches is a checkpoint as the steps see it: its index, and its graph cut into the
// batches the choreographer sent (graph.Batches with the checkpoint's batch size). Both
// objects are written once, so what was read stays true: a Bank keeps the latest few it
// read, and a step request costs no graph read after the first of its checkpoint.
type Batches struct {
	Checkpoint *Checkpoint
	batches    map[string]graph.Batch
	of         map[string]string   // resource key -> name of its batch
	children   map[string][]string // pod key -> the keys of its volumes
	order      []string            // the batches' names, in graph.Batches order
	problems   []graph.Problem
}

// All are the batches, in the order graph.Batches cuts them.
func (bs *Batches) All() []graph.Batch {
	out := make([]graph.Batch, len(bs.order))
	for i, name := range bs.order {
		out[i] = bs.batches[name]
	}
	return out
}

// Problems are the graph's volumes that could not be resolved.
func (bs *Batches) Problems() []graph.Problem { return bs.problems }

// Batch is the batch called name; false when the checkpoint has none of that name.
func (bs *Batches) Batch(name string) (graph.Batch, bool) {
	b, ok := bs.batches[name]
	return b, ok
}

// Of is the name of the batch holding the resource of key.
func (bs *Batches) Of(key string) (string, bool) {
	name, ok := bs.of[key]
	return name, ok
}

// Children are the keys of the volumes a pod depends on.
func (bs *Batches) Children(podKey string) []string { return bs.children[podKey] }

// newBatches cuts a checkpoint's graph.
func newBatches(cp *Checkpoint, g *graph.Graph) *Batches {
	bs := &Batches{Checkpoint: cp, batches: map[string]graph.Batch{}, of: map[string]string{}, children: map[string][]string{}, problems: g.Problems}
	for _, b := range g.Batches(cp.BatchSize) {
		bs.batches[b.Name] = b
		bs.order = append(bs.order, b.Name)
		for _, r := range b.Resources {
			bs.of[r.Key()] = b.Name
		}
	}
	for _, n := range g.Nodes {
		if n.Type == graph.PodType {
			bs.children[n.Key()] = n.Children
		}
	}
	return bs
}

// Batches reads a checkpoint's index and graph, from the cache when read before.
// ErrNotFound when the checkpoint, or its graph, does not exist.
func (b *Bank) Batches(ctx context.Context, checkpoint string) (*Batches, error) {
	if bs, ok := b.batches.get(checkpoint); ok {
		return bs, nil
	}
	cp, err := b.Checkpoint(ctx, checkpoint)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", checkpoint, err)
	}
	g, err := b.Graph(ctx, checkpoint)
	if err != nil {
		return nil, fmt.Errorf("graph of checkpoint %s: %w", checkpoint, err)
	}
	bs := newBatches(cp, g)
	b.batches.put(checkpoint, bs)
	return bs, nil
}

// batchCacheSize bounds the checkpoints a Bank keeps cut into batches: a step works on
// few checkpoints at a time, and a graph of 1,000 pods is about a megabyte in memory.
const batchCacheSize = 8

// recent keeps the latest size values put, by key, oldest dropped first. The zero value
// keeps none until size is set.
type recent[V any] struct {
	size  int
	mu    sync.Mutex
	order []string
	m     map[string]V
}

func (c *recent[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok
}

// put keeps v under key, unless a value is kept there already.
func (c *recent[V]) put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]V{}
	}
	if _, ok := c.m[key]; ok || c.size <= 0 {
		return
	}
	if len(c.order) == c.size {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, key)
	c.m[key] = v
}

// Checkpoints tracks the protect of each checkpoint (the Ops Bank embeds, by name).
func (b *Bank) Checkpoints() *Ops { return &b.Ops }
