package choreographer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/graph"
)

// A checkpoint says what it holds: it ends available only when everything in its scope
// is in it. Before the fan-out, what the graph shows the checkpoint will not hold is
// recorded as failures, so that the checkpoint ends error (Karbor's status) with each as
// a reason:
//   - each problem of the graph: a claim that is unbound, bound to a persistent volume of
//     another driver or to one that is missing (that pod's data is not all in the
//     checkpoint), or an explicit pod not found;
//   - a scope with no protectable pod (none, or only pods excluded as not Running).
//
// Pods excluded as not protectable (phase Pending, Failed or Unknown) are left out as
// Karbor left them out: listed in checkpoint.finished and the views, not failures.

// scopeKey is the failure key of a scope with no protectable pod.
const scopeKey = "scope"

// finishedListed bounds the failures and the excluded pods one checkpoint.finished
// lists (CloudEvents intermediaries only promise 64 KiB); the view lists them all.
const finishedListed = 100

// recordGaps records, as failures, what the checkpoint of a graph will not hold. Each
// failure is written create-only, with content derived from the graph (the first graph
// stored wins), so a redelivered listing, or a fan-out the tick re-drives, writes the same.
func (s *Step) recordGaps(ctx context.Context, cp *bank.Checkpoint, g *graph.Graph) error {
	err := batch.Each(ctx, g.Problems, s.workers, func(ctx context.Context, p graph.Problem) error {
		return s.bank.Fail(ctx, cp.ID, p.Key(), p.Describe())
	})
	if err != nil {
		return err
	}
	pods, _ := g.Counts()
	if pods == 0 {
		if err := s.bank.Fail(ctx, cp.ID, scopeKey, noProtectablePods(cp.Scope, g.Excluded)); err != nil {
			return err
		}
	}
	if pods == 0 || len(g.Problems) > 0 {
		logging.FromContext(ctx).Warnw("checkpoint will not hold its whole scope: it ends in error", zap.String("checkpoint", cp.ID),
			zap.Int("pods", pods), zap.Int("problems", len(g.Problems)), zap.Int("excluded", len(g.Excluded)))
	}
	return nil
}

// listedAfterEnd takes a listing of a checkpoint that has ended. A checkpoint whose
// stored graph has nothing to protect ended at its listing: a redelivery announces that
// end again (the announcement may be what failed). Any other starts nothing.
func (s *Step) listedAfterEnd(ctx context.Context, cp *bank.Checkpoint, status string) error {
	g, err := s.bank.Graph(ctx, cp.ID)
	if err != nil && !errors.Is(err, bank.ErrNotFound) {
		return err
	}
	if g != nil && len(g.Nodes) == 0 {
		return s.finish(ctx, cp.ID)
	}
	logging.FromContext(ctx).Infow("listing of a checkpoint that ended ignored", zap.String("checkpoint", cp.ID), zap.String("status", status))
	return nil
}

// noProtectablePods is the reason of a scope with no protectable pod.
func noProtectablePods(sc events.Scope, excluded []graph.Excluded) string {
	var where string
	switch {
	case len(sc.Pods) > 0:
		where = "among pods " + strings.Join(sc.Pods, ", ")
	case len(sc.Namespaces) == 1:
		where = "in namespace " + sc.Namespaces[0]
	case len(sc.Namespaces) > 1:
		where = "in namespaces " + strings.Join(sc.Namespaces, ", ")
	default:
		where = "in any namespace"
	}
	if sc.LabelSelector != "" {
		where += " with labels " + sc.LabelSelector
	}
	reason := "no protectable pods " + where
	if len(excluded) == 0 {
		return reason
	}
	const named = 5
	var pods []string
	for _, x := range excluded[:min(len(excluded), named)] {
		pods = append(pods, fmt.Sprintf("%s (%s)", x.Pod, x.Phase))
	}
	if len(excluded) > named {
		pods = append(pods, fmt.Sprintf("and %d more", len(excluded)-named))
	}
	return fmt.Sprintf("%s: %d excluded as not protectable: %s", reason, len(excluded), strings.Join(pods, ", "))
}

// finishedResult is the data of a checkpoint's checkpoint.finished: its failures, named
// after the resource or the pod of a problem, and the pods excluded, each list bounded.
func finishedResult(cp *bank.Checkpoint, status string, g *graph.Graph, failures []bank.Failure) events.CheckpointFinishedResult {
	out := events.CheckpointFinishedResult{Checkpoint: cp.ID, Plan: cp.Plan.ID, Status: status, RequestedBy: cp.RequestedBy}
	names := map[string]string{}
	if g != nil {
		out.Resources = len(g.Nodes)
		if len(failures) > 0 {
			for _, n := range g.Nodes {
				names[n.Key()] = n.Name
			}
			for _, p := range g.Problems {
				names[p.Key()] = p.Pod
			}
		}
		out.Excluded = g.Excluded[:min(len(g.Excluded), finishedListed)]
		out.MoreExcluded = len(g.Excluded) - len(out.Excluded)
	}
	for _, f := range failures[:min(len(failures), finishedListed)] {
		out.Failed = append(out.Failed, events.FailedResource{Key: f.Key, Name: names[f.Key], Reason: f.Reason})
	}
	out.MoreFailed = len(failures) - len(out.Failed)
	return out
}
