package schedule

import (
	"context"
	"errors"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
)

// Reader reads schedules (the bank).
type Reader interface {
	ListSchedules(ctx context.Context) ([]string, error)
	Schedule(ctx context.Context, id string) (*bank.ScheduleRecord, error)
	ScheduleState(ctx context.Context, id string) (bank.ScheduleState, error)
}

// View is a schedule as users see it: its definition, what the tick did, what comes next.
type View struct {
	events.Schedule
	SavedAt        time.Time   `json:"saved_at"`
	CreatedAt      time.Time   `json:"created_at"`
	LastRun        *time.Time  `json:"last_run,omitempty"`
	LastCheckpoint string      `json:"last_checkpoint,omitempty"`
	Skipped        []time.Time `json:"skipped,omitempty"`
	Next           []time.Time `json:"next"`
	// Problem says why the schedule cannot be evaluated, if it cannot.
	Problem string `json:"problem,omitempty"`
}

// nextListed is how many next occurrences a view shows.
const nextListed = 3

// List returns every schedule's view at now, in id order.
func List(ctx context.Context, r Reader, now time.Time) ([]View, error) {
	ids, err := r.ListSchedules(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]View, 0, len(ids))
	for _, id := range ids {
		sc, err := r.Schedule(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		st, err := r.ScheduleState(ctx, id)
		if err != nil {
			return nil, err
		}
		v := View{Schedule: sc.Schedule, SavedAt: sc.SavedAt, CreatedAt: sc.CreatedAt, LastCheckpoint: st.LastCheckpoint, Skipped: st.Skipped, Next: []time.Time{}}
		if !st.LastRun.IsZero() {
			v.LastRun = &st.LastRun
		}
		if rule, err := Parse(sc.Trigger, sc.SavedAt); err != nil {
			v.Problem = err.Error()
		} else {
			from := now
			if st.Handled.After(from) {
				from = st.Handled
			}
			for _, t := range rule.Next(from, nextListed) {
				v.Next = append(v.Next, t.UTC())
			}
		}
		out = append(out, v)
	}
	return out, nil
}
