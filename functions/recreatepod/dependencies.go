package recreatepod

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/step"
)

// The ConfigMaps, Secrets and ServiceAccounts that pods reference are restored before
// the pods, in batches of their own: each into the target namespace under its own name,
// labelled with the restore. An object of that name already there stands for the saved
// one when this restore created it from the same saved object, or when it holds the same
// content; one with other content is kept as it is (existing_resources skip, the default:
// the resource is available and its reason says so) or fails the resource
// (existing_resources fail). Nothing existing is ever updated or overwritten.

// object is the work on one ConfigMap, Secret or ServiceAccount of a batch.
type object struct {
	res graph.Resource
	// want is what restores it; zero when it failed before anything was tried.
	want checkpoint.ObjectInfo
	out  checkpoint.RestoredObject
	// status is available or error, with reason; "" until settled.
	status, reason string
}

func (o *object) fail(reason string) { o.status, o.reason = events.StatusError, reason }

// ref is the restored object's "<Kind> namespace/name", in reasons.
func (o *object) ref() string { return o.out.Kind + " " + o.out.Namespace + "/" + o.out.Name }

// objects restores the ConfigMaps, Secrets or ServiceAccounts of a job's batch; each is
// settled by one request (there is nothing to wait for).
func (s *Step) objects(ctx context.Context, j *step.Job) (map[string]bank.ResourceRecord, bool, error) {
	objs := make([]*object, len(j.Batch.Resources))
	for i, r := range j.Batch.Resources {
		objs[i] = planObject(j, r, s.keys)
	}
	past := j.PastDeadline(s.now())
	if !past {
		if err := s.objectNamespaces(ctx, j.Restore.ID, j.Restore.Parameters.CreateNamespace, objs); err != nil {
			return nil, false, err
		}
	}
	policy := j.Restore.Parameters.ExistingResources
	err := batch.Each(ctx, objs, workers, func(ctx context.Context, o *object) error {
		if o.status != "" {
			return nil
		}
		return s.restoreObject(ctx, j.Restore.ID, policy, past, o)
	})
	if err != nil {
		return nil, false, err
	}
	out := make(map[string]bank.ResourceRecord, len(objs))
	for _, o := range objs {
		data, err := json.Marshal(o.out)
		if err != nil {
			return nil, false, fmt.Errorf("encode restored %s: %w", o.ref(), err)
		}
		out[o.res.Key()] = bank.ResourceRecord{Status: o.status, Reason: o.reason, Data: data}
	}
	return out, true, nil
}

// planObject decides where object r goes and builds it from the checkpoint's record;
// what cannot be restored fails before anything is created.
func planObject(j *step.Job, r graph.Resource, keys checkpoint.Opener) *object {
	ns, name, _ := graph.SplitPodName(r.Name)
	o := &object{res: r, out: checkpoint.RestoredObject{Kind: graph.Kind(r.Type), Original: ns + "/" + name, Namespace: ns, Name: name}}
	if target := j.Restore.Parameters.Namespace; target != "" {
		o.out.Namespace = target
	}
	cp := j.Checkpoint.ID
	rr, ok := j.Saved.Resources[r.Key()]
	switch {
	case !ok:
		o.fail(fmt.Sprintf("checkpoint %s has no saved definition of %s %s", cp, o.out.Kind, r.Name))
		return o
	case rr.Status != events.StatusAvailable:
		reason := fmt.Sprintf("%s %s was not saved in checkpoint %s (status %q)", o.out.Kind, r.Name, cp, rr.Status)
		if rr.Reason != "" {
			reason += ": " + rr.Reason
		}
		o.fail(reason)
		return o
	}
	info, err := checkpoint.OpenObjectInfo(keys, cp, j.Batch.Name, r.Key(), rr.Data)
	if err == nil && info.Kind() != o.out.Kind {
		err = fmt.Errorf("it holds a %q, not a %s", info.Kind(), o.out.Kind)
	}
	if err != nil {
		o.fail(fmt.Sprintf("the saved definition of %s %s in checkpoint %s cannot be read: %v", o.out.Kind, r.Name, cp, err))
		return o
	}
	if o.want, err = kube.RestoredObject(info, o.out.Namespace, j.Restore.ID); err != nil {
		o.fail(fmt.Sprintf("%s %s cannot be restored: %v", o.out.Kind, r.Name, err))
	}
	return o
}

// objectNamespaces makes sure the target namespaces of the objects exist, as the pods'
// (the pods come later, into the same namespaces).
func (s *Step) objectNamespaces(ctx context.Context, restoreID string, create bool, objs []*object) error {
	targets := map[string][]*object{}
	for _, o := range objs {
		if o.status == "" {
			targets[o.out.Namespace] = append(targets[o.out.Namespace], o)
		}
	}
	for ns, os := range targets {
		reason, _, err := s.namespace(ctx, restoreID, ns, create)
		if err != nil {
			return err
		}
		for _, o := range os {
			o.failIf(reason)
		}
	}
	return nil
}

func (o *object) failIf(reason string) {
	if reason != "" {
		o.fail(reason)
	}
}

// restoreObject creates o's object, or settles it from the object of that name the
// target namespace holds. Past the restore's deadline nothing is created: the object is
// only looked up.
func (s *Step) restoreObject(ctx context.Context, restoreID, policy string, past bool, o *object) error {
	api := s.objectAPI(o.out.Namespace, o.want)
	if !past {
		err := api.create(ctx)
		switch {
		case err == nil:
			logging.FromContext(ctx).Infow("created "+strings.ToLower(o.out.Kind), zap.String("name", o.out.Namespace+"/"+o.out.Name), zap.String("restore", restoreID))
			o.out.Outcome, o.status = checkpoint.ObjectCreated, events.StatusAvailable
			return nil
		case apierrors.IsAlreadyExists(err):
		case refused(err):
			o.fail(fmt.Sprintf("create %s: %v", o.ref(), err))
			return nil
		default:
			return fmt.Errorf("create %s: %w", o.ref(), err)
		}
	}
	existing, err := api.get(ctx)
	switch {
	case past && apierrors.IsNotFound(err):
		o.fail(fmt.Sprintf("the restore's deadline passed before %s was created", o.ref()))
		return nil
	case err != nil:
		// Deleted since, or unreachable: the next request tries again.
		return fmt.Errorf("get existing %s: %w", o.ref(), err)
	}
	o.settleExisting(existing, restoreID, policy)
	return nil
}

// settleExisting settles o from the object of its name that the target namespace holds.
func (o *object) settleExisting(existing checkpoint.ObjectInfo, restoreID, policy string) {
	from := existing.Object().GetAnnotations()[kube.AnnotationRestoredFrom]
	ours := kube.OwnedByRestore(existing.Object(), restoreID) && from == o.want.Object().GetAnnotations()[kube.AnnotationRestoredFrom]
	switch {
	case ours:
		o.out.Outcome, o.status = checkpoint.ObjectCreated, events.StatusAvailable
	case kube.SameContent(existing, o.want):
		o.out.Outcome, o.status = checkpoint.ObjectIdentical, events.StatusAvailable
	case policy == events.ExistingFail:
		o.fail(fmt.Sprintf("%s already exists with other content; it is not overwritten (existing_resources %s)", o.ref(), events.ExistingFail))
	default:
		o.out.Outcome, o.status = checkpoint.ObjectKept, events.StatusAvailable
		o.reason = fmt.Sprintf("%s already exists with other content: the existing one is kept, not overwritten (existing_resources %s)", o.ref(), events.ExistingSkip)
	}
}

// objectAPI creates and reads one object of the kind of want in namespace ns.
type objectAPI struct {
	create func(ctx context.Context) error
	get    func(ctx context.Context) (checkpoint.ObjectInfo, error)
}

func (s *Step) objectAPI(ns string, want checkpoint.ObjectInfo) objectAPI {
	core := s.kube.CoreV1()
	copts, gopts := metav1.CreateOptions{}, metav1.GetOptions{}
	switch {
	case want.ConfigMap != nil:
		api := core.ConfigMaps(ns)
		return objectAPI{
			create: func(ctx context.Context) error { _, err := api.Create(ctx, want.ConfigMap, copts); return err },
			get: func(ctx context.Context) (checkpoint.ObjectInfo, error) {
				c, err := api.Get(ctx, want.ConfigMap.Name, gopts)
				return checkpoint.ObjectInfo{ConfigMap: c}, err
			},
		}
	case want.Secret != nil:
		api := core.Secrets(ns)
		return objectAPI{
			create: func(ctx context.Context) error { _, err := api.Create(ctx, want.Secret, copts); return err },
			get: func(ctx context.Context) (checkpoint.ObjectInfo, error) {
				c, err := api.Get(ctx, want.Secret.Name, gopts)
				return checkpoint.ObjectInfo{Secret: c}, err
			},
		}
	default:
		api := core.ServiceAccounts(ns)
		return objectAPI{
			create: func(ctx context.Context) error { _, err := api.Create(ctx, want.ServiceAccount, copts); return err },
			get: func(ctx context.Context) (checkpoint.ObjectInfo, error) {
				c, err := api.Get(ctx, want.ServiceAccount.Name, gopts)
				return checkpoint.ObjectInfo{ServiceAccount: c}, err
			},
		}
	}
}

// unrestoredObjects says, for a pod about to be recreated, which of the objects it
// references were not restored, and why; "" when every one was.
func unrestoredObjects(deps map[string]bank.ResourceRecord) string {
	var out []string
	for key, rr := range deps {
		if rr.Status == events.StatusAvailable {
			continue
		}
		what := key
		var o checkpoint.RestoredObject
		if json.Unmarshal(rr.Data, &o) == nil && o.Kind != "" {
			what = o.Kind + " " + o.Namespace + "/" + o.Name
		}
		reason := what + " was not restored"
		if rr.Reason != "" {
			reason += ": " + rr.Reason
		}
		out = append(out, reason)
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
