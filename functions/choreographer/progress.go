package choreographer

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

// Progress events. When the choreographer accepts a step's result it may announce how far
// the operation has come (checkpoint.progressed, restore.progressed): at most once every
// PROGRESS_INTERVAL per operation (the first accepted result at once), counted from the
// bank as the views count it, never from the result. The announcements are a courtesy:
// one that cannot be read or sent is logged and the result is handled all the same.

// tallies is where the progress of operations is read; nil when the store cannot say
// (test doubles), and then no progress is announced.
type tallies interface {
	// Batches is a checkpoint's index and graph cut into batches (cached: both are
	// written once).
	Batches(ctx context.Context, checkpoint string) (*bank.Batches, error)
	FailedKeys(ctx context.Context, id string) ([]string, error)
}

// opTallies is the same for the restores' progress.
type opTallies interface {
	PendingResources(ctx context.Context, id string) ([]bank.Pending, error)
	FannedOut(ctx context.Context, id, phase string) (bool, error)
	FailedKeys(ctx context.Context, id string) ([]string, error)
}

// gateSize bounds the operations the gate remembers. An operation is forgotten when it
// ends here; one that ends elsewhere (another replica, the tick) is dropped when room is
// needed, oldest announcement first.
const gateSize = 1024

// progressGate limits progress announcements: one operation at a time announces, at most
// once every interval, and never less finished than it announced before (per resource
// type), so duplicate, late and out-of-order results never make progress go back.
type progressGate struct {
	every time.Duration
	size  int

	mu  sync.Mutex
	ops map[string]*gateEntry
}

type gateEntry struct {
	last    time.Time      // when progress was last announced; zero before the first
	busy    bool           // an announcement is being made
	settled map[string]int // done+failed per type, as last announced
}

func newProgressGate(every time.Duration, size int) *progressGate {
	return &progressGate{every: every, size: size, ops: map[string]*gateEntry{}}
}

// take reserves the next announcement of op at now: false when one is being made, or
// was made less than the interval ago, or the gate is full of announcements in flight.
// A reservation taken is ended by release.
func (g *progressGate) take(op string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.ops[op]
	if !ok {
		if len(g.ops) >= g.size && !g.evict() {
			return false
		}
		e = &gateEntry{}
		g.ops[op] = e
	}
	if e.busy || (!e.last.IsZero() && now.Sub(e.last) < g.every) {
		return false
	}
	e.busy = true
	return true
}

// evict drops the entry announced longest ago among those not in flight.
func (g *progressGate) evict() bool {
	victim := ""
	var oldest time.Time
	for op, e := range g.ops {
		if !e.busy && (victim == "" || e.last.Before(oldest)) {
			victim, oldest = op, e.last
		}
	}
	if victim == "" {
		return false
	}
	delete(g.ops, victim)
	return true
}

// advances reports whether p shows, for every type, at least as much finished as op last
// announced, and more in all.
func (g *progressGate) advances(op string, p events.Progress) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.ops[op]
	if !ok {
		return false // forgotten meanwhile: the operation ended
	}
	more := e.settled == nil
	for typ, c := range p.Resources {
		switch n := c.Done + c.Failed; {
		case n < e.settled[typ]:
			return false
		case n > e.settled[typ]:
			more = true
		}
	}
	return more
}

// release ends the reservation of op; announced is the progress sent at at, nil when
// nothing was sent.
func (g *progressGate) release(op string, announced *events.Progress, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.ops[op]
	if !ok {
		return
	}
	e.busy = false
	if announced == nil {
		return
	}
	e.last = at
	e.settled = make(map[string]int, len(announced.Resources))
	for typ, c := range announced.Resources {
		e.settled[typ] = c.Done + c.Failed
	}
}

// forget drops op: it ended.
func (g *progressGate) forget(op string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.ops, op)
}

// remembered is how many operations the gate remembers.
func (g *progressGate) remembered() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.ops)
}

// announce sends the progress of an operation, if the gate lets it: count reads it from
// the bank, send emits it. Errors are logged, never returned.
func (s *Step) announce(ctx context.Context, kind, id string, count func(now time.Time) (events.Progress, error), send func(events.Progress) error) {
	now := s.now()
	if !s.gate.take(id, now) {
		return
	}
	var announced *events.Progress
	defer func() { s.gate.release(id, announced, now) }()
	p, err := count(now)
	if err == nil && s.gate.advances(id, p) {
		if err = send(p); err == nil {
			announced = &p
		}
	}
	if err != nil {
		logging.FromContext(ctx).Warnw("progress not announced", zap.String(kind, id), zap.Error(err))
	}
}

// checkpointProgressed announces the progress of a checkpoint being protected.
func (s *Step) checkpointProgressed(ctx context.Context, id string) {
	if s.tallies == nil {
		return
	}
	var plan string
	s.announce(ctx, "checkpoint", id, func(now time.Time) (events.Progress, error) {
		bs, err := s.tallies.Batches(ctx, id)
		if err != nil {
			return events.Progress{}, err
		}
		t, err := tally(ctx, s.bank, s.tallies, id, bs.All(), now)
		if err != nil {
			return events.Progress{}, err
		}
		plan, t.Problems, t.Started = bs.Checkpoint.Plan.ID, bs.Problems(), bs.Checkpoint.CreatedAt
		return t.Progress(), nil
	}, func(p events.Progress) error {
		return s.emit(ctx, events.FlowProtect, id, events.CheckpointProgressed, progressedID(events.FlowProtect, id, p),
			events.CheckpointProgressedResult{Checkpoint: id, Plan: plan, Progress: p})
	})
}

// restoreProgressed announces the progress of a restore in progress: a pod not yet
// reached (its phase not fanned out) is waiting.
func (s *Step) restoreProgressed(ctx context.Context, r *bank.Restore) {
	ops, ok := s.restores.(opTallies)
	if s.tallies == nil || !ok {
		return
	}
	s.announce(ctx, "restore", r.ID, func(now time.Time) (events.Progress, error) {
		bs, err := s.tallies.Batches(ctx, r.Checkpoint)
		if err != nil {
			return events.Progress{}, err
		}
		t, err := tally(ctx, ops, ops, r.ID, bs.All(), now)
		if err != nil {
			return events.Progress{}, err
		}
		podsOut, err := ops.FannedOut(ctx, r.ID, phasePods)
		if err != nil {
			return events.Progress{}, err
		}
		t.Unstarted = map[string]bool{graph.PodType: !podsOut}
		t.Started = r.CreatedAt
		return t.Progress(), nil
	}, func(p events.Progress) error {
		return s.emit(ctx, events.FlowRestore, r.ID, events.RestoreProgressed, progressedID(events.FlowRestore, r.ID, p),
			events.RestoreProgressedResult{Restore: r.ID, Checkpoint: r.Checkpoint, Progress: p})
	})
}

// tally reads an operation's pending batches and failures.
func tally(ctx context.Context, pending interface {
	PendingResources(ctx context.Context, id string) ([]bank.Pending, error)
}, failed interface {
	FailedKeys(ctx context.Context, id string) ([]string, error)
}, id string, batches []graph.Batch, now time.Time) (checkpoint.Tally, error) {
	t := checkpoint.Tally{Batches: batches, Pending: map[string]bool{}, Failed: map[string]bool{}, Now: now}
	ps, err := pending.PendingResources(ctx, id)
	if err != nil {
		return t, err
	}
	for _, p := range ps {
		t.Pending[p.Batch] = true
	}
	keys, err := failed.FailedKeys(ctx, id)
	if err != nil {
		return t, err
	}
	for _, k := range keys {
		t.Failed[k] = true
	}
	return t, nil
}

// progressedID names a progress announcement by how much is finished: the same progress
// announced twice is one event.
func progressedID(flow, id string, p events.Progress) string {
	return function.DerivedID(flow, id, "progressed", strconv.Itoa(p.Finished()))
}
