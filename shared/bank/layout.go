package bank

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Layout owns the object names of the bank. Nothing else builds object names.
//
//	listings/<key>.json                              a list-pods graph too large for an event
//	checkpoints/<id>/checkpoint.json                 the index: plan, project, provider, created-at, deadline, options
//	checkpoints/<id>/graph.json                      the resource graph (create-only)
//	checkpoints/<id>/fanout                          present once every pending marker exists (create-only)
//	checkpoints/<id>/status/<time>_<status>          one marker per status reached; the newest is current
//	checkpoints/<id>/records/<batch>.json            what a step saved for a batch of resources (pod definitions, backups)
//	checkpoints/<id>/pending/<batch>                 present while a batch is not finished
//	checkpoints/<id>/resent/<batch>                  when the tick last sent a pending batch's request again
//	checkpoints/<id>/failed/<key>.json               a resource that ended in error, and why (create-only)
//	checkpoints/<id>/keys/<key id>                   a key whose envelopes the checkpoint's records hold (empty)
//	indices/all/<inverted time>_<id>                 every checkpoint, newest first
//	indices/plans/<plan>/<inverted time>_<id>        the checkpoints of a plan, newest first
//	indices/dates/<yyyy-mm-dd>/<id>                  checkpoints by creation day
//	indices/active/<kind>/<id>                       operations still in progress, for the tick
//	indices/keys/<key id>/<id>                       the checkpoints whose records hold envelopes of a key (empty)
//	restores/<id>/restore.json                       a restore's index; status/, records/, pending/, failed/ as above
//	deletions/<checkpoint>/...                       the deletion of a checkpoint: status/, records/, pending/, failed/
//	deletions/<checkpoint>/deletion.json             the deletion's index: the checkpoint's plan, kept once its metadata is removed
//	indices/restores/<inverted time>_<id>            every restore, newest first
//	schedules/<id>/schedule.json                     a schedule: its plan and trigger, and when it was saved
//	schedules/<id>/state.json                        the latest occurrence the tick handled, the last run, recent skips
//	indices/planschedules/<plan>/<schedule>          the schedules that store a plan (whose retention policy is in force)
//	deadletters/<id>/letter.json                     a dead letter: the whole event, error code, destination, response (create-only)
//	deadletters/<id>/failures/<time>_<code>          each failed delivery of its event that reached the sink, by arrival time
//	deadletters/<id>/replays/<time>_<request>        each time its event was sent again
//	indices/deadletters/all/<inverted time>_<id>     every dead letter, newest first
//	indices/deadletters/types/<type>/<inverted time>_<id>  the dead letters of one event type, newest first
//
// Resource keys ("Type#id") are escaped so that each stays one path segment.
type Layout struct{}

// Listing is where a list-pods graph is stored.
func (Layout) Listing(key string) string { return "listings/" + key + ".json" }

// Kinds of operations the bank tracks.
const (
	KindCheckpoints = "checkpoints"
	KindRestores    = "restores"
	KindDeletions   = "deletions"
)

// Op names an operation whose progress the bank tracks: a checkpoint being protected, a
// restore, or the deletion of a checkpoint. Each has the same parts: status markers,
// per-batch records, pending markers, failures.
type Op struct{ Kind, ID string }

// CheckpointOp, RestoreOp and DeletionOp name operations.
func CheckpointOp(id string) Op { return Op{KindCheckpoints, id} }
func RestoreOp(id string) Op    { return Op{KindRestores, id} }
func DeletionOp(id string) Op   { return Op{KindDeletions, id} }

// Prefix is the prefix of every object of the operation.
func (o Op) Prefix() string { return o.Kind + "/" + Segment(o.ID) + "/" }

// CheckpointPrefix is the prefix of every object of a checkpoint.
func (Layout) CheckpointPrefix(checkpoint string) string { return CheckpointOp(checkpoint).Prefix() }

// CheckpointIndex is the checkpoint's index object.
func (l Layout) CheckpointIndex(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "checkpoint.json"
}

// Graph is the checkpoint's resource graph.
func (l Layout) Graph(checkpoint string) string { return l.CheckpointPrefix(checkpoint) + "graph.json" }

// StatusPrefix lists the status markers of a checkpoint.
func (l Layout) StatusPrefix(op Op) string {
	return op.Prefix() + "status/"
}

// StatusMarker is the marker of a status reached at a time.
func (l Layout) StatusMarker(op Op, at time.Time, status string) string {
	return l.StatusPrefix(op) + fmt.Sprintf("%020d", at.UnixNano()) + "_" + status
}

// ParseStatusMarker reads the time and status from a status marker's name.
func (Layout) ParseStatusMarker(name string) (time.Time, string, bool) {
	base := name[strings.LastIndex(name, "/")+1:]
	ts, status, ok := strings.Cut(base, "_")
	if !ok {
		return time.Time{}, "", false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, n).UTC(), status, true
}

// FanOut is present once every pending marker of a checkpoint exists.
func (l Layout) FanOut(op Op, phase string) string { return op.Prefix() + "fanout" + phase }

// Ended records, create-only, how the attempt of an operation that became running at
// started ended; an operation attempted again (a deletion) has one per attempt.
func (l Layout) Ended(op Op, started time.Time) string {
	return op.Prefix() + fmt.Sprintf("ended/%020d", started.UnixNano())
}

// Record is what a step saved for one batch.
func (l Layout) Record(op Op, batch string) string {
	return l.RecordPrefix(op) + EscapeKey(batch) + ".json"
}

// RecordPrefix lists the records of a checkpoint.
func (l Layout) RecordPrefix(op Op) string {
	return op.Prefix() + "records/"
}

// PendingPrefix lists the unfinished resources of a checkpoint.
func (l Layout) PendingPrefix(op Op) string {
	return op.Prefix() + "pending/"
}

// Pending marks a batch of a checkpoint as not finished.
func (l Layout) Pending(op Op, batch string) string {
	return l.PendingPrefix(op) + EscapeKey(batch)
}

// ResentPrefix lists the batches whose request was sent again.
func (l Layout) ResentPrefix(op Op) string {
	return op.Prefix() + "resent/"
}

// Resent marks when a batch's request was last sent again (its time is the object's).
func (l Layout) Resent(op Op, batch string) string {
	return l.ResentPrefix(op) + EscapeKey(batch)
}

// FailurePrefix lists the failed resources of a checkpoint.
func (l Layout) FailurePrefix(op Op) string {
	return op.Prefix() + "failed/"
}

// Failure records why a resource failed.
func (l Layout) Failure(op Op, key string) string {
	return l.FailurePrefix(op) + EscapeKey(key) + ".json"
}

// FailureKey reads the key of the resource a failure record names, as Failure wrote it;
// false for a name that is not one of op's failures.
func (l Layout) FailureKey(op Op, name string) (string, bool) {
	seg, ok := strings.CutPrefix(name, l.FailurePrefix(op))
	if !ok {
		return "", false
	}
	if seg, ok = strings.CutSuffix(seg, ".json"); !ok || seg == "" || strings.Contains(seg, "/") {
		return "", false
	}
	key, err := UnescapeKey(seg)
	return key, err == nil
}

// CheckpointKeysPrefix lists the keys whose envelopes a checkpoint's records hold.
func (l Layout) CheckpointKeysPrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "keys/"
}

// CheckpointKey marks that a checkpoint's records hold envelopes sealed with a key.
func (l Layout) CheckpointKey(checkpoint, keyID string) string {
	return l.CheckpointKeysPrefix(checkpoint) + Segment(keyID)
}

// KeyIndexPrefix lists the checkpoints whose records hold envelopes sealed with a key.
func (Layout) KeyIndexPrefix(keyID string) string { return "indices/keys/" + Segment(keyID) + "/" }

// KeyIndex is a checkpoint's entry in the index of a key.
func (l Layout) KeyIndex(keyID, checkpoint string) string {
	return l.KeyIndexPrefix(keyID) + Segment(checkpoint)
}

// AllIndexPrefix lists every checkpoint, newest first.
func (Layout) AllIndexPrefix() string { return "indices/all/" }

// AllIndex is a checkpoint's entry in the index of every checkpoint.
func (l Layout) AllIndex(checkpoint string, created time.Time) string {
	return l.AllIndexPrefix() + invertedTime(created) + "_" + Segment(checkpoint)
}

// ActivePrefix lists the operations of a kind in progress.
func (Layout) ActivePrefix(kind string) string { return "indices/active/" + kind + "/" }

// Active marks an operation as in progress.
func (l Layout) Active(op Op) string { return l.ActivePrefix(op.Kind) + Segment(op.ID) }

// RestoreIndex is a restore's index object.
func (Layout) RestoreIndex(id string) string { return RestoreOp(id).Prefix() + "restore.json" }

// RestoresPrefix lists every restore, newest first.
func (Layout) RestoresPrefix() string { return "indices/restores/" }

// RestoresIndex is a restore's entry in the list of restores.
func (l Layout) RestoresIndex(id string, created time.Time) string {
	return l.RestoresPrefix() + invertedTime(created) + "_" + Segment(id)
}

// DeadLetterPrefix is the prefix of every object of a dead letter.
func (Layout) DeadLetterPrefix(id string) string { return "deadletters/" + Segment(id) + "/" }

// DeadLetter is a dead letter's record.
func (l Layout) DeadLetter(id string) string { return l.DeadLetterPrefix(id) + "letter.json" }

// DeadLetterFailuresPrefix lists the failed deliveries of a dead letter's event.
func (l Layout) DeadLetterFailuresPrefix(id string) string {
	return l.DeadLetterPrefix(id) + "failures/"
}

// DeadLetterFailure marks a failed delivery of a dead letter's event, by when the broker
// accepted the event, with the HTTP status it ended with.
func (l Layout) DeadLetterFailure(id string, at time.Time, code int) string {
	return l.DeadLetterFailuresPrefix(id) + fmt.Sprintf("%020d_%d", at.UnixNano(), code)
}

// DeadLetterReplaysPrefix lists the replays of a dead letter.
func (l Layout) DeadLetterReplaysPrefix(id string) string { return l.DeadLetterPrefix(id) + "replays/" }

// DeadLetterReplay marks one replay of a dead letter, by time and by the request that
// asked for it (a short digest, so that replays in the same instant stay apart).
func (l Layout) DeadLetterReplay(id string, at time.Time, request string) string {
	return l.DeadLetterReplaysPrefix(id) + fmt.Sprintf("%020d", at.UnixNano()) + "_" + request
}

// ParseDeadLetterMarker reads the time and the part after it from the name of a failure
// or replay marker.
func (Layout) ParseDeadLetterMarker(name string) (time.Time, string, bool) {
	base := name[strings.LastIndex(name, "/")+1:]
	ts, rest, ok := strings.Cut(base, "_")
	if !ok {
		return time.Time{}, "", false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, n).UTC(), rest, true
}

// DeadLettersIndexPrefix lists every dead letter, or those of events of one type,
// newest first.
func (Layout) DeadLettersIndexPrefix(eventType string) string {
	if eventType == "" {
		return "indices/deadletters/all/"
	}
	return "indices/deadletters/types/" + url.PathEscape(eventType) + "/"
}

// DeadLettersIndex is a dead letter's entry in the list of every dead letter, or of
// those of its event's type.
func (l Layout) DeadLettersIndex(eventType, id string, recorded time.Time) string {
	return l.DeadLettersIndexPrefix(eventType) + invertedTime(recorded) + "_" + Segment(id)
}

// PlanIndexPrefix lists the checkpoints of a plan, newest first.
func (Layout) PlanIndexPrefix(plan string) string {
	return "indices/plans/" + Segment(plan) + "/"
}

// PlanIndex is a checkpoint's entry in its plan's index.
func (l Layout) PlanIndex(plan, checkpoint string, created time.Time) string {
	return l.PlanIndexPrefix(plan) + invertedTime(created) + "_" + Segment(checkpoint)
}

// DateIndexPrefix lists the checkpoints created on a day.
func (Layout) DateIndexPrefix(day time.Time) string {
	return "indices/dates/" + day.UTC().Format("2006-01-02") + "/"
}

// DateIndex is a checkpoint's entry in the date index.
func (l Layout) DateIndex(checkpoint string, created time.Time) string {
	return l.DateIndexPrefix(created) + Segment(checkpoint)
}

// DeletionIndex is the index of the deletion of a checkpoint.
func (Layout) DeletionIndex(checkpoint string) string {
	return DeletionOp(checkpoint).Prefix() + "deletion.json"
}

// CheckpointOfIndex returns the id an index entry <inverted time>_<id> names (of every
// checkpoint, a plan's, the restores', the dead letters').
func (Layout) CheckpointOfIndex(name string) string {
	base := name[strings.LastIndex(name, "/")+1:]
	if _, id, ok := strings.Cut(base, "_"); ok {
		base = id // <inverted time>_<id>: the time has no "_"
	}
	return unsegment(base)
}

// invertedTime sorts newer times first in Swift's lexical listing order.
func invertedTime(t time.Time) string {
	const maxNanos = 1<<63 - 1
	return fmt.Sprintf("%019d", maxNanos-t.UnixNano())
}

// EscapeKey turns a resource key into one path segment; UnescapeKey reverses it.
func EscapeKey(key string) string { return url.PathEscape(key) }

// Segment is an id as one path segment of an object name: escaped as EscapeKey does,
// and "." and ".." spelled out, so that no id reaches into another id's objects. Ids of
// the event schemas' pattern are their own segment.
func Segment(id string) string {
	switch id {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return EscapeKey(id)
}

// unsegment reverses Segment; a name that is not one is returned as it is.
func unsegment(seg string) string {
	if id, err := UnescapeKey(seg); err == nil {
		return id
	}
	return seg
}

// UnescapeKey reverses EscapeKey.
func UnescapeKey(seg string) (string, error) { return url.PathUnescape(seg) }

// SchedulesPrefix is the prefix of every schedule's objects.
func (Layout) SchedulesPrefix() string { return "schedules/" }

// Schedule is a schedule's definition.
func (l Layout) Schedule(id string) string {
	return l.SchedulesPrefix() + Segment(id) + "/schedule.json"
}

// ScheduleState is what the tick recorded of a schedule.
func (l Layout) ScheduleState(id string) string {
	return l.SchedulesPrefix() + Segment(id) + "/state.json"
}

// ScheduleOfObject is the schedule a schedule.json object belongs to, or "" for other
// objects.
func (l Layout) ScheduleOfObject(name string) string {
	id, ok := strings.CutSuffix(strings.TrimPrefix(name, l.SchedulesPrefix()), "/schedule.json")
	if !ok || strings.Contains(id, "/") {
		return ""
	}
	return unsegment(id)
}

// PlanSchedulesPrefix lists the schedules that store a plan.
func (Layout) PlanSchedulesPrefix(plan string) string {
	return "indices/planschedules/" + Segment(plan) + "/"
}

// PlanSchedule is a schedule's entry among the schedules that store its plan.
func (l Layout) PlanSchedule(plan, schedule string) string {
	return l.PlanSchedulesPrefix(plan) + Segment(schedule)
}

// ScheduleOfPlanIndex is the schedule a plan's schedule entry names; false for other
// objects.
func (l Layout) ScheduleOfPlanIndex(plan, name string) (string, bool) {
	seg, ok := strings.CutPrefix(name, l.PlanSchedulesPrefix(plan))
	if !ok || seg == "" || strings.Contains(seg, "/") {
		return "", false
	}
	return unsegment(seg), true
}
