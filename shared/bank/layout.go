package bank

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Layout owns the object names of the bank. Nothing else builds object names.
//
//	listings/<key>.json                                   a list-pods graph too large for an event
//	checkpoints/<checkpoint>/checkpoint.json              the index: id, plan, project, provider, created-at, options
//	checkpoints/<checkpoint>/graph.json                   the resource graph
//	checkpoints/<checkpoint>/status/<status>              one create-only marker per status reached
//	checkpoints/<checkpoint>/resources/<key>/status.json  per-resource status and reason
//	checkpoints/<checkpoint>/resources/<key>/metadata.json  saved definitions (pod, PVC, PV) or backup record
//	checkpoints/<checkpoint>/pending/<key>                present while a resource is not finished
//	indices/plans/<plan>/<inverted time>_<checkpoint>     checkpoints of a plan, newest first
//	indices/dates/<yyyy-mm-dd>/<checkpoint>               checkpoints by creation day
//
// Resource keys ("Type#id") are escaped so that "::" and "#" stay inside one path segment.
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

// StatusMarker is the create-only marker of one checkpoint status.
func (l Layout) StatusMarker(checkpoint, status string) string {
	return l.StatusPrefix(checkpoint) + status
}

// ResourceStatus is one resource's status object in a checkpoint.
func (l Layout) ResourceStatus(checkpoint, key string) string {
	return l.CheckpointPrefix(checkpoint) + "resources/" + EscapeKey(key) + "/status.json"
}

// ResourceMetadata is one resource's saved metadata in a checkpoint.
func (l Layout) ResourceMetadata(checkpoint, key string) string {
	return l.CheckpointPrefix(checkpoint) + "resources/" + EscapeKey(key) + "/metadata.json"
}

// PendingPrefix lists the unfinished resources of a checkpoint.
func (l Layout) PendingPrefix(checkpoint string) string {
	return l.CheckpointPrefix(checkpoint) + "pending/"
}

// Pending marks a resource of a checkpoint as not finished.
func (l Layout) Pending(checkpoint, key string) string {
	return l.PendingPrefix(checkpoint) + EscapeKey(key)
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
