package choreographer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

// Retention (Karbor's retention_protect). A plan's policy keeps its newest max_backups
// available checkpoints and those younger than retention_duration days; every other
// available checkpoint is deleted through the delete flow. Only available checkpoints
// are counted, and the newest max_backups of them (at least one, also under a policy of
// retention_duration alone) are kept whatever their age, so a plan whose protects keep
// failing never loses its last good checkpoints. It runs when a checkpoint of the plan
// ends available (never after a protect that ended in error), when the deletion of one
// ends, and when a restore of one ends; each run reads the plan from the bank and
// decides again, so a run repeated is harmless.
//
// The policy in force is the plan as stored, never what a request says: the retention of
// the schedules that store the plan (schedule.set), found through the index of the
// plan's schedules. A plan no schedule stores has no policy in force, whatever its
// protect requests carry: a request can add checkpoints to a plan, never make retention
// delete any. A protect request of a stored plan whose retention differs from the stored
// one is refused (400, with the stored policy): the request claims a policy the bank
// does not hold. Schedules that store one plan with different policies (saved in a
// race, as schedule.set refuses it) leave the plan without a policy in force until one
// of them is saved again.
//
// Incremental chains. Cinder bases an incremental backup on the volume's backup before
// it and refuses to delete a backup that a newer one depends on. Walking the plan's
// checkpoints newest to oldest, a checkpoint whose backup of a volume a newer remaining
// checkpoint's incremental backup of that volume needs is kept while that one stays, and
// deleted only after it: one link of a chain per run, newest first.

// Retention decisions.
const (
	retainKeep   = "kept"
	retainDelete = "deleted"
	// retainLater is a checkpoint to delete once the newer checkpoints of its chain,
	// deleted now or being deleted, are gone: the run after their deletion takes it.
	retainLater = "deferred"
	// retainIgnore is a checkpoint retention neither counts nor deletes (not available).
	retainIgnore = "ignored"
)

// planCheckpoint is what retention knows of one checkpoint of a plan.
type planCheckpoint struct {
	ID        string
	Status    string
	CreatedAt time.Time
	// Incremental is true when the checkpoint's parameters asked for incremental backups.
	Incremental bool
	// Backups maps each volume with an available backup in the checkpoint to the mode of
	// the backup (full or incremental). It is read only when the plan has incremental
	// checkpoints.
	Backups map[string]string
	// Restoring is true while a restore in progress reads the checkpoint.
	Restoring bool
}

// verdict is retention's decision about one checkpoint, and why.
type verdict struct {
	Checkpoint string
	Decision   string
	Reason     string
	// Held is a checkpoint the policy lets go, kept for a chain or a restore.
	Held bool
}

// limited reports whether a policy limits anything (Karbor: a value <= 0 is no limit).
func limited(p events.Retention) bool {
	return p.MaxBackups > 0 || p.RetentionDuration > 0
}

// kept is how many of the newest available checkpoints a policy keeps whatever their age:
// max_backups, and at least one.
func kept(p events.Retention) int { return max(p.MaxBackups, 1) }

// needer is a checkpoint whose incremental backup of a volume needs the next older backup
// of that volume; going when it is itself deleted now or later, or being deleted.
type needer struct {
	id    string
	going bool
}

// decide applies a policy to a plan's checkpoints, newest first, at now; the verdicts are
// in the same order, which is the order deletions are requested in.
func decide(cps []planCheckpoint, p events.Retention, now time.Time) []verdict {
	maxAge := time.Duration(p.RetentionDuration) * 24 * time.Hour
	out := make([]verdict, 0, len(cps))
	available := 0
	// need: per volume, the newer checkpoint that needs the next older backup of it.
	need := map[string]needer{}
	// hold: a checkpoint being protected with incremental backups may base one on the
	// next older backup of any volume (those it has not backed up yet); held lists the
	// volumes whose next older backup was met since.
	var hold *needer
	held := map[string]bool{}
	for _, cp := range cps {
		var needers []needer
		for v := range cp.Backups {
			if n, ok := need[v]; ok {
				needers = append(needers, n)
			} else if hold != nil && !held[v] {
				needers = append(needers, *hold)
			}
		}
		vd := verdict{Checkpoint: cp.ID}
		switch {
		case cp.Status == events.StatusDeleted:
			vd.Decision, vd.Reason = retainIgnore, "deleted"
			out = append(out, vd)
			continue // holds no backups
		case cp.Status != events.StatusAvailable:
			vd.Decision, vd.Reason = retainIgnore, fmt.Sprintf("%s: only available checkpoints are counted and deleted", cp.Status)
		default:
			available++
			byCount := p.MaxBackups > 0 && available > p.MaxBackups
			old := maxAge > 0 && now.Sub(cp.CreatedAt) > maxAge
			byAge := old && available > kept(p)
			stays, going := firstNeeder(needers)
			switch {
			case old && !byAge:
				vd.Decision, vd.Reason = retainKeep, fmt.Sprintf("newest available checkpoint %d, kept whatever its age (the newest %d available checkpoints always stay)", available, kept(p))
			case !byCount && !byAge:
				vd.Decision, vd.Reason = retainKeep, policyReason(p, available)
			case stays != nil:
				vd.Decision, vd.Reason, vd.Held = retainKeep, fmt.Sprintf("%s; kept while checkpoint %s, which depends on its backups, stays (incremental chain)", expiry(byCount, byAge, p), stays.id), true
			case cp.Restoring:
				vd.Decision, vd.Reason, vd.Held = retainKeep, fmt.Sprintf("%s; a restore in progress reads it: deleted once the restore has ended", expiry(byCount, byAge, p)), true
			case going != nil:
				vd.Decision, vd.Reason = retainLater, fmt.Sprintf("%s; deleted after checkpoint %s, which depends on its backups (incremental chain)", expiry(byCount, byAge, p), going.id)
			default:
				vd.Decision, vd.Reason = retainDelete, expiry(byCount, byAge, p)
			}
		}
		out = append(out, vd)
		self := needer{id: cp.ID, going: vd.Decision == retainDelete || vd.Decision == retainLater || cp.Status == events.StatusDeleting}
		for v, mode := range cp.Backups {
			held[v] = true
			if mode == "incremental" {
				need[v] = self
			} else {
				delete(need, v)
			}
		}
		if cp.Status == events.StatusProtecting && cp.Incremental {
			hold, held = &self, map[string]bool{}
			for v := range cp.Backups {
				held[v] = true
			}
		}
	}
	return out
}

// firstNeeder returns a needer that stays, else one that goes.
func firstNeeder(ns []needer) (kept, going *needer) {
	for i := range ns {
		if !ns[i].going {
			return &ns[i], nil
		}
		if going == nil {
			going = &ns[i]
		}
	}
	return nil, going
}

func policyReason(p events.Retention, rank int) string {
	var parts []string
	if p.MaxBackups > 0 {
		parts = append(parts, fmt.Sprintf("newest available checkpoint %d of max_backups %d", rank, p.MaxBackups))
	}
	if p.RetentionDuration > 0 {
		parts = append(parts, fmt.Sprintf("younger than retention_duration %d days", p.RetentionDuration))
	}
	if len(parts) == 0 {
		return "no limit"
	}
	return strings.Join(parts, ", ")
}

func expiry(byCount, byAge bool, p events.Retention) string {
	var parts []string
	if byCount {
		parts = append(parts, fmt.Sprintf("beyond the newest %d available checkpoints (max_backups)", p.MaxBackups))
	}
	if byAge {
		parts = append(parts, fmt.Sprintf("older than %d days (retention_duration)", p.RetentionDuration))
	}
	return strings.Join(parts, " and ")
}

// retain applies the retention policy in force for a plan: that of the plan as stored
// (storedPolicy). It reads the plan's checkpoints (index and status; the volume records
// only when the plan has incremental checkpoints), decides, logs each decision, and
// requests the deletion of each checkpoint to delete now. Deletions go through the delete
// flow, which announces them as any other.
func (s *Step) retain(ctx context.Context, plan string) error {
	if plan == "" {
		return nil
	}
	// The policy first, so that a plan without one costs no listing of its checkpoints.
	policy, err := s.storedPolicy(ctx, plan)
	if err != nil {
		return fmt.Errorf("retention of plan %s: %w", plan, err)
	}
	if !limited(policy) {
		return nil
	}
	l := &planList{plan: plan, seen: map[string]bool{}}
	for !l.done {
		if _, err := l.next(ctx, s.bank); err != nil {
			return err
		}
	}
	cps, err := s.readPlan(ctx, l.ids)
	if err != nil {
		return fmt.Errorf("retention of plan %s: %w", plan, err)
	}
	now := s.now()
	verdicts := decide(cps, policy, now)
	if deletes(verdicts) {
		// Only when something is to go: which checkpoints do restores in progress read?
		restoring, err := s.restoringCheckpoints(ctx)
		if err != nil {
			return fmt.Errorf("retention of plan %s: %w", plan, err)
		}
		for i := range cps {
			cps[i].Restoring = restoring[cps[i].ID]
		}
		verdicts = decide(cps, policy, now)
	}
	s.keptAvailable(plan, cps, verdicts)
	log := logging.FromContext(ctx)
	counts := map[string]int{}
	for _, v := range verdicts {
		counts[v.Decision]++
		fields := []any{zap.String("plan", plan), zap.String("checkpoint", v.Checkpoint), zap.String("decision", v.Decision), zap.String("reason", v.Reason)}
		if v.Decision == retainDelete || v.Decision == retainLater || v.Held {
			log.Infow("retention", fields...)
		} else {
			log.Debugw("retention", fields...)
		}
	}
	log.Infow("retention applied", zap.String("plan", plan), zap.Int("max_backups", policy.MaxBackups), zap.Int("retention_duration", policy.RetentionDuration),
		zap.Int("checkpoints", len(verdicts)), zap.Int("kept", counts[retainKeep]), zap.Int("deleted", counts[retainDelete]), zap.Int("deferred", counts[retainLater]))
	for _, v := range verdicts {
		if v.Decision != retainDelete {
			continue
		}
		if err := s.emit(ctx, events.FlowDelete, v.Checkpoint, events.DeleteRequested, retentionID(v.Checkpoint),
			events.DeleteRequest{Checkpoint: v.Checkpoint}); err != nil {
			return fmt.Errorf("retention of plan %s: %w", plan, err)
		}
	}
	return nil
}

func deletes(vs []verdict) bool {
	for _, v := range vs {
		if v.Decision == retainDelete {
			return true
		}
	}
	return false
}

// planList lists the checkpoints of a plan, newest first, a page at a time.
type planList struct {
	plan   string
	marker string
	done   bool
	ids    []string
	seen   map[string]bool
}

// next lists the next page, adds its checkpoints to ids (once each: racing duplicates of
// a request may index a checkpoint twice) and returns them.
func (l *planList) next(ctx context.Context, b interface {
	ListCheckpoints(ctx context.Context, plan string, limit int, marker string) ([]string, string, error)
}) ([]string, error) {
	const page = 1000
	list, next, err := b.ListCheckpoints(ctx, l.plan, page, l.marker)
	if err != nil {
		return nil, fmt.Errorf("retention of plan %s: %w", l.plan, err)
	}
	var added []string
	for _, id := range list {
		if !l.seen[id] {
			l.seen[id] = true
			added = append(added, id)
		}
	}
	l.ids = append(l.ids, added...)
	l.marker, l.done = next, next == ""
	return added, nil
}

// readPlan reads what deciding needs of each checkpoint, a few at a time: its index and
// status, then the volume records of the checkpoints
// whose backups an incremental chain may involve: an incremental checkpoint and every
// older one. Checkpoints removed meanwhile are left out.
func (s *Step) readPlan(ctx context.Context, ids []string) ([]planCheckpoint, error) {
	cps := make([]*planCheckpoint, len(ids))
	at := make([]int, len(ids))
	for i := range at {
		at[i] = i
	}
	err := batch.Each(ctx, at, s.workers, func(ctx context.Context, i int) error {
		cp, err := s.bank.Checkpoint(ctx, ids[i])
		if errors.Is(err, bank.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		status, err := s.bank.Status(ctx, cp.ID)
		if errors.Is(err, bank.ErrNotFound) {
			status = events.StatusProtecting // its index is written, its first status not yet
		} else if err != nil {
			return err
		}
		cps[i] = &planCheckpoint{ID: cp.ID, Status: status, CreatedAt: cp.CreatedAt, Incremental: cp.Parameters.Volume.BackupMode == "incremental"}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []planCheckpoint
	var chained []int
	incremental := false
	for _, cp := range cps {
		if cp == nil {
			continue
		}
		incremental = incremental || cp.Incremental
		if incremental && cp.Status != events.StatusDeleted {
			chained = append(chained, len(out))
		}
		out = append(out, *cp)
	}
	err = batch.Each(ctx, chained, s.workers, func(ctx context.Context, i int) error {
		recs, err := s.bank.RecordsOf(ctx, out[i].ID, phaseVolumes+"-")
		if err != nil {
			return err
		}
		out[i].Backups = volumeBackups(recs)
		return nil
	})
	return out, err
}

// volumeBackups maps each volume with an available backup in records to the backup's mode.
func volumeBackups(recs []bank.Record) map[string]string {
	out := map[string]string{}
	for _, rec := range recs {
		for key, rr := range rec.Resources {
			var info checkpoint.VolumeInfo
			if rr.Status != events.StatusAvailable || json.Unmarshal(rr.Data, &info) != nil || info.BackupID == "" {
				continue
			}
			v := info.VolumeID
			if v == "" {
				v = strings.TrimPrefix(key, graph.VolumeType+"#")
			}
			out[v] = info.Mode
		}
	}
	return out
}

// restoringCheckpoints returns the checkpoints that restores in progress read.
func (s *Step) restoringCheckpoints(ctx context.Context) (map[string]bool, error) {
	ids, err := s.restores.Active(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, rid := range ids {
		r, err := s.bank.Restore(ctx, rid)
		if errors.Is(err, bank.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		status, err := s.restores.Status(ctx, rid)
		if err != nil && !errors.Is(err, bank.ErrNotFound) {
			return nil, err
		}
		if status == events.RestoreInProgress || errors.Is(err, bank.ErrNotFound) {
			out[r.Checkpoint] = true // a restore without a status yet is starting
		}
	}
	return out, nil
}

// noteDeletion records the deletion of a checkpoint as it starts: the deadline the
// delete-backup step works to, the checkpoint's plan, so that the plan's retention runs
// again once the deletion has ended (the checkpoint's index is gone then), and who asked.
func (s *Step) noteDeletion(ctx context.Context, cp *bank.Checkpoint, deadline time.Time, by string) error {
	return s.bank.PutDeletion(ctx, bank.Deletion{Checkpoint: cp.ID, Plan: cp.Plan, Deadline: deadline, RequestedBy: by})
}

// retainAfterDeletion runs the retention of the plan of a checkpoint whose deletion
// ended: the next older checkpoint of an incremental chain may go now.
func (s *Step) retainAfterDeletion(ctx context.Context, checkpoint string) error {
	d, err := s.bank.Deletion(ctx, checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return nil // not of a plan
	}
	if err != nil || d.Plan.ID == "" {
		return err // "": not of a plan
	}
	return s.retain(ctx, d.Plan.ID)
}

// retainAfterRestore runs the retention of the plan of a checkpoint whose restore ended:
// the restore may have kept it from being deleted.
func (s *Step) retainAfterRestore(ctx context.Context, r *bank.Restore) error {
	cp, err := s.bank.Checkpoint(ctx, r.Checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.retain(ctx, cp.Plan.ID)
}

// storedPlans is where plans are stored: the schedules, indexed by the plan they store.
type storedPlans interface {
	PlanSchedules(ctx context.Context, plan string) ([]string, error)
	Schedule(ctx context.Context, id string) (*bank.ScheduleRecord, error)
}

// planSchedule is a schedule that stores a plan, and the plan's retention policy and
// scope there.
type planSchedule struct {
	schedule string
	policy   events.Retention
	scope    events.Scope
}

// planSchedules returns the schedules that store a plan, in id order; none when the
// store keeps no schedules. An index entry whose schedule is gone, or stores another
// plan since, is left out.
func (s *Step) planSchedules(ctx context.Context, plan string) ([]planSchedule, error) {
	if s.plans == nil {
		return nil, nil
	}
	ids, err := s.plans.PlanSchedules(ctx, plan)
	if err != nil {
		return nil, err
	}
	var out []planSchedule
	for _, id := range ids {
		sc, err := s.plans.Schedule(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if sc.Plan.ID == plan {
			out = append(out, planSchedule{schedule: id, policy: policyOf(sc.Plan.Retention), scope: sc.Plan.Scope})
		}
	}
	return out, nil
}

// policyOf is a policy as compared and applied: none is no limit.
func policyOf(p *events.Retention) events.Retention {
	if p == nil {
		return events.Retention{}
	}
	return events.Retention{MaxBackups: max(p.MaxBackups, 0), RetentionDuration: max(p.RetentionDuration, 0)}
}

// storedPolicy is the retention policy in force for a plan: that of the schedules that
// store it. A plan no schedule stores, or whose schedules disagree, has none (no limit):
// retention deletes nothing of it.
func (s *Step) storedPolicy(ctx context.Context, plan string) (events.Retention, error) {
	stored, err := s.planSchedules(ctx, plan)
	if err != nil {
		return events.Retention{}, err
	}
	return agreed(ctx, plan, stored), nil
}

// agreed is the policy the schedules of a plan agree on; none when there are none, or
// when they disagree.
func agreed(ctx context.Context, plan string, stored []planSchedule) events.Retention {
	if len(stored) == 0 {
		return events.Retention{}
	}
	for _, o := range stored[1:] {
		if o.policy != stored[0].policy {
			logging.FromContext(ctx).Warnw("schedules of one plan disagree on its retention: none is applied until they agree", zap.String("plan", plan),
				zap.String("schedule", stored[0].schedule), zap.String("other", o.schedule))
			return events.Retention{}
		}
	}
	return stored[0].policy
}

// planRetention checks a protect request's scope and retention against the plan as
// stored and
// returns the policy to record in the checkpoint (nil when the plan has none stored).
// A policy without a plan id is refused: retention applies to the checkpoints of a plan.
// A policy that differs from the stored one is refused with the stored one. A policy for
// a plan no schedule stores is not applied: the checkpoint is made, and retention deletes
// nothing because of it.
func (s *Step) planRetention(ctx context.Context, p events.Plan) (*events.Retention, error) {
	if p.Retention != nil && p.ID == "" {
		return nil, function.Permanent(errors.New("/plan/retention: retention applies to the checkpoints of a plan: set /plan/id"))
	}
	if p.ID == "" {
		return nil, nil
	}
	stored, err := s.planSchedules(ctx, p.ID)
	if err != nil {
		return nil, fmt.Errorf("retention of plan %s: %w", p.ID, err)
	}
	if len(stored) == 0 {
		if p.Retention != nil && limited(policyOf(p.Retention)) {
			logging.FromContext(ctx).Warnw("retention of a plan no schedule stores is not applied: save the plan with schedule.set",
				zap.String("plan", p.ID), zap.Int("max_backups", p.Retention.MaxBackups), zap.Int("retention_duration", p.Retention.RetentionDuration))
		}
		return nil, nil
	}
	// A checkpoint of another scope under the plan's id would count among the plan's
	// checkpoints, and retention would delete the plan's own for it.
	for _, o := range stored {
		if !sameScope(o.scope, p.Scope) {
			return nil, function.Permanent(fmt.Errorf("/plan/scope: plan %s is stored by schedule %s with scope %s, not %s: change the schedule (schedule.set), or give the request another plan id",
				p.ID, o.schedule, describeScope(o.scope), describeScope(p.Scope)))
		}
	}
	if p.Retention != nil {
		asked := policyOf(p.Retention)
		for _, o := range stored {
			if o.policy != asked {
				return nil, function.Permanent(fmt.Errorf("/plan/retention: plan %s is stored by schedule %s with retention %s, not %s: change the schedule (schedule.set), not the request",
					p.ID, o.schedule, describePolicy(o.policy), describePolicy(asked)))
			}
		}
	}
	policy := agreed(ctx, p.ID, stored)
	if !limited(policy) {
		return nil, nil
	}
	return &policy, nil
}

// describePolicy is a policy in a reason.
func describePolicy(p events.Retention) string {
	return fmt.Sprintf("{max_backups: %d, retention_duration: %d}", p.MaxBackups, p.RetentionDuration)
}
