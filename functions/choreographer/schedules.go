package choreographer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/schedule"
)

// Schedules: a plan protected at the occurrences of an iCal RRULE (Karbor's calendar
// trigger). The tick notices occurrences: the latest one since the last tick runs if the
// tick is within the schedule's window after it; every other one is skipped and
// reported, never run late. Running an occurrence sends a protect request whose
// checkpoint id derives from the plan and the occurrence, so duplicate or racing ticks
// make one checkpoint.
//
// A PingSource can carry a plan too (cron with a time zone): its firing is a protect
// request whose occurrence is the minute it fired.
//
// A schedule stores its plan: the plan's retention policy in force is the schedule's
// (retention.go). Each schedule is indexed under its plan's id (written before the
// schedule, removed after it; the tick writes it again before each occurrence it runs,
// which indexes schedules saved before the index existed), and schedules that store one
// plan must agree on its retention.

// scheduleStore is where schedules live (the bank).
type scheduleStore interface {
	PutSchedule(ctx context.Context, s bank.ScheduleRecord) error
	Schedule(ctx context.Context, id string) (*bank.ScheduleRecord, error)
	DeleteSchedule(ctx context.Context, id string) (bool, error)
	ListSchedules(ctx context.Context) ([]string, error)
	ScheduleState(ctx context.Context, id string) (bank.ScheduleState, error)
	PutScheduleState(ctx context.Context, id string, st bank.ScheduleState) error
	PutPlanSchedule(ctx context.Context, plan, schedule string) error
	RemovePlanSchedule(ctx context.Context, plan, schedule string) error
}

// nextShown is how many next occurrences a saved schedule reports.
const nextShown = 5

// keptSkips is how many skipped occurrences a schedule's state keeps.
const keptSkips = 20

func (s *Step) setSchedule(ctx context.Context, e event.Event) (*event.Event, error) {
	if s.schedules == nil {
		return nil, errors.New("this choreographer has no schedule store")
	}
	var sc events.Schedule
	if err := function.Decode(e, &sc); err != nil {
		return nil, err
	}
	if err := sc.Plan.Scope.Check(); err != nil {
		return nil, function.Permanent(fmt.Errorf("/plan%w", err))
	}
	now := s.now().UTC()
	rule, err := schedule.Parse(sc.Trigger, now)
	if err != nil {
		return nil, function.Permanent(fmt.Errorf("/trigger: %w", err))
	}
	// The plan id names the checkpoints of each occurrence: default to the schedule's.
	if sc.Plan.ID == "" {
		sc.Plan.ID = sc.ID
	}
	if sc.Trigger.Format == "" {
		sc.Trigger.Format = events.FormatCalendar
	}
	if sc.Trigger.Window == 0 {
		sc.Trigger.Window = int(rule.Window / time.Second)
	}
	if err := s.agreesWithPlan(ctx, sc); err != nil {
		return nil, err
	}
	rec := bank.ScheduleRecord{Schedule: sc, SavedAt: now, CreatedAt: now}
	old, err := s.schedules.Schedule(ctx, sc.ID)
	if err == nil {
		rec.CreatedAt = old.CreatedAt
	} else if !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	if err := s.schedules.PutPlanSchedule(ctx, sc.Plan.ID, sc.ID); err != nil {
		return nil, err
	}
	if err := s.schedules.PutSchedule(ctx, rec); err != nil {
		return nil, err
	}
	if old != nil && old.Plan.ID != sc.Plan.ID {
		if err := s.schedules.RemovePlanSchedule(ctx, old.Plan.ID, sc.ID); err != nil {
			return nil, err
		}
	}
	next := rule.Next(now, nextShown)
	logging.FromContext(ctx).Infow("schedule saved", zap.String("schedule", sc.ID), zap.String("plan", sc.Plan.ID), zap.Times("next", next))
	return function.Reply(events.ScheduleSaved, events.ScheduleSavedResult{Schedule: sc, Next: utc(next)})
}

func (s *Step) deleteSchedule(ctx context.Context, e event.Event) (*event.Event, error) {
	if s.schedules == nil {
		return nil, errors.New("this choreographer has no schedule store")
	}
	var ref events.ScheduleRef
	if err := function.Decode(e, &ref); err != nil {
		return nil, err
	}
	old, err := s.schedules.Schedule(ctx, ref.ID)
	if err != nil && !errors.Is(err, bank.ErrNotFound) {
		return nil, err
	}
	found, err := s.schedules.DeleteSchedule(ctx, ref.ID)
	if err != nil {
		return nil, err
	}
	if old != nil {
		if err := s.schedules.RemovePlanSchedule(ctx, old.Plan.ID, ref.ID); err != nil {
			return nil, err
		}
	}
	logging.FromContext(ctx).Infow("schedule deleted", zap.String("schedule", ref.ID), zap.Bool("found", found))
	return function.Reply(events.ScheduleDeleted, events.ScheduleDeletedResult{ID: ref.ID, Found: found})
}

// runSchedules evaluates every schedule at now; one schedule's trouble does not stop
// the others.
func (s *Step) runSchedules(ctx context.Context) error {
	if s.schedules == nil {
		return nil
	}
	ids, err := s.schedules.ListSchedules(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := s.runSchedule(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Step) runSchedule(ctx context.Context, id string) error {
	sc, err := s.schedules.Schedule(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	st, err := s.schedules.ScheduleState(ctx, id)
	if err != nil {
		return err
	}
	rule, err := schedule.Parse(sc.Trigger, sc.SavedAt)
	if err != nil {
		// Saved schedules were checked; a zone database that lost the zone is the
		// operator's to fix, and must not stop the other schedules.
		logging.FromContext(ctx).Errorw("schedule cannot be evaluated", zap.String("schedule", id), zap.Error(err))
		return nil
	}
	after := sc.SavedAt
	if st.Handled.After(after) {
		after = st.Handled
	}
	now := s.now().UTC()
	var interval time.Duration
	if next := rule.Next(now, 2); len(next) == 2 {
		interval = next[1].Sub(next[0])
	}
	if err := s.planSeen(ctx, sc.Plan.ID, interval); err != nil {
		return err
	}
	due := rule.Due(after, now)
	if due.Latest.IsZero() {
		return nil
	}
	log := logging.FromContext(ctx).With(zap.String("schedule", id), zap.String("plan", sc.Plan.ID))
	if len(due.Skipped) > 0 {
		reason := fmt.Sprintf("the tick came more than the window (%s) after these occurrences: they are skipped, not run late", rule.Window)
		log.Warnw("schedule occurrences skipped", zap.Times("occurrences", due.Skipped), zap.Int("more", due.More), zap.String("reason", reason))
		if err := s.emit(ctx, events.FlowProtect, id, events.ScheduleSkipped,
			function.DerivedID("schedule-skipped", id, due.Latest.UTC().Format(time.RFC3339)),
			events.ScheduleSkippedResult{Schedule: id, Plan: sc.Plan.ID, Occurrences: utc(due.Skipped), More: due.More, Reason: reason}); err != nil {
			return err
		}
		st.Skipped = append(st.Skipped, utc(due.Skipped)...)
		if len(st.Skipped) > keptSkips {
			st.Skipped = st.Skipped[len(st.Skipped)-keptSkips:]
		}
	}
	if !due.Run.IsZero() {
		occurrence := due.Run.UTC().Format(time.RFC3339)
		req := events.ProtectRequest{Plan: sc.Plan, Occurrence: occurrence}
		cp := CheckpointID(req, event.Event{})
		// The checkpoint's retention finds the plan's policy through this entry.
		if err := s.schedules.PutPlanSchedule(ctx, sc.Plan.ID, id); err != nil {
			return err
		}
		if err := s.emit(ctx, events.FlowProtect, cp, events.ProtectRequested, occurrenceID(id, occurrence), req); err != nil {
			return err
		}
		log.Infow("schedule occurrence run", zap.String("occurrence", occurrence), zap.String("checkpoint", cp))
		st.LastRun, st.LastCheckpoint = due.Run.UTC(), cp
	}
	st.Handled = due.Latest.UTC()
	return s.schedules.PutScheduleState(ctx, id, st)
}

// agreesWithPlan refuses a schedule whose plan another schedule stores with a different
// scope or retention policy: the plan in force must be one.
func (s *Step) agreesWithPlan(ctx context.Context, sc events.Schedule) error {
	stored, err := s.planSchedules(ctx, sc.Plan.ID)
	if err != nil {
		return err
	}
	policy := policyOf(sc.Plan.Retention)
	for _, o := range stored {
		if o.schedule != sc.ID && !sameScope(o.scope, sc.Plan.Scope) {
			return function.Permanent(fmt.Errorf("/plan/scope: plan %s is stored by schedule %s with scope %s, not %s: schedules of one plan share its scope (give this one another plan id, or change or delete schedule %s first)",
				sc.Plan.ID, o.schedule, describeScope(o.scope), describeScope(sc.Plan.Scope), o.schedule))
		}
		if o.schedule != sc.ID && o.policy != policy {
			return function.Permanent(fmt.Errorf("/plan/retention: plan %s is stored by schedule %s with retention %s, not %s: schedules of one plan share its retention (give this one another plan id, or change or delete schedule %s first)",
				sc.Plan.ID, o.schedule, describePolicy(o.policy), describePolicy(policy), o.schedule))
		}
	}
	return nil
}

// pingPlan is the data of a PingSource firing that carries a plan.
type pingPlan struct {
	Plan *events.Plan `json:"plan"`
}

// ping handles a PingSource firing: a scheduled protect when its data carries a plan,
// else a tick.
func (s *Step) ping(ctx context.Context, e event.Event) error {
	var p pingPlan
	if len(e.Data()) > 0 {
		if err := json.Unmarshal(e.Data(), &p); err != nil {
			return function.Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
		}
	}
	if p.Plan == nil {
		return s.tick(ctx)
	}
	// PingSource gives its events random ids and no time: the occurrence is the minute
	// the firing arrived in (cron fires on whole minutes, and the broker's retries end
	// well within one), and a plan without an id is named after the PingSource.
	req := events.ProtectRequest{Plan: *p.Plan, Occurrence: s.eventTime(e).Truncate(time.Minute).Format(time.RFC3339)}
	if req.Plan.ID == "" {
		req.Plan.ID = function.DerivedID("pingsource", e.Source())
	}
	by, err := callerOf(e)
	if err != nil {
		return err
	}
	if by == "" {
		by = pingedBy(e)
	}
	return s.protectRequest(ctx, e, req, by)
}

func utc(ts []time.Time) []time.Time {
	out := make([]time.Time, len(ts))
	for i, t := range ts {
		out[i] = t.UTC()
	}
	return out
}
