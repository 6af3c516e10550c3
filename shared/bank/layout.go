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
//	checkpoints/<id>/failed/<key>.json               a resource that ended in error, and why (create-only)
//	indices/all/<inverted time>_<id>                 every checkpoint, newest first
//	indices/plans/<plan>/<inverted time>_<id>        the checkpoints of a plan, newest first
//	indices/dates/<yyyy-mm-dd>/<id>                  checkpoints by creation day
//	indices/active/<id>                              checkpoints still in progress, for the tick
//
// Resource keys ("Type#id") are escaped so that each stays one path segment.
type Layout struct{}

// Listing is where a list-pods graph is stored.
func (Layout) Listing(key string) string { return "listings/" + key + ".json" }

// CheckpointPrefix is the prefix of every object of a checkpoint.
func (Layout) CheckpointPrefix(checkpoint string) string { return "checkpoints/" + checkpoint + "/" }

// CheckpointIndex is the checkpoint's index object.
func (l Layout) CheckpointIndex(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "checkpoint.json"
}

// Graph is the checkpoint's resource graph.
func (l Layout) Graph(checkpoint string) string { return l.CheckpointPrefix(checkpoint) + "graph.json" }

// StatusPrefix lists the status markers of a checkpoint.
func (l Layout) StatusPrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "status/"
}

// StatusMarker is the marker of a status reached at a time.
func (l Layout) StatusMarker(checkpoint string, at time.Time, status string) string {
	return l.StatusPrefix(checkpoint) + fmt.Sprintf("%020d", at.UnixNano()) + "_" + status
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
func (l Layout) FanOut(checkpoint string) string { return l.CheckpointPrefix(checkpoint) + "fanout" }

// Record is what a step saved for one batch.
func (l Layout) Record(checkpoint, batch string) string {
	return l.CheckpointPrefix(checkpoint) + "records/" + EscapeKey(batch) + ".json"
}

// RecordPrefix lists the records of a checkpoint.
func (l Layout) RecordPrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "records/"
}

// PendingPrefix lists the unfinished resources of a checkpoint.
func (l Layout) PendingPrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "pending/"
}

// Pending marks a batch of a checkpoint as not finished.
func (l Layout) Pending(checkpoint, batch string) string {
	return l.PendingPrefix(checkpoint) + EscapeKey(batch)
}

// FailurePrefix lists the failed resources of a checkpoint.
func (l Layout) FailurePrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "failed/"
}

// Failure records why a resource failed.
func (l Layout) Failure(checkpoint, key string) string {
	return l.FailurePrefix(checkpoint) + EscapeKey(key) + ".json"
}

// AllIndexPrefix lists every checkpoint, newest first.
func (Layout) AllIndexPrefix() string { return "indices/all/" }

// AllIndex is a checkpoint's entry in the index of every checkpoint.
func (l Layout) AllIndex(checkpoint string, created time.Time) string {
	return l.AllIndexPrefix() + invertedTime(created) + "_" + checkpoint
}

// ActivePrefix lists the checkpoints in progress.
func (Layout) ActivePrefix() string { return "indices/active/" }

// Active marks a checkpoint as in progress.
func (l Layout) Active(checkpoint string) string { return l.ActivePrefix() + checkpoint }

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
