package bank

import (
	"context"
	"errors"
	"time"

	"github.com/podguard/podguard/events"
)

// ScheduleRecord is a schedule as saved.
type ScheduleRecord struct {
	events.Schedule
	// SavedAt is when the schedule was last saved; occurrences before the first save
	// are not due.
	SavedAt time.Time `json:"saved_at"`
	// CreatedAt is when it was first saved.
	CreatedAt time.Time `json:"created_at"`
}

// ScheduleState is what the tick did with a schedule's occurrences.
type ScheduleState struct {
	// Handled is the latest occurrence run or skipped: later evaluations start after it.
	Handled time.Time `json:"handled"`
	// LastRun is the latest occurrence run, and LastCheckpoint the checkpoint it made.
	LastRun        time.Time `json:"last_run,omitzero"`
	LastCheckpoint string    `json:"last_checkpoint,omitempty"`
	// Skipped are the most recently skipped occurrences, oldest first.
	Skipped []time.Time `json:"skipped,omitempty"`
}

// PutSchedule saves a schedule, replacing one of the same id.
func (b *Bank) PutSchedule(ctx context.Context, s ScheduleRecord) error {
	return b.putJSON(ctx, b.layout.Schedule(s.ID), s, false)
}

// Schedule reads a schedule; ErrNotFound when there is none.
func (b *Bank) Schedule(ctx context.Context, id string) (*ScheduleRecord, error) {
	var s ScheduleRecord
	if err := b.getJSON(ctx, b.layout.Schedule(id), &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeleteSchedule removes a schedule and its state; found is false when there was none.
func (b *Bank) DeleteSchedule(ctx context.Context, id string) (found bool, err error) {
	if _, err := b.Schedule(ctx, id); errors.Is(err, ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := b.remove(ctx, b.layout.ScheduleState(id)); err != nil {
		return true, err
	}
	return true, b.remove(ctx, b.layout.Schedule(id))
}

// ListSchedules returns the ids of every schedule, in id order.
func (b *Bank) ListSchedules(ctx context.Context) ([]string, error) {
	objs, err := b.listAll(ctx, b.layout.SchedulesPrefix())
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range objs {
		if id := b.layout.ScheduleOfObject(o.Name); id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// ScheduleState reads what the tick recorded of a schedule; the zero state when nothing.
func (b *Bank) ScheduleState(ctx context.Context, id string) (ScheduleState, error) {
	var st ScheduleState
	if err := b.getJSON(ctx, b.layout.ScheduleState(id), &st); err != nil && !errors.Is(err, ErrNotFound) {
		return ScheduleState{}, err
	}
	return st, nil
}

// PutScheduleState records what the tick did with a schedule.
func (b *Bank) PutScheduleState(ctx context.Context, id string, st ScheduleState) error {
	return b.putJSON(ctx, b.layout.ScheduleState(id), st, false)
}

// PutPlanSchedule indexes a schedule under the plan it stores, so that the plan's
// policy is found from the plan's id; writing it again writes the same.
func (b *Bank) PutPlanSchedule(ctx context.Context, plan, schedule string) error {
	return b.putJSON(ctx, b.layout.PlanSchedule(plan, schedule), struct{}{}, false)
}

// RemovePlanSchedule removes a schedule from the index of a plan; one already gone
// counts as removed.
func (b *Bank) RemovePlanSchedule(ctx context.Context, plan, schedule string) error {
	return b.remove(ctx, b.layout.PlanSchedule(plan, schedule))
}

// PlanSchedules returns the ids of the schedules indexed under a plan, in id order. An
// entry may outlive its schedule, or the schedule may store another plan since: readers
// check the schedule itself.
func (b *Bank) PlanSchedules(ctx context.Context, plan string) ([]string, error) {
	objs, err := b.listAll(ctx, b.layout.PlanSchedulesPrefix(plan))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range objs {
		if id, ok := b.layout.ScheduleOfPlanIndex(plan, o.Name); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
