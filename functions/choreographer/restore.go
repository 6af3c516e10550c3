package choreographer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/observe"
)

// Phases of a restore: its volumes and, alongside them, the ConfigMaps, Secrets and
// ServiceAccounts its pods reference (its dependencies); then its pods, once both are
// done. Each phase's batches keep the names the checkpoint gave them (volumes-0000...,
// configmaps-0000, secrets-0000, serviceaccounts-0000..., pods-0000...).
const (
	phaseVolumes      = checkpoint.PhaseVolumes
	phaseDependencies = checkpoint.PhaseDependencies
	phasePods         = checkpoint.PhasePods
)

// firstPhases are the batches restored before the pods: volumes and dependencies.
func firstPhases(bs []graph.Batch) []graph.Batch {
	var out []graph.Batch
	for _, b := range bs {
		if b.Type != graph.PodType {
			out = append(out, b)
		}
	}
	return out
}

// RestoreID is the restore a request makes: one per request event.
func RestoreID(e event.Event) string { return function.DerivedID("restore", e.Source(), e.ID()) }

// restore starts a restore: the checkpoint must exist and be available, and the
// parameters must fit it. Nothing is created for a request refused. The restore records
// the request's caller (caller.go).
func (s *Step) restore(ctx context.Context, e event.Event) error {
	by, err := callerOf(e)
	if err != nil {
		return err
	}
	var req events.RestoreRequest
	if err := function.Decode(e, &req); err != nil {
		return err
	}
	id := RestoreID(e)
	var (
		r  *bank.Restore
		cp *bank.Checkpoint
		g  *graph.Graph
	)
	r, err = s.bank.Restore(ctx, id)
	switch {
	case err == nil:
		// A redelivered request: carry on with the restore it started, whatever the
		// checkpoint's status is now.
		cp, g, err = s.restoreSource(ctx, r)
	case errors.Is(err, bank.ErrNotFound):
		var span trace.Span
		ctx, span = s.telemetry.StartOperation(ctx, "podguard.restore", attribute.String("podguard.restore", id), attribute.String("podguard.checkpoint", req.Checkpoint))
		defer span.End()
		r, cp, g, err = s.newRestore(ctx, id, req, by, s.eventTime(e))
		if err == nil {
			s.metrics.OperationStarted(ctx, observe.Restore)
		}
	}
	if err != nil {
		return err
	}
	return s.restoreFirst(ctx, r, cp, g)
}

func (s *Step) newRestore(ctx context.Context, id string, req events.RestoreRequest, by string, at time.Time) (*bank.Restore, *bank.Checkpoint, *graph.Graph, error) {
	cp, err := s.bank.Checkpoint(ctx, req.Checkpoint)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, nil, nil, function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s does not exist", req.Checkpoint))
	}
	if err != nil {
		return nil, nil, nil, err
	}
	status, err := s.bank.Status(ctx, cp.ID)
	if err != nil {
		return nil, nil, nil, err
	}
	if status != events.StatusAvailable {
		return nil, nil, nil, function.Permanent(fmt.Errorf("/checkpoint: checkpoint %s is %s; only an available checkpoint can be restored", cp.ID, status))
	}
	g, err := s.bank.Graph(ctx, cp.ID)
	if err != nil {
		return nil, nil, nil, err
	}
	params, err := restoreParameters(req.Parameters, g)
	if err != nil {
		return nil, nil, nil, function.Permanent(fmt.Errorf("/parameters%w", err))
	}
	if ns, ok := s.protectedTarget(params, g); ok {
		return nil, nil, nil, function.Permanent(fmt.Errorf("/parameters/namespace: a restore never lands in namespace %q (RESTORE_PROTECTED_NAMESPACES)", ns))
	}
	r, err := s.bank.CreateRestore(ctx, bank.Restore{ID: id, Checkpoint: cp.ID, Parameters: params,
		CreatedAt: at, Deadline: at.Add(s.cfg.RestoreTimeout), Trace: s.telemetry.TraceParent(ctx), RequestedBy: by})
	if err != nil {
		return nil, nil, nil, err
	}
	pods, volumes := g.Counts()
	logging.FromContext(ctx).Infow("restore in progress", zap.String("restore", r.ID), zap.String("checkpoint", cp.ID),
		zap.Int("pods", pods), zap.Int("volumes", volumes), zap.String("namespace", params.Namespace), zap.String("requested_by", r.RequestedBy))
	return r, cp, g, nil
}

// protectedTarget is a protected namespace the restore would land in, if any: the
// target namespace, or a pod's own when restoring in place.
func (s *Step) protectedTarget(p events.RestoreParameters, g *graph.Graph) (string, bool) {
	protected := append(slices.Clone(s.cfg.ProtectedNamespaces), s.cfg.Namespace)
	lands := func(ns string) bool { return ns != "" && slices.Contains(protected, ns) }
	if p.Namespace != "" {
		return p.Namespace, lands(p.Namespace)
	}
	for _, ns := range g.PodNamespaces() {
		if lands(ns) {
			return ns, true
		}
	}
	return "", false
}

// restoreParameters checks the parameters against the checkpoint's pods and resolves
// restore_name: as in Karbor it names the restored pod, when the checkpoint holds one.
// existing_resources is kept as given (none means skip).
// The error starts with the JSON pointer of what is wrong.
func restoreParameters(p events.RestoreParameters, g *graph.Graph) (events.RestoreParameters, error) {
	switch p.ExistingResources {
	case "", events.ExistingSkip, events.ExistingFail:
	default:
		return p, fmt.Errorf("/existing_resources: %q is neither %s nor %s", p.ExistingResources, events.ExistingSkip, events.ExistingFail)
	}
	if p.Namespace != "" {
		if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
			return p, fmt.Errorf("/namespace: %q is not a namespace name: %s", p.Namespace, strings.Join(errs, "; "))
		}
	}
	pods := map[string]string{} // "namespace:name" -> original namespace
	for _, n := range g.Nodes {
		if n.Type == graph.PodType {
			pods[n.Name] = n.ExtraInfo[graph.InfoNamespace]
		}
	}
	names := maps.Clone(p.Names)
	if p.RestoreName != "" && len(pods) == 1 {
		for pod := range pods {
			if _, mapped := names[pod]; !mapped {
				if names == nil {
					names = map[string]string{}
				}
				names[pod] = p.RestoreName
			}
		}
	}
	targets := map[string]string{} // "target namespace/name" -> original pod
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, pod := range keys {
		name := names[pod]
		ns, ok := pods[pod]
		if !ok {
			return p, fmt.Errorf("/names/%s: the checkpoint holds no pod %s", pod, pod)
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return p, fmt.Errorf("/names/%s: %q is not a pod name: %s", pod, name, strings.Join(errs, "; "))
		}
		if p.Namespace != "" {
			ns = p.Namespace
		}
		if other, clash := targets[ns+"/"+name]; clash {
			return p, fmt.Errorf("/names/%s: pods %s and %s would both be restored as %s/%s", pod, other, pod, ns, name)
		}
		targets[ns+"/"+name] = pod
	}
	p.Names = names
	return p, nil
}

// restoreSource reads the checkpoint a restore restores, and its graph.
func (s *Step) restoreSource(ctx context.Context, r *bank.Restore) (*bank.Checkpoint, *graph.Graph, error) {
	cp, err := s.bank.Checkpoint(ctx, r.Checkpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s of restore %s: %w", r.Checkpoint, r.ID, err)
	}
	g, err := s.bank.Graph(ctx, r.Checkpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("graph of checkpoint %s of restore %s: %w", r.Checkpoint, r.ID, err)
	}
	return cp, g, nil
}

// restoreFirst fans out the phases that come before the pods: the volumes, and alongside
// them the objects the pods reference. Their pending markers are created together, then
// the dependencies' fan-out is recorded, then the volumes'; the requests go once both
// are. A redelivery re-sends only the requests that waited long enough to be lost.
func (s *Step) restoreFirst(ctx context.Context, r *bank.Restore, cp *bank.Checkpoint, g *graph.Graph) error {
	batches := firstPhases(g.Batches(cp.BatchSize))
	done, err := s.restores.FannedOut(ctx, r.ID, phaseVolumes)
	if err != nil {
		return err
	}
	if done {
		pending, err := s.restores.PendingResources(ctx, r.ID)
		if err != nil {
			return err
		}
		resend := pendingBatches(batches, pending, s.stale(s.now()))
		return s.resend(ctx, events.FlowRestore, s.restores, r.ID, resend, func() error { return s.sendRestore(ctx, r, cp, resend, "") })
	}
	if len(batches) > 0 {
		if err := s.restores.AddPending(ctx, r.ID, names(batches)); err != nil {
			return err
		}
	}
	// The volumes' marker is written last: once it is there, both phases are out.
	if err := s.restores.MarkFannedOut(ctx, r.ID, phaseDependencies); err != nil && !errors.Is(err, bank.ErrExists) {
		return err
	}
	if err := s.restores.MarkFannedOut(ctx, r.ID, phaseVolumes); errors.Is(err, bank.ErrExists) {
		return nil // a duplicate fanned out first
	} else if err != nil {
		return err
	}
	if len(batches) == 0 {
		return s.restorePods(ctx, r, loaded(cp, g))
	}
	return s.sendRestore(ctx, r, cp, batches, "")
}

// firstRemaining reports whether a batch of the phases before the pods is pending,
// asking first about the prefix of the batch whose result came (the likeliest).
func (s *Step) firstRemaining(ctx context.Context, id, batch string) (bool, error) {
	var prefixes []string
	for _, typ := range append([]string{graph.VolumeType}, graph.DependencyTypes()...) {
		p, _ := graph.BatchPrefix(typ)
		if strings.HasPrefix(batch, p) {
			prefixes = append([]string{p}, prefixes...)
		} else {
			prefixes = append(prefixes, p)
		}
	}
	for _, p := range prefixes {
		if more, err := s.restores.Remaining(ctx, id, p); err != nil || more {
			return more, err
		}
	}
	return false, nil
}

// restorePods fans out the pod phase once no batch of the volumes and dependencies is
// pending, or, when it was fanned out, finishes the restore once nothing is pending.
// recreate-pod reads the restored volumes and objects of its pods from their records.
// source reads the checkpoint and its graph, only when the phase is fanned out.
func (s *Step) restorePods(ctx context.Context, r *bank.Restore, source func() (*bank.Checkpoint, *graph.Graph, error)) error {
	done, err := s.restores.FannedOut(ctx, r.ID, phasePods)
	if err != nil {
		return err
	}
	if done {
		more, err := s.restores.Remaining(ctx, r.ID, "")
		if err != nil || more {
			return err
		}
		return s.finishRestore(ctx, r)
	}
	// A volume result that comes after the restore ended (failed past its deadline) must
	// not start its pods.
	if status, err := s.restores.Status(ctx, r.ID); err != nil {
		return err
	} else if status != events.RestoreInProgress {
		logging.FromContext(ctx).Infow("pod phase of a restore that ended not started", zap.String("restore", r.ID), zap.String("status", status))
		return nil
	}
	cp, g, err := source()
	if err != nil {
		return err
	}
	batches := ofType(g.Batches(cp.BatchSize), graph.PodType)
	if len(batches) > 0 {
		if err := s.restores.AddPending(ctx, r.ID, names(batches)); err != nil {
			return err
		}
	}
	if err := s.restores.MarkFannedOut(ctx, r.ID, phasePods); errors.Is(err, bank.ErrExists) {
		return nil
	} else if err != nil {
		return err
	}
	if len(batches) == 0 {
		return s.finishRestore(ctx, r)
	}
	logging.FromContext(ctx).Infow("restoring pods", zap.String("restore", r.ID), zap.Int("batches", len(batches)))
	return s.sendRestore(ctx, r, cp, batches, "")
}

// sendRestore sends the request of each batch: volume.restore for volumes, pod.recreate
// for pods and for the objects they reference. The steps read what they restore from
// the bank (recreate-pod reads the restored volumes from the volume records), so a
// request only names the batch.
func (s *Step) sendRestore(ctx context.Context, r *bank.Restore, cp *bank.Checkpoint, batches []graph.Batch, attempt string) error {
	return s.sendBatches(ctx, batches, func(ctx context.Context, b graph.Batch) error {
		req := events.RestoreStepRequest{Restore: r.ID, Checkpoint: cp.ID, Batch: b.Name, Resources: b.Resources,
			Parameters: r.Parameters, Deadline: r.Deadline}
		typ := requestType(events.FlowRestore, b.Type)
		return s.emit(ctx, events.FlowRestore, r.ID, typ, function.DerivedID(events.FlowRestore, r.ID, b.Name, typ, attempt), req)
	})
}

// restoreResult records a step's results; the last batch of the volumes and
// dependencies starts the pod phase, the last pod batch ends the restore.
func (s *Step) restoreResult(ctx context.Context, e event.Event) error {
	var res events.RestoreStepResult
	if err := function.Decode(e, &res); err != nil {
		return err
	}
	r, err := s.bank.Restore(ctx, res.Restore)
	if errors.Is(err, bank.ErrNotFound) {
		return function.Permanent(fmt.Errorf("/restore: restore %s does not exist", res.Restore))
	}
	if err != nil {
		return err
	}
	v, err := s.accept(ctx, s.restores, claim{kind: "restore", id: r.ID, batch: res.Batch,
		running: events.RestoreInProgress, ok: events.StatusAvailable})
	switch {
	case err != nil || v == late:
		return err
	case v == ended:
		return s.finishRestore(ctx, r)
	}
	s.restoreProgressed(ctx, r)
	more, err := s.restores.Remaining(ctx, r.ID, "")
	if err != nil {
		return err
	}
	if podsPrefix, _ := graph.BatchPrefix(graph.PodType); strings.HasPrefix(res.Batch, podsPrefix) {
		// The pod phase starts once every batch before it is done: nothing pending is the end.
		if more {
			return nil
		}
		return s.finishRestore(ctx, r)
	}
	if more {
		if more, err = s.firstRemaining(ctx, r.ID, res.Batch); err != nil || more {
			return err
		}
	}
	return s.restorePods(ctx, r, func() (*bank.Checkpoint, *graph.Graph, error) { return s.restoreSource(ctx, r) })
}

// finishRestore records the outcome and announces it; a redelivered last result
// announces the same outcome with the same event id.
func (s *Step) finishRestore(ctx context.Context, r *bank.Restore) error {
	end, err := s.restores.End(ctx, r.ID, events.RestoreInProgress, events.RestoreSuccess, events.RestoreFail)
	if err != nil {
		return err
	}
	status, failures := end.Status, end.Failures
	if end.First {
		_, g, err := s.restoreSource(ctx, r)
		if err != nil && !errors.Is(err, bank.ErrNotFound) {
			return err
		}
		s.finished(ctx, observe.Restore, end, r.CreatedAt, g, events.StatusAvailable)
	}
	s.gate.forget(r.ID)
	out := events.RestoreFinishedResult{Restore: r.ID, Checkpoint: r.Checkpoint, Status: status, RequestedBy: r.RequestedBy}
	for _, f := range failures {
		out.Failed = append(out.Failed, events.FailedResource{Key: f.Key, Reason: f.Reason})
	}
	logging.FromContext(ctx).Infow("restore finished", zap.String("restore", r.ID), zap.String("status", status), zap.Int("failed", len(failures)))
	if err := s.emit(ctx, events.FlowRestore, r.ID, events.RestoreFinished, function.DerivedID(events.FlowRestore, r.ID, "finished"), out); err != nil {
		return err
	}
	return s.retainAfterRestore(ctx, r)
}

// checkRestore is the tick of a restore: it starts a phase that a lost event did not
// start, re-sends requests that waited longer than RedriveAfter (the progress check of a
// volume or a pod is its request, sent again, which the steps answer from what exists),
// and past the deadline fails what is unfinished. The steps are given the chance to
// record what they created first: the restore is cut short only 2×RedriveAfter after its
// deadline.
func (s *Step) checkRestore(ctx context.Context, id string) error {
	r, err := s.bank.Restore(ctx, id)
	if err != nil {
		return err
	}
	ctx, span := s.telemetry.Resume(ctx, r.Trace, "podguard.check")
	defer span.End()
	status, err := s.restores.Status(ctx, id)
	if err != nil {
		return err
	}
	if status != events.RestoreInProgress {
		return s.finishRestore(ctx, r) // leaves the active index
	}
	now := s.now()
	cp, g, err := s.restoreSource(ctx, r)
	if errors.Is(err, bank.ErrNotFound) {
		if err := s.restores.Fail(ctx, id, "checkpoint", fmt.Sprintf("checkpoint %s was deleted during the restore", r.Checkpoint)); err != nil {
			return err
		}
		return s.finishRestore(ctx, r)
	}
	if err != nil {
		return err
	}
	batches := g.Batches(cp.BatchSize)
	if now.After(r.Deadline.Add(2 * s.cfg.RedriveAfter)) {
		return s.failRestore(ctx, r, batches)
	}
	// The volumes' fan-out is recorded after the dependencies': both are out once it is.
	firstOut, err := s.restores.FannedOut(ctx, id, phaseVolumes)
	if err != nil {
		return err
	}
	if !firstOut {
		if now.Sub(r.CreatedAt) > s.cfg.RedriveAfter {
			return s.restoreFirst(ctx, r, cp, g)
		}
		return nil
	}
	pending, err := s.restores.PendingResources(ctx, id)
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		return s.restorePods(ctx, r, loaded(cp, g))
	}
	resend := pendingBatches(batches, pending, s.stale(now))
	if len(resend) > 0 {
		logging.FromContext(ctx).Infow("re-driving pending work", zap.String("restore", id), zap.Int("batches", len(resend)))
	}
	return s.resend(ctx, events.FlowRestore, s.restores, id, resend, func() error { return s.sendRestore(ctx, r, cp, resend, now.UTC().Format(time.RFC3339)) })
}

// failRestore fails every resource not finished past the deadline, those of a phase never
// started included (a resource listed twice fails once: failures are create-only), and
// ends the restore.
func (s *Step) failRestore(ctx context.Context, r *bank.Restore, batches []graph.Batch) error {
	pending, err := s.restores.PendingResources(ctx, r.ID)
	if err != nil {
		return err
	}
	unfinished := pendingBatches(batches, pending, all)
	firstOut, err := s.restores.FannedOut(ctx, r.ID, phaseVolumes)
	if err != nil {
		return err
	}
	if !firstOut {
		unfinished = append(unfinished, firstPhases(batches)...)
	}
	podsOut, err := s.restores.FannedOut(ctx, r.ID, phasePods)
	if err != nil {
		return err
	}
	if !podsOut {
		unfinished = append(unfinished, ofType(batches, graph.PodType)...)
	}
	reason := fmt.Sprintf("not restored by the restore's deadline %s", r.Deadline.UTC().Format(time.RFC3339))
	if err := failUnfinished(ctx, s.restores, r.ID, unfinished, pending, reason); err != nil {
		return err
	}
	return s.finishRestore(ctx, r)
}

// loaded is the source of a restore already read.
func loaded(cp *bank.Checkpoint, g *graph.Graph) func() (*bank.Checkpoint, *graph.Graph, error) {
	return func() (*bank.Checkpoint, *graph.Graph, error) { return cp, g, nil }
}

func names(bs []graph.Batch) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}
