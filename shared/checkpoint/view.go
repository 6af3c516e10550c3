package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/graph"
)

// View is a checkpoint as users see it.
type View struct {
	ID        string       `json:"id"`
	Plan      bank.PlanRef `json:"plan"`
	Project   string       `json:"project,omitempty"`
	Provider  string       `json:"provider"`
	Status    string       `json:"status"`
	CreatedAt time.Time    `json:"created_at"`
	Deadline  time.Time    `json:"deadline"`
	// RequestedBy is who asked for the checkpoint (bank.Checkpoint.RequestedBy).
	RequestedBy string              `json:"requested_by,omitempty"`
	History     []bank.StatusChange `json:"history"`
	// Resources lists each resource of the graph with its status (and reason).
	Resources []ResourceView `json:"resources,omitempty"`
	// Problems and Excluded come from the listing: volumes that could not be resolved to
	// Cinder volumes (each fails the checkpoint, and its pod is shown in error with the
	// problem as its reason), and pods left out because they were not protectable.
	Problems []graph.Problem  `json:"problems,omitempty"`
	Excluded []graph.Excluded `json:"excluded,omitempty"`
	// Failed are the failures that are neither a resource of the graph nor a problem of
	// one of its pods (such as a listing that never completed, or a scope with no
	// protectable pod).
	Failed []bank.Failure `json:"failed,omitempty"`
	// Progress is how far the protect has come (or came, once it ended).
	Progress events.Progress `json:"progress"`
}

// ResourceView is one resource of a checkpoint with its status.
type ResourceView struct {
	graph.Resource
	Children []string `json:"children,omitempty"`
	Status   string   `json:"status"`
	Reason   string   `json:"reason,omitempty"`
}

// Summary is a checkpoint in a list: with its scope and who asked for it, by which a
// list can be narrowed to what a caller may see.
type Summary struct {
	ID          string       `json:"id"`
	Plan        bank.PlanRef `json:"plan"`
	Scope       events.Scope `json:"scope"`
	Status      string       `json:"status"`
	CreatedAt   time.Time    `json:"created_at"`
	RequestedBy string       `json:"requested_by,omitempty"`
}

// Reader is what views are read from.
type Reader interface {
	Checkpoint(ctx context.Context, id string) (*bank.Checkpoint, error)
	History(ctx context.Context, id string) ([]bank.StatusChange, error)
	Graph(ctx context.Context, id string) (*graph.Graph, error)
	PendingResources(ctx context.Context, id string) ([]bank.Pending, error)
	FannedOut(ctx context.Context, id, phase string) (bool, error)
	Failures(ctx context.Context, id string) ([]bank.Failure, error)
	ListCheckpoints(ctx context.Context, plan string, limit int, marker string) ([]string, string, error)
}

// Load reads a checkpoint's view. Per-resource status comes from the markers, not from
// the records: a resource of a pending batch (or of a checkpoint protecting that has not
// fanned out yet) is protecting, a failed one is error, the rest is available. Progress
// is counted from the same markers.
func Load(ctx context.Context, r Reader, id string) (*View, error) {
	return LoadAt(ctx, r, id, time.Now())
}

// LoadAt is Load, with the progress of a protect still running taken at now.
func LoadAt(ctx context.Context, r Reader, id string, now time.Time) (*View, error) {
	cp, err := r.Checkpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &View{ID: cp.ID, Plan: cp.Plan, Project: cp.Project, Provider: cp.Provider, CreatedAt: cp.CreatedAt, Deadline: cp.Deadline,
		RequestedBy: cp.RequestedBy}
	if v.History, err = r.History(ctx, id); err != nil {
		return nil, err
	}
	if n := len(v.History); n > 0 {
		v.Status = v.History[n-1].Status
	}
	g, err := r.Graph(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		g = &graph.Graph{} // still listing
	} else if err != nil {
		return nil, err
	}
	v.Problems, v.Excluded = g.Problems, g.Excluded
	pending, err := r.PendingResources(ctx, id)
	if err != nil {
		return nil, err
	}
	failures, err := r.Failures(ctx, id)
	if err != nil {
		return nil, err
	}
	// Between the graph and the fan-out no marker exists yet: nothing is done.
	unstarted := map[string]bool{}
	if v.Status == events.StatusProtecting && len(g.Nodes) > 0 {
		fanned, err := r.FannedOut(ctx, id, "")
		if err != nil {
			return nil, err
		}
		if !fanned {
			for _, n := range g.Nodes {
				unstarted[n.Type] = true
			}
		}
	}
	pendingBatch := make(map[string]bool, len(pending))
	for _, p := range pending {
		pendingBatch[p.Batch] = true
	}
	batches := g.Batches(cp.BatchSize)
	isPending := map[string]bool{}
	for _, b := range batches {
		if pendingBatch[b.Name] || unstarted[b.Type] {
			for _, r := range b.Resources {
				isPending[r.Key()] = true
			}
		}
	}
	failed := make(map[string]string, len(failures))
	isFailed := make(map[string]bool, len(failures))
	for _, f := range failures {
		failed[f.Key] = f.Reason
		isFailed[f.Key] = true
	}
	v.Progress = Tally{Batches: batches, Problems: g.Problems, Pending: pendingBatch, Unstarted: unstarted, Failed: isFailed,
		Started: cp.CreatedAt, Ended: endOf(v.History, events.StatusProtecting), Now: now}.Progress()
	problems := map[string][]string{} // pod name -> the failure keys of its problems
	for _, p := range g.Problems {
		problems[p.Pod] = append(problems[p.Pod], p.Key())
	}
	for _, n := range g.Nodes {
		rv := ResourceView{Resource: n.Resource, Children: n.Children, Status: resourceStatus(v.Status)}
		switch reason, bad := failed[n.Key()]; {
		case bad:
			rv.Status, rv.Reason = events.StatusError, reason
			delete(failed, n.Key())
		case isPending[n.Key()]:
			rv.Status = events.StatusProtecting
		}
		if n.Type == graph.PodType {
			rv = withProblems(rv, problems[n.Name], failed)
		}
		v.Resources = append(v.Resources, rv)
	}
	for _, f := range failures {
		if _, left := failed[f.Key]; left {
			v.Failed = append(v.Failed, f)
		}
	}
	return v, nil
}

// endOf is when an operation left its running status: the time of the first status
// after it; zero while it runs.
func endOf(h []bank.StatusChange, running string) time.Time {
	for _, c := range h {
		if c.Status != running {
			return c.At
		}
	}
	return time.Time{}
}

// withProblems shows a pod whose problems failed the checkpoint in error, with their
// reasons; those failures are then the pod's, and leave failed.
func withProblems(rv ResourceView, keys []string, failed map[string]string) ResourceView {
	var reasons []string
	if rv.Status == events.StatusError && rv.Reason != "" {
		reasons = append(reasons, rv.Reason)
	}
	for _, k := range keys {
		if reason, ok := failed[k]; ok {
			reasons = append(reasons, reason)
			delete(failed, k)
		}
	}
	if len(reasons) > 0 {
		rv.Status, rv.Reason = events.StatusError, strings.Join(reasons, "; ")
	}
	return rv
}

// resourceStatus is the status of a finished resource under a checkpoint status.
func resourceStatus(checkpoint string) string {
	switch checkpoint {
	case events.StatusDeleting, events.StatusDeleted:
		return checkpoint
	case events.StatusErrorDeleting:
		return events.StatusDeleting
	default:
		return events.StatusAvailable
	}
}

// List returns a page of checkpoint summaries, newest first.
func List(ctx context.Context, r Reader, plan string, limit int, marker string) ([]Summary, string, error) {
	ids, next, err := r.ListCheckpoints(ctx, plan, limit, marker)
	if err != nil {
		return nil, "", err
	}
	out := make([]Summary, 0, len(ids))
	for _, id := range ids {
		cp, err := r.Checkpoint(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			continue // indexed, then deleted
		}
		if err != nil {
			return nil, "", err
		}
		h, err := r.History(ctx, id)
		if err != nil {
			return nil, "", fmt.Errorf("status of checkpoint %s: %w", id, err)
		}
		s := Summary{ID: id, Plan: cp.Plan, Scope: cp.Scope, CreatedAt: cp.CreatedAt, RequestedBy: cp.RequestedBy}
		if len(h) > 0 {
			s.Status = h[len(h)-1].Status
		}
		out = append(out, s)
	}
	return out, next, nil
}

// RecordReader reads what steps saved.
type RecordReader interface {
	Checkpoint(ctx context.Context, id string) (*bank.Checkpoint, error)
	Graph(ctx context.Context, id string) (*graph.Graph, error)
	Record(ctx context.Context, id, batch string) (*bank.Record, error)
}

// Saved returns what a checkpoint saved for one resource, found through its batch.
func Saved(ctx context.Context, r RecordReader, id, key string) (*bank.ResourceRecord, error) {
	rr, _, err := saved(ctx, r, id, key)
	return rr, err
}

// SavedPod reads and opens what a checkpoint saved of a pod (key is its resource key).
func SavedPod(ctx context.Context, r RecordReader, o Opener, id, key string) (*PodInfo, error) {
	rr, batch, err := saved(ctx, r, id, key)
	if err != nil {
		return nil, err
	}
	if rr.Status != events.StatusAvailable {
		return nil, fmt.Errorf("%s was not saved in checkpoint %s (status %q)", key, id, rr.Status)
	}
	return OpenPodInfo(o, id, batch, key, rr.Data)
}

// saved is a resource's record and the batch it is in.
func saved(ctx context.Context, r RecordReader, id, key string) (*bank.ResourceRecord, string, error) {
	cp, err := r.Checkpoint(ctx, id)
	if err != nil {
		return nil, "", err
	}
	g, err := r.Graph(ctx, id)
	if err != nil {
		return nil, "", err
	}
	batch, ok := graph.BatchOf(g.Batches(cp.BatchSize), key)
	if !ok {
		return nil, "", fmt.Errorf("%s is not in checkpoint %s: %w", key, id, bank.ErrNotFound)
	}
	rec, err := r.Record(ctx, id, batch)
	if err != nil {
		return nil, "", err
	}
	rr, ok := rec.Resources[key]
	if !ok {
		return nil, "", fmt.Errorf("%s has no record in batch %s of checkpoint %s: %w", key, batch, id, bank.ErrNotFound)
	}
	return &rr, batch, nil
}
