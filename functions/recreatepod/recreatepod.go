// Package recreatepod is the recreate-pod function: for each pod of a batch it reads the
// pod's saved definition from the checkpoint and recreates it on the restored Cinder
// volumes: a persistent volume per restored volume, pre-bound to a new claim, then the
// pod using the new claims, all labelled with the restore. Before the pods, it restores
// the ConfigMaps, Secrets and ServiceAccounts they reference, in batches of their own
// (dependencies.go). It then watches the new pods
// for a short while (POD_WAIT) and answers once every pod of the batch is Running, or has
// failed with the reason; while any pod is still starting it answers nothing (202), and
// the same request, sent again later, checks the pods instead of creating them twice.
//
// An object that already exists is reused only when this restore created it from the
// same saved object; anything else is a clash that fails the pod, and is never updated
// or overwritten.
//
// The saved definitions are sealed (package seal); recreate-pod opens each with the key
// its envelope names. One that does not open (a key the keyring no longer holds, an
// envelope altered or moved from another resource, a definition saved in clear) fails
// its pod with the reason, and nothing is created for it.
//
//	s, err := recreatepod.New(ctx, &cfg)
//	reply, err := s.Handle(ctx, podRecreateEvent) // nil, nil while pods are starting
package recreatepod

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/seal"
	"github.com/podguard/podguard/shared/step"
)

// Accepts are the event types recreate-pod handles.
var Accepts = []string{events.PodRecreate}

// DefaultNamePrefix starts the name of a restored pod that the restore does not name
// (Karbor's "<prefix>-restored-pod-<uuid>").
const DefaultNamePrefix = "podguard-restored-pod-"

// Config is recreate-pod's configuration from the environment.
type Config struct {
	Kube      kube.Config
	Bank      bank.Config
	OpenStack openstack.Config
	// PodWait bounds how long one request watches the new pods start before it answers
	// what is settled; 0 only looks at them once.
	PodWait time.Duration `envconfig:"POD_WAIT" default:"10s"`
	// Keys is the bank's keyring (BANK_KEYS_DIR); the step does not start without it.
	Keys seal.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error {
	if c.PodWait < 0 {
		return fmt.Errorf("POD_WAIT=%s: must not be negative", c.PodWait)
	}
	if err := c.Keys.Validate(); err != nil {
		return err
	}
	return c.Bank.Validate()
}

// Step is the recreate-pod step.
type Step struct {
	kube    kubernetes.Interface
	runner  *step.Runner
	keys    checkpoint.Opener
	podWait time.Duration
	now     func() time.Time
}

// New builds the step from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	keys, err := cfg.Keys.Load()
	if err != nil {
		return nil, err
	}
	cs, err := kube.NewClientset(ctx, cfg.Kube)
	if err != nil {
		return nil, err
	}
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	return NewStep(cs, b, keys, cfg.PodWait, time.Now), nil
}

// NewStep builds the step from its dependencies: the cluster, the bank (where the pods
// were saved, and the restore is recorded), the keyring the saved definitions open with,
// how long a request watches the new pods, and the clock that deadlines are compared
// with.
func NewStep(cs kubernetes.Interface, b *bank.Bank, keys checkpoint.Opener, podWait time.Duration, now func() time.Time) *Step {
	return &Step{kube: cs, runner: step.New(b, now), keys: keys, podWait: podWait, now: now}
}

// workers bounds the pods of a batch recreated at once. Each mostly waits for the PV
// controller (see waits), so the whole of a default batch goes at once; the client's rate
// limit (KUBE_API_QPS) bounds the requests.
const workers = 64

// kind: recreate-pod takes batches of pods of a restore in progress, and, before them,
// batches of the ConfigMaps, Secrets and ServiceAccounts they reference.
var kind = step.Kind{Step: events.FnRecreatePod, Types: append([]string{graph.PodType}, graph.DependencyTypes()...), Reply: events.PodRecreated}

// Handle recreates or checks the pods of a batch; it answers once every pod of the batch
// is Running or failed, and with nothing (202) while any is still starting. Where each
// pod goes (namespace, name) is the restore's recorded parameters; the volumes it mounts
// are those the restore-volume records name. A batch of the objects pods reference is
// restored by objects (dependencies.go), and answered at once.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return s.runner.Restore(ctx, e, kind, func(ctx context.Context, j *step.Job) (map[string]bank.ResourceRecord, bool, error) {
		if j.Batch.Type == graph.PodType {
			return s.batch(ctx, j)
		}
		return s.objects(ctx, j)
	})
}

// batch recreates, or checks, the pods of a job.
func (s *Step) batch(ctx context.Context, j *step.Job) (map[string]bank.ResourceRecord, bool, error) {
	pods := make([]*pod, len(j.Batch.Resources))
	for i, r := range j.Batch.Resources {
		pods[i] = plan(j, r, s.keys)
	}
	restore := j.Restore.ID
	// Waiting, for volumes to be seen and pods to start, ends at waitUntil.
	waitUntil := time.Now().Add(s.podWait)
	var w *waits
	if !j.PastDeadline(s.now()) {
		if err := s.namespaces(ctx, restore, j.Restore.Parameters.CreateNamespace, pods); err != nil {
			return nil, false, err
		}
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		w = s.follow(wctx, restore, pods)
	}
	err := batch.Each(ctx, pods, workers, func(ctx context.Context, p *pod) error {
		return s.create(ctx, restore, p, w, waitUntil)
	})
	if err != nil {
		return nil, false, err
	}
	if err := s.wait(ctx, j, pods, waitUntil); err != nil {
		return nil, false, err
	}
	out := make(map[string]bank.ResourceRecord, len(pods))
	for _, p := range pods {
		if p.status == "" {
			return nil, false, nil // still starting: the next request checks again
		}
		data, err := json.Marshal(p.out)
		if err != nil {
			return nil, false, fmt.Errorf("encode restored pod %s: %w", p.res.Name, err)
		}
		out[p.res.Key()] = bank.ResourceRecord{Status: p.status, Reason: p.reason, Data: data}
	}
	return out, true, nil
}

// pod is the work on one pod of the batch.
type pod struct {
	res graph.Resource
	// objs are the objects to create; nil when the pod failed before any was created.
	objs *kube.RestoredObjects
	// out is what the restore records: where the pod went and what was created for it.
	out checkpoint.RestoredPod
	// current is the restored pod as last seen; nil when not created (yet).
	current *corev1.Pod
	// status is "" while the pod is starting, then available or error with reason.
	status, reason string
	// admitted: the target namespace enforces a Pod Security level, so the pod is tried
	// (a server-side dry run) before anything of it is created.
	admitted bool
}

func (p *pod) fail(reason string) {
	p.status, p.reason = events.StatusError, reason
}

// failIf fails p when there is a reason.
func (p *pod) failIf(reason string) {
	if reason != "" {
		p.fail(reason)
	}
}

// ref is the restored pod's "namespace/name".
func (p *pod) ref() string { return p.out.Namespace + "/" + p.out.Name }

// plan decides where pod r goes and builds its objects from the saved definition, opened
// with keys; what cannot be restored fails the pod before anything is created.
func plan(j *step.Job, r graph.Resource, keys checkpoint.Opener) *pod {
	restore, cp, params := j.Restore.ID, j.Checkpoint.ID, j.Restore.Parameters
	ns, name, _ := graph.SplitPodName(r.Name)
	p := &pod{res: r, out: checkpoint.RestoredPod{Original: ns + "/" + name, Namespace: ns, Name: params.Names[r.Name]}}
	if p.out.Name == "" {
		p.out.Name = DefaultName(restore, r.Key())
	}
	if params.Namespace != "" {
		p.out.Namespace = params.Namespace
	}
	rr, ok := j.Saved.Resources[r.Key()]
	switch {
	case !ok:
		p.fail(fmt.Sprintf("checkpoint %s has no saved definition of pod %s", cp, r.Name))
		return p
	case rr.Status != events.StatusAvailable:
		reason := fmt.Sprintf("pod %s was not saved in checkpoint %s (status %q)", r.Name, cp, rr.Status)
		if rr.Reason != "" {
			reason += ": " + rr.Reason
		}
		p.fail(reason)
		return p
	}
	info, err := checkpoint.OpenPodInfo(keys, cp, j.Batch.Name, r.Key(), rr.Data)
	if err != nil {
		p.fail(fmt.Sprintf("the saved definition of pod %s in checkpoint %s cannot be read: %v", r.Name, cp, err))
		return p
	}
	if params.Namespace == "" && info.Pod.Namespace != "" {
		p.out.Namespace = info.Pod.Namespace
	}
	volumes := map[string]string{}
	var missing []string
	for _, id := range cinderVolumes(*info) {
		if v := j.Volumes[id]; v != "" {
			volumes[id] = v
		} else {
			missing = append(missing, fmt.Sprintf("volume %s was not restored", id))
		}
	}
	if len(missing) > 0 {
		p.fail(strings.Join(missing, "; "))
		return p
	}
	// The ConfigMaps, Secrets and ServiceAccount it references were restored first; a pod
	// whose objects could not be is not created without them.
	if reason := unrestoredObjects(j.Dependencies[r.Key()]); reason != "" {
		p.fail(reason)
		return p
	}
	objs, err := kube.RestoredPod(*info, kube.RestoreOptions{RestoreID: restore, Namespace: p.out.Namespace, PodName: p.out.Name, Volumes: volumes})
	if err != nil {
		p.fail(err.Error())
		return p
	}
	p.objs = objs
	return p
}

// DefaultName is the name of a restored pod that the restore does not name: the same for
// the same restore and resource, so that a redelivered request finds the pod it created.
func DefaultName(restoreID, key string) string {
	return DefaultNamePrefix + uuid.NewSHA1(uuid.NameSpaceOID, []byte("podguard-restore:"+restoreID+":"+key)).String()
}

// cinderVolumes lists the Cinder volumes a saved pod uses, through its claims or in-tree
// volumes, each once, in order.
func cinderVolumes(info checkpoint.PodInfo) []string {
	pvs := map[string]*corev1.PersistentVolume{}
	for _, pv := range info.Volumes {
		if pv != nil {
			pvs[pv.Name] = pv
		}
	}
	var ids []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for _, c := range info.Claims {
		if c == nil {
			continue
		}
		pv := pvs[c.Spec.VolumeName]
		switch {
		case pv == nil:
		case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == graph.CinderCSIDriver:
			add(pv.Spec.CSI.VolumeHandle)
		case pv.Spec.Cinder != nil:
			add(pv.Spec.Cinder.VolumeID)
		}
	}
	for _, v := range info.Pod.Spec.Volumes {
		if v.Cinder != nil {
			add(v.Cinder.VolumeID)
		}
	}
	return ids
}

// namespaces makes sure the target namespaces of the pods exist, creating those that do
// not (labelled with the restore) when the restore asks to; the pods of a namespace that
// is missing (and not to be created) or being deleted fail.
func (s *Step) namespaces(ctx context.Context, restoreID string, create bool, pods []*pod) error {
	targets := map[string][]*pod{}
	for _, p := range pods {
		if p.objs != nil {
			targets[p.out.Namespace] = append(targets[p.out.Namespace], p)
		}
	}
	for ns, ps := range targets {
		reason, enforced, err := s.namespace(ctx, restoreID, ns, create)
		if err != nil {
			return err
		}
		for _, p := range ps {
			p.admitted = enforced
			if reason != "" {
				p.fail(reason)
				p.objs = nil
			}
		}
	}
	return nil
}

// podSecurityEnforce is the namespace label of the Pod Security level the apiserver
// enforces there.
const podSecurityEnforce = "pod-security.kubernetes.io/enforce"

// namespace makes sure namespace name exists, creating it when create is set; it returns
// why the resources bound for it cannot be restored there, or "", and whether it enforces
// a Pod Security level stricter than privileged.
func (s *Step) namespace(ctx context.Context, restoreID, name string, create bool) (string, bool, error) {
	api := s.kube.CoreV1().Namespaces()
	ns, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && !create {
		return fmt.Sprintf("namespace %s does not exist (a restore creates it only when asked: create_namespace)", name), false, nil
	}
	if apierrors.IsNotFound(err) {
		ns, err = api.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{kube.LabelRestore: restoreID}}}, metav1.CreateOptions{})
		switch {
		case err == nil:
			logging.FromContext(ctx).Infow("created namespace", zap.String("namespace", name), zap.String("restore", restoreID))
		case apierrors.IsAlreadyExists(err):
			ns, err = api.Get(ctx, name, metav1.GetOptions{})
		case refused(err):
			return fmt.Sprintf("namespace %s cannot be created: %v", name, err), false, nil
		}
	}
	if refused(err) { // a namespace-scoped install may not read other namespaces
		return fmt.Sprintf("namespace %s cannot be read: %v", name, err), false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("namespace %s: %w", name, err)
	}
	if ns.Status.Phase == corev1.NamespaceTerminating {
		return fmt.Sprintf("namespace %s is being deleted", name), false, nil
	}
	level := ns.Labels[podSecurityEnforce]
	return "", level != "" && level != "privileged", nil
}

// refused reports an API answer that the same request would get again: the object is
// invalid, or forbidden (by policy, a quota, or a namespace being deleted).
func refused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err)
}

// create makes the objects of one pod, in order: persistent volumes, claims, the pod.
// Objects that this restore already created from the same saved objects are reused;
// another object of the same name fails the pod, and is left as it is; the objects
// created before the clash stay (labelled with the restore) and are recorded. Each claim
// waits for its volume to be seen and each pod for its claims to be bound (see waits).
// Past the restore's deadline (w is nil) nothing is created any more: only the pod is
// looked up.
func (s *Step) create(ctx context.Context, restoreID string, p *pod, w *waits, waitUntil time.Time) error {
	if p.objs == nil {
		return nil
	}
	if w == nil {
		return s.lookup(ctx, restoreID, p)
	}
	pods := s.kube.CoreV1().Pods(p.out.Namespace)
	// Where a Pod Security level is enforced, the apiserver is asked first (a dry run)
	// whether it admits the pod, so that a pod it refuses leaves no volume or claim.
	if p.admitted {
		_, err := pods.Create(ctx, p.objs.Pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
		case refused(err):
			p.fail(fmt.Sprintf("pod %s is not admitted in namespace %s: %v", p.ref(), p.out.Namespace, err))
			return nil
		default:
			return fmt.Errorf("dry run of pod %s: %w", p.ref(), err)
		}
	}
	claimAPI := s.kube.CoreV1().PersistentVolumeClaims(p.out.Namespace)
	// A volume is pre-bound to its claim by name: were the name taken by another claim,
	// the new volume could be bound to it. Such a clash is found before any volume is
	// created.
	for _, c := range p.objs.Claims {
		got, err := claimAPI.Get(ctx, c.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		ref := p.out.Namespace + "/" + c.Name
		if err != nil {
			return fmt.Errorf("get persistentvolumeclaim %s: %w", ref, err)
		}
		if reason := clash(got, c, restoreID, "persistentvolumeclaim", ref); reason != "" {
			p.fail(reason)
			return nil
		}
	}
	pvAPI := s.kube.CoreV1().PersistentVolumes()
	for _, pv := range p.objs.Volumes {
		got, reason, err := ensure(ctx, restoreID, "persistentvolume", pv.Name, pv, pvAPI.Create,
			func(ctx context.Context) (*corev1.PersistentVolume, error) {
				return pvAPI.Get(ctx, pv.Name, metav1.GetOptions{})
			})
		if err != nil || reason != "" {
			p.failIf(reason)
			return err
		}
		p.out.PersistentVolumes = append(p.out.PersistentVolumes, pv.Name)
		w.volumeSeen(ctx, got.Name, waitUntil)
	}
	for _, c := range p.objs.Claims {
		ref := p.out.Namespace + "/" + c.Name
		_, reason, err := ensure(ctx, restoreID, "persistentvolumeclaim", ref, c, claimAPI.Create,
			func(ctx context.Context) (*corev1.PersistentVolumeClaim, error) {
				return claimAPI.Get(ctx, c.Name, metav1.GetOptions{})
			})
		if err != nil || reason != "" {
			p.failIf(reason)
			return err
		}
		p.out.Claims = append(p.out.Claims, ref)
		w.claimBound(ctx, p.out.Namespace, c.Name, waitUntil)
	}
	got, reason, err := ensure(ctx, restoreID, "pod", p.ref(), p.objs.Pod, pods.Create,
		func(ctx context.Context) (*corev1.Pod, error) { return pods.Get(ctx, p.out.Name, metav1.GetOptions{}) })
	if err != nil || reason != "" {
		p.failIf(reason)
		return err
	}
	p.current = got
	return nil
}

// lookup finds, past the restore's deadline, what was created for p before: the objects
// are listed in the record, and the pod fails unless it exists (its phase decides).
func (s *Step) lookup(ctx context.Context, restoreID string, p *pod) error {
	for _, pv := range p.objs.Volumes {
		got, err := s.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get persistentvolume %s: %w", pv.Name, err)
		}
		if err == nil && clash(got, pv, restoreID, "", "") == "" {
			p.out.PersistentVolumes = append(p.out.PersistentVolumes, pv.Name)
		}
	}
	for _, c := range p.objs.Claims {
		got, err := s.kube.CoreV1().PersistentVolumeClaims(p.out.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get persistentvolumeclaim %s/%s: %w", p.out.Namespace, c.Name, err)
		}
		if err == nil && clash(got, c, restoreID, "", "") == "" {
			p.out.Claims = append(p.out.Claims, p.out.Namespace+"/"+c.Name)
		}
	}
	got, err := s.kube.CoreV1().Pods(p.out.Namespace).Get(ctx, p.out.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		p.fail(fmt.Sprintf("the restore's deadline passed before pod %s was created", p.ref()))
		return nil
	case err != nil:
		return fmt.Errorf("get pod %s: %w", p.ref(), err)
	}
	if reason := clash(got, p.objs.Pod, restoreID, "pod", p.ref()); reason != "" {
		p.fail(reason)
		return nil
	}
	p.current = got
	return nil
}

// ensure creates obj, or finds the one that this restore created from the same saved
// object. It returns the reason when the name is taken by any other object, or when the
// API refuses the object; an error for what may succeed when the request comes again.
func ensure[T metav1.Object](ctx context.Context, restoreID, kind, ref string, obj T,
	create func(context.Context, T, metav1.CreateOptions) (T, error), get func(context.Context) (T, error),
) (T, string, error) {
	var zero T
	got, err := create(ctx, obj, metav1.CreateOptions{})
	switch {
	case err == nil:
		logging.FromContext(ctx).Infow("created "+kind, zap.String("name", ref), zap.String("restore", restoreID))
		return got, "", nil
	case apierrors.IsAlreadyExists(err):
	case refused(err):
		return zero, fmt.Sprintf("create %s %s: %v", kind, ref, err), nil
	default:
		return zero, "", fmt.Errorf("create %s %s: %w", kind, ref, err)
	}
	got, err = get(ctx)
	if err != nil {
		// Deleted since, or unreachable: the next request tries again.
		return zero, "", fmt.Errorf("get existing %s %s: %w", kind, ref, err)
	}
	if reason := clash(got, obj, restoreID, kind, ref); reason != "" {
		return zero, reason, nil
	}
	return got, "", nil
}

// clash says why existing cannot stand for want: it was not created by this restore, or
// was restored from another saved object. "" when it may be reused.
func clash(existing, want metav1.Object, restoreID, kind, ref string) string {
	if !kube.OwnedByRestore(existing, restoreID) {
		return fmt.Sprintf("%s %s already exists and was not created by restore %s; it is not overwritten", kind, ref, restoreID)
	}
	from, wantFrom := existing.GetAnnotations()[kube.AnnotationRestoredFrom], want.GetAnnotations()[kube.AnnotationRestoredFrom]
	if from != wantFrom {
		return fmt.Sprintf("%s %s was already restored from %s by restore %s, so %s cannot be restored under that name; it is not overwritten", kind, ref, from, restoreID, wantFrom)
	}
	return ""
}

// settle updates p from its current state; it reports whether p is settled.
func (p *pod) settle(pastDeadline bool) bool {
	if p.status != "" {
		return true
	}
	if p.current == nil {
		if pastDeadline {
			p.fail(fmt.Sprintf("pod %s no longer exists at the restore's deadline", p.ref()))
		}
		return pastDeadline
	}
	phase := p.current.Status.Phase
	if phase == "" {
		phase = corev1.PodPending
	}
	p.out.Phase = string(phase)
	switch phase {
	case corev1.PodRunning, corev1.PodSucceeded:
		p.status, p.reason = events.StatusAvailable, ""
		return true
	case corev1.PodFailed:
		p.fail(failedReason(p.ref(), p.current))
		return true
	}
	if pastDeadline {
		reason := fmt.Sprintf("pod %s still %s at the restore's deadline", p.ref(), phase)
		if d := waitingDetail(p.current); d != "" {
			reason += ": " + d
		}
		p.fail(reason)
		return true
	}
	return false
}

// failedReason explains a Failed pod: its reason and message, and why its containers
// terminated.
func failedReason(ref string, po *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s failed", ref)
	if r, m := po.Status.Reason, po.Status.Message; r != "" || m != "" {
		b.WriteString(": ")
		b.WriteString(strings.TrimSpace(strings.Join(nonEmpty(r, m), ": ")))
	}
	var containers []string
	for _, cs := range [][]corev1.ContainerStatus{po.Status.InitContainerStatuses, po.Status.ContainerStatuses} {
		for _, c := range cs {
			t := c.State.Terminated
			if t == nil {
				t = c.LastTerminationState.Terminated
			}
			if t == nil || (t.ExitCode == 0 && (t.Reason == "" || t.Reason == "Completed") && t.Message == "") {
				continue // did not end, or ended well
			}
			s := fmt.Sprintf("container %s terminated", c.Name)
			if t.Reason != "" {
				s += ": " + t.Reason
			}
			s += fmt.Sprintf(" (exit code %d)", t.ExitCode)
			if t.Message != "" {
				s += ": " + strings.TrimSpace(t.Message)
			}
			containers = append(containers, s)
		}
	}
	if len(containers) > 0 {
		b.WriteString("; ")
		b.WriteString(strings.Join(containers, "; "))
	}
	return b.String()
}

// waitingDetail says what a pod that has not started waits for: scheduling, or its
// containers.
func waitingDetail(po *corev1.Pod) string {
	var out []string
	for _, c := range po.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			out = append(out, strings.Join(nonEmpty("not scheduled", c.Reason, c.Message), ": "))
		}
	}
	for _, cs := range [][]corev1.ContainerStatus{po.Status.InitContainerStatuses, po.Status.ContainerStatuses} {
		for _, c := range cs {
			if w := c.State.Waiting; w != nil && (w.Reason != "" || w.Message != "") {
				out = append(out, strings.Join(nonEmpty("container "+c.Name+" waiting", w.Reason, w.Message), ": "))
			}
		}
	}
	return strings.Join(out, "; ")
}

func nonEmpty(ss ...string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// wait settles the pods: it looks at each created pod once, then, while any is starting,
// watches them for at most the configured wait (and no later than the restore's
// deadline). Pods still starting past the deadline fail.
func (s *Step) wait(ctx context.Context, j *step.Job, pods []*pod, until time.Time) error {
	pending := map[string]*pod{}
	for _, p := range pods {
		if !p.settle(j.PastDeadline(s.now())) {
			pending[p.ref()] = p
		}
	}
	if len(pending) == 0 {
		return nil
	}
	wait := time.Until(until)
	if !j.Deadline.IsZero() {
		wait = min(wait, j.Deadline.Sub(s.now()))
	}
	if wait > 0 {
		if err := s.watch(ctx, j.Restore.ID, wait, pending); err != nil {
			return err
		}
	}
	past := j.PastDeadline(s.now())
	for _, p := range pending {
		p.settle(past)
	}
	return nil
}

// podUpdate is one pod seen by a watch; gone when it was deleted.
type podUpdate struct {
	pod  *corev1.Pod
	gone bool
}

// watch follows the pending pods until all are settled or wait has passed. A watch that
// fails ends the wait early: the pods stay in progress, checked by the next request.
func (s *Step) watch(ctx context.Context, restoreID string, wait time.Duration, pending map[string]*pod) error {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	byNS := map[string][]string{}
	for _, p := range pending {
		byNS[p.out.Namespace] = append(byNS[p.out.Namespace], p.out.Name)
	}
	updates := make(chan podUpdate)
	var wg sync.WaitGroup
	for ns, names := range byNS {
		sort.Strings(names)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := watchPods(wctx, s.kube, ns, restoreID, names, updates)
			if err != nil && wctx.Err() == nil {
				logging.FromContext(ctx).Warnw("watching restored pods failed; the next request checks them", zap.String("namespace", ns), zap.Error(err))
				cancel()
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	for len(pending) > 0 {
		select {
		case u := <-updates:
			p := pending[u.pod.Namespace+"/"+u.pod.Name]
			if p == nil {
				continue // another batch's pod of the same restore
			}
			p.current = u.pod
			if u.gone {
				p.current = nil
			}
			if p.settle(false) {
				delete(pending, p.ref())
			}
		case <-wctx.Done():
			return ctx.Err() // nil when only the wait is over
		}
	}
	return nil
}

// watchPods lists and watches the restore's pods in namespace ns (only names when it is
// one pod) and sends every state seen, until ctx ends or the API fails.
func watchPods(ctx context.Context, cs kubernetes.Interface, ns, restoreID string, names []string, out chan<- podUpdate) error {
	opts := metav1.ListOptions{LabelSelector: kube.LabelRestore + "=" + restoreID}
	if len(names) == 1 {
		opts.FieldSelector = "metadata.name=" + names[0]
	}
	api := cs.CoreV1().Pods(ns)
	send := func(u podUpdate) bool {
		select {
		case out <- u:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		l, err := api.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list restored pods in %s: %w", ns, err)
		}
		for i := range l.Items {
			if !send(podUpdate{pod: &l.Items[i]}) {
				return nil
			}
		}
		wopts := opts
		wopts.ResourceVersion = l.ResourceVersion
		w, err := api.Watch(ctx, wopts)
		if err != nil {
			return fmt.Errorf("watch restored pods in %s: %w", ns, err)
		}
		for ev := range w.ResultChan() {
			po, ok := ev.Object.(*corev1.Pod)
			if !ok {
				break // an error (such as an expired resourceVersion): list again
			}
			if !send(podUpdate{pod: po, gone: ev.Type == watch.Deleted}) {
				w.Stop()
				return nil
			}
		}
		w.Stop()
	}
	return nil
}
