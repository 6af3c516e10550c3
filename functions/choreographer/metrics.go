package choreographer

import (
	"context"
	"errors"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
)

// What the choreographer tells the metrics (shared/observe): operations started and
// finished (counted by the call that records the change, so duplicates count nothing),
// the resources they settled, the requests sent again, the operations in flight as each
// tick finds them, and per plan the newest available and failed checkpoints, how many
// available ones retention keeps, and the schedule's interval.

// finished counts an operation of kind that ended: its duration from its request, and
// its resources by status (those of g that did not fail are ok).
func (s *Step) finished(ctx context.Context, kind string, end bank.Ending, created time.Time, g *graph.Graph, ok string) {
	if !end.First {
		return
	}
	var took time.Duration
	if !created.IsZero() {
		took = s.now().Sub(created)
	}
	s.metrics.OperationFinished(ctx, kind, end.Status, took)
	failed := map[string]int{}
	for _, f := range end.Failures {
		if typ, _, isResource := graph.SplitKey(f.Key); isResource {
			failed[typ]++
		}
	}
	total := map[string]int{}
	if g != nil {
		for _, n := range g.Nodes {
			if kind == observe.Delete && n.Type != graph.VolumeType {
				continue // a deletion deletes backups of volumes only
			}
			total[n.Type]++
		}
	}
	for typ, n := range failed {
		s.metrics.ResourcesSettled(ctx, kind, typ, events.StatusError, n)
	}
	for typ, n := range total {
		s.metrics.ResourcesSettled(ctx, kind, typ, ok, max(n-failed[typ], 0))
	}
}

// protectEnded notes the end of a protect of plan in the plan's metrics.
func (s *Step) protectEnded(plan, status string, created time.Time) {
	if plan == "" {
		return
	}
	s.metrics.UpdatePlan(plan, func(p *observe.Plan) {
		switch {
		case status == events.StatusAvailable && created.After(p.LastAvailable):
			p.LastAvailable = created
		case status != events.StatusAvailable && created.After(p.LastFailed):
			p.LastFailed = created
		}
	})
}

// keptAvailable notes what retention found of plan: the available checkpoints it keeps.
func (s *Step) keptAvailable(plan string, cps []planCheckpoint, verdicts []verdict) {
	going := map[string]bool{}
	for _, v := range verdicts {
		if v.Decision == retainDelete {
			going[v.Checkpoint] = true
		}
	}
	n := 0
	var newest time.Time
	for _, cp := range cps {
		if cp.Status == events.StatusAvailable && !going[cp.ID] {
			n++
			if cp.CreatedAt.After(newest) {
				newest = cp.CreatedAt
			}
		}
	}
	s.metrics.UpdatePlan(plan, func(p *observe.Plan) {
		p.Available = n
		if newest.After(p.LastAvailable) {
			p.LastAvailable = newest
		}
	})
}

// planSeen is the first look of this process at a scheduled plan: the newest available
// and failed checkpoints are read from the plan's index (its newest planPeek), so that
// the plan's metrics are there after a restart, not only after its next checkpoint.
func (s *Step) planSeen(ctx context.Context, plan string, interval time.Duration) error {
	known := s.metrics.KnowsPlan(plan)
	s.metrics.UpdatePlan(plan, func(p *observe.Plan) { p.Interval = interval })
	if known {
		return nil
	}
	const planPeek = 50
	ids, _, err := s.bank.ListCheckpoints(ctx, plan, planPeek, "")
	if err != nil {
		return err
	}
	var available, failed time.Time
	for _, id := range ids {
		if !available.IsZero() && !failed.IsZero() {
			break
		}
		cp, err := s.bank.Checkpoint(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		status, err := s.bank.Status(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		switch status {
		case events.StatusAvailable:
			if available.IsZero() {
				available = cp.CreatedAt
			}
		case events.StatusError:
			if failed.IsZero() {
				failed = cp.CreatedAt
			}
		}
	}
	s.metrics.UpdatePlan(plan, func(p *observe.Plan) {
		if available.After(p.LastAvailable) {
			p.LastAvailable = available
		}
		if failed.After(p.LastFailed) {
			p.LastFailed = failed
		}
	})
	return nil
}

// inFlight notes the operations of kind a tick found in flight, with the largest share
// of its deadline one of them used; times reads an operation's start and deadline.
func (s *Step) inFlight(ctx context.Context, kind string, ids []string, times func(context.Context, string) (time.Time, time.Time, error)) {
	f := observe.Flights{Count: len(ids)}
	now := s.now()
	for _, id := range ids {
		start, deadline, err := times(ctx, id)
		if err != nil || !deadline.After(start) {
			continue
		}
		f.DeadlineUsed = max(f.DeadlineUsed, float64(now.Sub(start))/float64(deadline.Sub(start)))
	}
	s.metrics.InFlight(kind, f)
}

func (s *Step) checkpointTimes(ctx context.Context, id string) (time.Time, time.Time, error) {
	cp, err := s.bank.Checkpoint(ctx, id)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return cp.CreatedAt, cp.Deadline, nil
}

func (s *Step) restoreTimes(ctx context.Context, id string) (time.Time, time.Time, error) {
	r, err := s.bank.Restore(ctx, id)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return r.CreatedAt, r.Deadline, nil
}

func (s *Step) deletionTimes(ctx context.Context, id string) (time.Time, time.Time, error) {
	d, err := s.bank.Deletion(ctx, id)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return d.Deadline.Add(-s.cfg.DeleteTimeout), d.Deadline, nil
}
