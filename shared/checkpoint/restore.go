package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/graph"
)

// RestoreView is a restore as users see it.
type RestoreView struct {
	ID         string                   `json:"id"`
	Checkpoint string                   `json:"checkpoint"`
	Parameters events.RestoreParameters `json:"parameters"`
	// Status is in_progress, success or fail.
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	Deadline  time.Time `json:"deadline"`
	// RequestedBy is who asked for the restore (bank.Restore.RequestedBy).
	RequestedBy string              `json:"requested_by,omitempty"`
	History     []bank.StatusChange `json:"history"`
	// Resources lists each resource of the checkpoint with its restore status, reason
	// and what it was restored into.
	Resources []RestoreResourceView `json:"resources,omitempty"`
	// Failed are the failures that are not a resource of the checkpoint.
	Failed []bank.Failure `json:"failed,omitempty"`
	// Progress is how far the restore has come (or came, once it ended).
	Progress events.Progress `json:"progress"`
}

// RestoreResourceView is one resource of a restore.
type RestoreResourceView struct {
	graph.Resource
	// Status is restoring until the resource's batch recorded it (or it failed), then
	// available or error.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Restored is what the restore recorded for the resource: a RestoredVolume (the new
	// volume, listed even when its restore failed), a RestoredPod, or a RestoredObject (a
	// ConfigMap, Secret or ServiceAccount).
	Restored json.RawMessage `json:"restored,omitempty"`
}

// RestoreSummary is a restore in a list: with the namespace it restores into and who
// asked for it, by which a list can be narrowed to what a caller may see.
type RestoreSummary struct {
	ID          string    `json:"id"`
	Checkpoint  string    `json:"checkpoint"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	RestoreName string    `json:"restore_name,omitempty"`
	// Namespace is the restore's target namespace (parameters.namespace); empty when
	// each pod goes back to its original namespace, which the checkpoint's scope names.
	Namespace   string `json:"namespace,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// RestoreReader is what restore views are read from: the restores' indexes, the graphs of
// their checkpoints, and the restores' progress. BankRestores reads them from a bank.
type RestoreReader interface {
	Restore(ctx context.Context, id string) (*bank.Restore, error)
	ListRestores(ctx context.Context, limit int, marker string) ([]string, string, error)
	Checkpoint(ctx context.Context, id string) (*bank.Checkpoint, error)
	Graph(ctx context.Context, id string) (*graph.Graph, error)
	RestoreHistory(ctx context.Context, id string) ([]bank.StatusChange, error)
	RestoreFailures(ctx context.Context, id string) ([]bank.Failure, error)
	RestoreRecords(ctx context.Context, id string) ([]bank.Record, error)
	RestorePending(ctx context.Context, id string) ([]bank.Pending, error)
	RestoreFannedOut(ctx context.Context, id, phase string) (bool, error)
}

// BankRestores reads restore views from a bank: the progress methods read the bank's
// restores (bank.Bank.Restores), not its checkpoints.
func BankRestores(b *bank.Bank) RestoreReader { return bankRestores{Bank: b, ops: b.Restores()} }

type bankRestores struct {
	*bank.Bank
	ops *bank.Ops
}

func (b bankRestores) RestoreHistory(ctx context.Context, id string) ([]bank.StatusChange, error) {
	return b.ops.History(ctx, id)
}

func (b bankRestores) RestoreFailures(ctx context.Context, id string) ([]bank.Failure, error) {
	return b.ops.Failures(ctx, id)
}

func (b bankRestores) RestoreRecords(ctx context.Context, id string) ([]bank.Record, error) {
	return b.ops.Records(ctx, id)
}

func (b bankRestores) RestorePending(ctx context.Context, id string) ([]bank.Pending, error) {
	return b.ops.PendingResources(ctx, id)
}

func (b bankRestores) RestoreFannedOut(ctx context.Context, id, phase string) (bool, error) {
	return b.ops.FannedOut(ctx, id, phase)
}

// LoadRestore reads a restore's view; bank.ErrNotFound when the restore does not exist.
func LoadRestore(ctx context.Context, r RestoreReader, id string) (*RestoreView, error) {
	return LoadRestoreAt(ctx, r, id, time.Now())
}

// LoadRestoreAt is LoadRestore, with the progress of a restore still running taken at
// now.
//
// The resources are the nodes of the checkpoint's graph, in graph order. A resource that
// failed is error with the first reason; else the record of its batch gives its status,
// reason and what it was restored into; else it is restoring (its batch is pending, or
// not yet reached). A checkpoint removed since (or a graph not found) leaves the
// resources the restore recorded. Progress is counted from the restore's markers and
// failures, as the choreographer counts it.
func LoadRestoreAt(ctx context.Context, r RestoreReader, id string, now time.Time) (*RestoreView, error) {
	rs, err := r.Restore(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &RestoreView{ID: rs.ID, Checkpoint: rs.Checkpoint, Parameters: rs.Parameters, CreatedAt: rs.CreatedAt, Deadline: rs.Deadline,
		RequestedBy: rs.RequestedBy}
	if v.History, err = r.RestoreHistory(ctx, id); err != nil {
		return nil, err
	}
	if n := len(v.History); n > 0 {
		v.Status = v.History[n-1].Status
	}
	g, cut, err := restoreGraph(ctx, r, rs.Checkpoint)
	if err != nil {
		return nil, err
	}
	batches := make(map[string]string, len(g.Nodes))
	for _, b := range cut {
		for _, res := range b.Resources {
			batches[res.Key()] = b.Name
		}
	}
	records, err := r.RestoreRecords(ctx, id)
	if err != nil {
		return nil, err
	}
	failures, err := r.RestoreFailures(ctx, id)
	if err != nil {
		return nil, err
	}
	byBatch := make(map[string]*bank.Record, len(records))
	for i := range records {
		byBatch[records[i].Batch] = &records[i]
	}
	failed := make(map[string]string, len(failures))
	for _, f := range failures {
		if _, seen := failed[f.Key]; !seen {
			failed[f.Key] = f.Reason
		}
	}
	inGraph := make(map[string]bool, len(g.Nodes))
	for _, n := range g.Nodes {
		inGraph[n.Key()] = true
		var rr *bank.ResourceRecord
		if rec := byBatch[batches[n.Key()]]; rec != nil {
			if x, ok := rec.Resources[n.Key()]; ok {
				rr = &x
			}
		}
		v.Resources = append(v.Resources, restoreResource(n.Resource, rr, failed))
	}
	// Resources recorded but not in the graph: the checkpoint is gone.
	var extra []string
	recorded := map[string]bank.ResourceRecord{}
	for _, rec := range records {
		for key, rr := range rec.Resources {
			if !inGraph[key] {
				if _, dup := recorded[key]; !dup {
					extra = append(extra, key)
				}
				recorded[key] = rr
			}
		}
	}
	sort.Strings(extra)
	for _, key := range extra {
		rr := recorded[key]
		v.Resources = append(v.Resources, restoreResource(resourceOfKey(key), &rr, failed))
	}
	for _, f := range failures {
		if _, left := failed[f.Key]; left {
			v.Failed = append(v.Failed, f)
			delete(failed, f.Key)
		}
	}
	if v.Progress, err = restoreProgress(ctx, r, rs, v.History, cut, failures, now); err != nil {
		return nil, err
	}
	return v, nil
}

// restoreProgress counts a restore's progress from its pending markers, the phases it
// fanned out and its failures.
func restoreProgress(ctx context.Context, r RestoreReader, rs *bank.Restore, h []bank.StatusChange, batches []graph.Batch, failures []bank.Failure, now time.Time) (events.Progress, error) {
	t := Tally{Batches: batches, Pending: map[string]bool{}, Unstarted: map[string]bool{}, Failed: map[string]bool{},
		Started: rs.CreatedAt, Ended: endOf(h, events.RestoreInProgress), Now: now}
	for _, f := range failures {
		t.Failed[f.Key] = true
	}
	if len(batches) == 0 {
		return t.Progress(), nil
	}
	pending, err := r.RestorePending(ctx, rs.ID)
	if err != nil {
		return events.Progress{}, err
	}
	for _, p := range pending {
		t.Pending[p.Batch] = true
	}
	if t.Ended.IsZero() {
		fanned := map[string]bool{}
		for _, b := range batches {
			phase := PhaseOf(b.Type)
			out, seen := fanned[phase]
			if !seen {
				var err error
				if out, err = r.RestoreFannedOut(ctx, rs.ID, phase); err != nil {
					return events.Progress{}, err
				}
				fanned[phase] = out
			}
			t.Unstarted[b.Type] = !out
		}
	}
	return t.Progress(), nil
}

// restoreGraph reads the graph of a restore's checkpoint and cuts it into its batches;
// an empty graph when the checkpoint or its graph is gone.
func restoreGraph(ctx context.Context, r RestoreReader, checkpoint string) (*graph.Graph, []graph.Batch, error) {
	cp, err := r.Checkpoint(ctx, checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return &graph.Graph{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	g, err := r.Graph(ctx, checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return &graph.Graph{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return g, g.Batches(cp.BatchSize), nil
}

// restoreResource is a resource's view from its record (nil when none) and the failures
// (a failure found here is taken out of failed).
func restoreResource(res graph.Resource, rr *bank.ResourceRecord, failed map[string]string) RestoreResourceView {
	rv := RestoreResourceView{Resource: res, Status: events.StatusRestoring}
	if rr != nil {
		rv.Restored = rr.Data
		if rr.Status != "" {
			rv.Status, rv.Reason = rr.Status, rr.Reason
		}
	}
	if reason, bad := failed[res.Key()]; bad {
		rv.Status, rv.Reason = events.StatusError, reason
		delete(failed, res.Key())
	}
	return rv
}

// resourceOfKey is the resource a key ("Type#id") names, without its name.
func resourceOfKey(key string) graph.Resource {
	typ, id, _ := graph.SplitKey(key)
	return graph.Resource{Type: typ, ID: id}
}

// ListRestores returns a page of restore summaries, newest first.
func ListRestores(ctx context.Context, r RestoreReader, limit int, marker string) ([]RestoreSummary, string, error) {
	ids, next, err := r.ListRestores(ctx, limit, marker)
	if err != nil {
		return nil, "", err
	}
	out := make([]RestoreSummary, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue // racing duplicates of a request may index it twice
		}
		seen[id] = true
		rs, err := r.Restore(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue // indexed, then removed
		}
		if err != nil {
			return nil, "", err
		}
		h, err := r.RestoreHistory(ctx, id)
		if err != nil {
			return nil, "", fmt.Errorf("status of restore %s: %w", id, err)
		}
		s := RestoreSummary{ID: id, Checkpoint: rs.Checkpoint, CreatedAt: rs.CreatedAt, RestoreName: rs.Parameters.RestoreName,
			Namespace: rs.Parameters.Namespace, RequestedBy: rs.RequestedBy}
		if len(h) > 0 {
			s.Status = h[len(h)-1].Status
		}
		out = append(out, s)
	}
	return out, next, nil
}
