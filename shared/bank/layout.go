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
//	indices/all/<inverted time>_<id>                 every checkpoint, newest first
//	indices/plans/<plan>/<inverted time>_<id>        the checkpoints of a plan, newest first
//	indices/dates/<yyyy-mm-dd>/<id>                  checkpoints by creation day
//	indices/active/<kind>/<id>                       operations still in progress, for the tick
//	restores/<id>/restore.json                       a restore's index; status/, records/, pending/, failed/ as above
//	deletions/<checkpoint>/...                       the deletion of a checkpoint: status/, records/, pending/, failed/
//	deletions/<checkpoint>/deletion.json             the deletion's index: the checkpoint's plan, kept once its metadata is removed
//	indices/restores/<inverted time>_<id>            every restore, newest first
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
func (o Op) Prefix() string { return o.Kind + "/" + o.ID + "/" }

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

// AllIndexPrefix lists every checkpoint, newest first.
func (Layout) AllIndexPrefix() string { return "indices/all/" }

// AllIndex is a checkpoint's entry in the index of every checkpoint.
func (l Layout) AllIndex(checkpoint string, created time.Time) string {
	return l.AllIndexPrefix() + invertedTime(created) + "_" + checkpoint
}

// ActivePrefix lists the operations of a kind in progress.
func (Layout) ActivePrefix(kind string) string { return "indices/active/" + kind + "/" }

// Active marks an operation as in progress.
func (l Layout) Active(op Op) string { return l.ActivePrefix(op.Kind) + op.ID }

// RestoreIndex is a restore's index object.
func (Layout) RestoreIndex(id string) string { return RestoreOp(id).Prefix() + "restore.json" }

// RestoresPrefix lists every restore, newest first.
func (Layout) RestoresPrefix() string { return "indices/restores/" }

// RestoresIndex is a restore's entry in the list of restores.
func (l Layout) RestoresIndex(id string, created time.Time) string {
	return l.RestoresPrefix() + invertedTime(created) + "_" + id
}

// PlanIndexPrefix lists the checkpoints of a plan, newest first.
func (Layout) PlanIndexPrefix(plan string) string {
	return "indices/plans/" + url.PathEscape(plan) + "/"
}

// PlanIndex is a checkpoint's entry in its plan's index.
func (l Layout) PlanIndex(plan, checkpoint string, created time.Time) string {
	return l.PlanIndexPrefix(plan) + invertedTime(created) + "_" + checkpoint
}

// DateIndexPrefix lists the checkpoints created on a day.
func (Layout) DateIndexPrefix(day time.Time) string {
	return "indices/dates/" + day.UTC().Format("2006-01-02") + "/"
}

// DateIndex is a checkpoint's entry in the date index.
func (l Layout) DateIndex(checkpoint string, created time.Time) string {
	return l.DateIndexPrefix(created) + checkpoint
}

// DeletionIndex is the index of the deletion of a checkpoint.
func (Layout) DeletionIndex(checkpoint string) string {
	return DeletionOp(checkpoint).Prefix() + "deletion.json"
}

// CheckpointOfIndex returns the checkpoint id named by a plan or date index entry.
func (Layout) CheckpointOfIndex(name string) string {
	base := name[strings.LastIndex(name, "/")+1:]
	if i := strings.LastIndex(base, "_"); i >= 0 {
		return base[i+1:]
	}
	return base
}

// invertedTime sorts newer times first in Swift's lexical listing order.
func invertedTime(t time.Time) string {
	const maxNanos = 1<<63 - 1
	return fmt.Sprintf("%019d", maxNanos-t.UnixNano())
}

// EscapeKey turns a resource key into one path segment; UnescapeKey reverses it.
func EscapeKey(key string) string { return url.PathEscape(key) }

// UnescapeKey reverses EscapeKey.
func UnescapeKey(seg string) (string, error) { return url.PathUnescape(seg) }
