package kube

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podguard/podguard/shared/batch"
	"github.com/podguard/podguard/shared/graph"
)

// Cluster is the part of the Kubernetes API the resolver reads. Namespace "" lists across
// all namespaces.
type Cluster interface {
	ListPods(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.PodList, error)
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	ListPVCs(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.PersistentVolumeClaimList, error)
	GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	ListPVs(ctx context.Context, opts metav1.ListOptions) (*corev1.PersistentVolumeList, error)
	GetPV(ctx context.Context, name string) (*corev1.PersistentVolume, error)
	// The objects of a namespace that pods reference.
	ListConfigMaps(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.ConfigMapList, error)
	GetConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	ListSecrets(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.SecretList, error)
	GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	ListServiceAccounts(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.ServiceAccountList, error)
	GetServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

// Clientset adapts a client-go clientset to Cluster.
type Clientset struct{ kubernetes.Interface }

func (c Clientset) ListPods(ctx context.Context, ns string, o metav1.ListOptions) (*corev1.PodList, error) {
	return c.CoreV1().Pods(ns).List(ctx, o)
}
func (c Clientset) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	return c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}
func (c Clientset) ListPVCs(ctx context.Context, ns string, o metav1.ListOptions) (*corev1.PersistentVolumeClaimList, error) {
	return c.CoreV1().PersistentVolumeClaims(ns).List(ctx, o)
}
func (c Clientset) GetPVC(ctx context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	return c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
}
func (c Clientset) ListPVs(ctx context.Context, o metav1.ListOptions) (*corev1.PersistentVolumeList, error) {
	return c.CoreV1().PersistentVolumes().List(ctx, o)
}
func (c Clientset) GetPV(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	return c.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
}
func (c Clientset) ListConfigMaps(ctx context.Context, ns string, o metav1.ListOptions) (*corev1.ConfigMapList, error) {
	return c.CoreV1().ConfigMaps(ns).List(ctx, o)
}
func (c Clientset) GetConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return c.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}
func (c Clientset) ListSecrets(ctx context.Context, ns string, o metav1.ListOptions) (*corev1.SecretList, error) {
	return c.CoreV1().Secrets(ns).List(ctx, o)
}
func (c Clientset) GetSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return c.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}
func (c Clientset) ListServiceAccounts(ctx context.Context, ns string, o metav1.ListOptions) (*corev1.ServiceAccountList, error) {
	return c.CoreV1().ServiceAccounts(ns).List(ctx, o)
}
func (c Clientset) GetServiceAccount(ctx context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	return c.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
}

// Selection names pods: explicit Pods ("namespace:name" or resource ids), or the pods of
// Namespaces (none: all namespaces) matching LabelSelector.
type Selection struct {
	Namespaces    []string
	LabelSelector string
	Pods          []string
}

// ResolverOptions tunes the request strategy.
type ResolverOptions struct {
	// PageSize is the limit of one list request (default 500).
	PageSize int64
	// GetThreshold: up to this many claims (or PVs) are read one by one; more are listed
	// in pages, so the number of requests stays proportional to the scope (default 32).
	// The same holds for the ConfigMaps, Secrets and ServiceAccounts pods reference, per
	// namespace and kind.
	GetThreshold int
}

// Resolver turns a selection into the dependency graph.
type Resolver struct {
	c        Cluster
	pageSize int64
	getMax   int
}

// NewResolver builds a resolver reading from c.
func NewResolver(c Cluster, o ResolverOptions) *Resolver {
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	if o.GetThreshold <= 0 {
		o.GetThreshold = 32
	}
	return &Resolver{c: c, pageSize: o.PageSize, getMax: o.GetThreshold}
}

// notProtectable are the phases Karbor refuses to protect.
var notProtectable = map[corev1.PodPhase]bool{corev1.PodPending: true, corev1.PodFailed: true, corev1.PodUnknown: true, "": true}

// podInfo is what the resolver keeps of a pod: enough to build its node, not the object.
type podInfo struct {
	namespace, name string
	refs            []volumeRef
	objects         []objectRef
}

// volumeRef is one pod volume that may lead to a Cinder volume.
type volumeRef struct {
	podVolume string
	claim     string // PVC name in the pod's namespace; empty for an inline cinder volume
	cinderID  string // inline in-tree cinder volume
}

type nsName struct{ ns, name string }

// Resolve builds the graph of the selected pods. Pods in phase Pending, Failed or Unknown
// are listed as excluded; volumes that do not lead to a Cinder volume, and referenced
// ConfigMaps, Secrets and ServiceAccounts that do not exist (unless every reference to
// them is optional), are listed as problems. What Kubernetes creates in every namespace
// (the default ServiceAccount, the kube-root-ca.crt ConfigMap, service-account-token
// Secrets) is left out of the graph.
func (r *Resolver) Resolve(ctx context.Context, sel Selection) (*graph.Graph, error) {
	g := &graph.Graph{Nodes: []graph.Node{}}
	var pods []podInfo
	keep := func(p *corev1.Pod) {
		if notProtectable[p.Status.Phase] {
			g.Excluded = append(g.Excluded, excludedOf(p))
			return
		}
		pods = append(pods, podInfoOf(p))
	}
	var err error
	if len(sel.Pods) > 0 {
		var missing []string
		missing, err = r.explicitPods(ctx, sel.Pods, keep)
		for _, ref := range missing {
			g.Problems = append(g.Problems, graph.Problem{Pod: ref, Reason: "pod not found"})
		}
	} else {
		nss := sel.Namespaces
		if len(nss) == 0 {
			nss = []string{metav1.NamespaceAll}
		}
		for _, ns := range nss {
			if err = r.listPods(ctx, ns, sel.LabelSelector, keep); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].namespace != pods[j].namespace {
			return pods[i].namespace < pods[j].namespace
		}
		return pods[i].name < pods[j].name
	})
	if err := r.build(ctx, pods, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Show resolves one pod, by "namespace:name" or resource id. found is false for an
// unknown pod; a pod in a phase that cannot be protected is found, with its reason in
// g.Excluded.
func (r *Resolver) Show(ctx context.Context, ref string) (g *graph.Graph, found bool, err error) {
	g = &graph.Graph{Nodes: []graph.Node{}}
	var pods []podInfo
	missing, err := r.explicitPods(ctx, []string{ref}, func(p *corev1.Pod) {
		if notProtectable[p.Status.Phase] {
			g.Excluded = append(g.Excluded, excludedOf(p))
			return
		}
		pods = append(pods, podInfoOf(p))
	})
	if err != nil || len(missing) > 0 {
		return nil, false, err
	}
	if err := r.build(ctx, pods, g); err != nil {
		return nil, false, err
	}
	return g, true, nil
}

// explicitPods reads pods named by "namespace:name" or by resource id, and returns the
// references it could not find.
func (r *Resolver) explicitPods(ctx context.Context, refs []string, each func(*corev1.Pod)) (missing []string, err error) {
	byID := map[string]bool{}
	for _, ref := range refs {
		ns, name, ok := graph.SplitPodName(ref)
		if !ok {
			byID[ref] = true
			continue
		}
		p, err := r.c.GetPod(ctx, ns, name)
		if apierrors.IsNotFound(err) {
			missing = append(missing, ref)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
		}
		each(p)
	}
	if len(byID) == 0 {
		return missing, nil
	}
	// A resource id is a hash of "namespace:name": find the pods by listing them.
	if err := r.listPods(ctx, metav1.NamespaceAll, "", func(p *corev1.Pod) {
		if id := graph.PodID(p.Namespace, p.Name); byID[id] {
			delete(byID, id)
			each(p)
		}
	}); err != nil {
		return nil, err
	}
	for _, ref := range refs {
		if byID[ref] {
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// listPods pages through the pods of ns; each page is reduced to what the graph needs
// before the next is read.
func (r *Resolver) listPods(ctx context.Context, ns, selector string, each func(*corev1.Pod)) error {
	opts := metav1.ListOptions{LabelSelector: selector, Limit: r.pageSize}
	for {
		l, err := r.c.ListPods(ctx, ns, opts)
		if err != nil {
			return fmt.Errorf("list pods (namespace %q, selector %q): %w", ns, selector, err)
		}
		for i := range l.Items {
			each(&l.Items[i])
		}
		if l.Continue == "" {
			return nil
		}
		opts.Continue = l.Continue
	}
}

func excludedOf(p *corev1.Pod) graph.Excluded {
	return graph.Excluded{Pod: graph.PodName(p.Namespace, p.Name), Phase: string(p.Status.Phase),
		Reason: fmt.Sprintf("pod is %s: only Running and Succeeded pods are protectable", phaseOrUnknown(p.Status.Phase))}
}

func podInfoOf(p *corev1.Pod) podInfo {
	info := podInfo{namespace: p.Namespace, name: p.Name, objects: podReferences(p)}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			info.refs = append(info.refs, volumeRef{podVolume: v.Name, claim: v.PersistentVolumeClaim.ClaimName})
		case v.Ephemeral != nil: // generic ephemeral volume: the PVC is named <pod>-<volume>
			info.refs = append(info.refs, volumeRef{podVolume: v.Name, claim: p.Name + "-" + v.Name})
		case v.Cinder != nil:
			info.refs = append(info.refs, volumeRef{podVolume: v.Name, cinderID: v.Cinder.VolumeID})
		}
	}
	return info
}

// build reads the claims, volumes and referenced objects the pods need and adds the
// nodes: each pod, then the volumes and objects it is the first to reference.
func (r *Resolver) build(ctx context.Context, pods []podInfo, g *graph.Graph) error {
	claims := map[nsName]*corev1.PersistentVolumeClaim{}
	for _, p := range pods {
		for _, ref := range p.refs {
			if ref.claim != "" {
				claims[nsName{p.namespace, ref.claim}] = nil
			}
		}
	}
	if err := r.fetchClaims(ctx, claims); err != nil {
		return err
	}
	pvs := map[string]*corev1.PersistentVolume{}
	for _, c := range claims {
		if c != nil && c.Spec.VolumeName != "" {
			pvs[c.Spec.VolumeName] = nil
		}
	}
	if err := r.fetchPVs(ctx, pvs); err != nil {
		return err
	}
	objects := map[objectKey]*objectState{}
	for _, p := range pods {
		for _, o := range p.objects {
			objects[objectKey{o.typ, p.namespace, o.name}] = &objectState{}
		}
	}
	if err := r.fetchObjects(ctx, objects); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range pods {
		pod := graph.Node{Resource: graph.PodResource(p.namespace, p.name)}
		var vols []graph.Node
		for _, ref := range p.refs {
			vol, problem := resolveRef(p, ref, claims, pvs)
			if problem != nil {
				g.Problems = append(g.Problems, *problem)
				continue
			}
			key := vol.Key()
			if !slices.Contains(pod.Children, key) {
				pod.Children = append(pod.Children, key)
			}
			if !seen[key] {
				seen[key] = true
				vols = append(vols, graph.Node{Resource: vol})
			}
		}
		for _, o := range p.objects {
			st := objects[objectKey{o.typ, p.namespace, o.name}]
			switch {
			case st.skip, !st.found && o.optional:
				continue
			case !st.found:
				g.Problems = append(g.Problems, graph.Problem{Pod: graph.PodName(p.namespace, p.name),
					Object: graph.ObjectRef(graph.Kind(o.typ), o.name), Reason: o.missingReason()})
				continue
			}
			res := graph.ObjectResource(o.typ, p.namespace, o.name)
			pod.Children = append(pod.Children, res.Key())
			if !seen[res.Key()] {
				seen[res.Key()] = true
				vols = append(vols, graph.Node{Resource: res})
			}
		}
		g.Nodes = append(g.Nodes, pod)
		g.Nodes = append(g.Nodes, vols...)
	}
	return nil
}

// objectKey is an object of a namespace that pods reference.
type objectKey struct{ typ, ns, name string }

// objectState is what the resolver learnt of a referenced object: whether it exists,
// and whether it is left out as what Kubernetes makes in every namespace (a
// service-account-token Secret).
type objectState struct{ found, skip bool }

// objectWorkers bounds the referenced objects read at once.
const objectWorkers = 8

// fetchObjects fills objects, reading each once: per namespace and kind, one GET each
// (up to objectWorkers at once) when few, else pages through the namespace's objects of
// that kind. Pods without such references cost nothing.
func (r *Resolver) fetchObjects(ctx context.Context, objects map[objectKey]*objectState) error {
	groups := map[objectKey][]objectKey{} // (type, namespace) -> the objects wanted
	for k := range objects {
		g := objectKey{typ: k.typ, ns: k.ns}
		groups[g] = append(groups[g], k)
	}
	var gets []objectKey
	for g, ks := range groups {
		if len(ks) <= r.getMax {
			gets = append(gets, ks...)
			continue
		}
		if err := r.listObjects(ctx, g.typ, g.ns, objects); err != nil {
			return err
		}
	}
	return batch.Each(ctx, gets, objectWorkers, func(ctx context.Context, k objectKey) error {
		st, err := r.getObject(ctx, k)
		if err != nil {
			return err
		}
		*objects[k] = st // each worker writes its own object's state
		return nil
	})
}

// getObject reads one referenced object.
func (r *Resolver) getObject(ctx context.Context, k objectKey) (objectState, error) {
	var st objectState
	var err error
	switch k.typ {
	case graph.ConfigMapType:
		_, err = r.c.GetConfigMap(ctx, k.ns, k.name)
	case graph.SecretType:
		var s *corev1.Secret
		if s, err = r.c.GetSecret(ctx, k.ns, k.name); err == nil {
			st.skip = s.Type == corev1.SecretTypeServiceAccountToken
		}
	case graph.ServiceAccountType:
		_, err = r.c.GetServiceAccount(ctx, k.ns, k.name)
	default:
		return st, fmt.Errorf("resolver: no objects of type %s", k.typ)
	}
	if apierrors.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("get %s %s/%s: %w", graph.Kind(k.typ), k.ns, k.name, err)
	}
	st.found = true
	return st, nil
}

// listObjects pages through the objects of type typ in namespace ns and fills the
// states of those wanted; each page is reduced to that before the next is read.
func (r *Resolver) listObjects(ctx context.Context, typ, ns string, objects map[objectKey]*objectState) error {
	opts := metav1.ListOptions{Limit: r.pageSize}
	mark := func(name string, skip bool) {
		if st := objects[objectKey{typ, ns, name}]; st != nil {
			*st = objectState{found: true, skip: skip}
		}
	}
	for {
		var next string
		var err error
		switch typ {
		case graph.ConfigMapType:
			var l *corev1.ConfigMapList
			if l, err = r.c.ListConfigMaps(ctx, ns, opts); err == nil {
				for i := range l.Items {
					mark(l.Items[i].Name, false)
				}
				next = l.Continue
			}
		case graph.SecretType:
			var l *corev1.SecretList
			if l, err = r.c.ListSecrets(ctx, ns, opts); err == nil {
				for i := range l.Items {
					mark(l.Items[i].Name, l.Items[i].Type == corev1.SecretTypeServiceAccountToken)
				}
				next = l.Continue
			}
		case graph.ServiceAccountType:
			var l *corev1.ServiceAccountList
			if l, err = r.c.ListServiceAccounts(ctx, ns, opts); err == nil {
				for i := range l.Items {
					mark(l.Items[i].Name, false)
				}
				next = l.Continue
			}
		default:
			return fmt.Errorf("resolver: no objects of type %s", typ)
		}
		if err != nil {
			return fmt.Errorf("list %s (namespace %q): %w", graph.Kind(typ), ns, err)
		}
		if next == "" {
			return nil
		}
		opts.Continue = next
	}
}

func resolveRef(p podInfo, ref volumeRef, claims map[nsName]*corev1.PersistentVolumeClaim, pvs map[string]*corev1.PersistentVolume) (graph.Resource, *graph.Problem) {
	podName := graph.PodName(p.namespace, p.name)
	if ref.claim == "" {
		return graph.Resource{Type: graph.VolumeType, ID: ref.cinderID, Name: ref.podVolume, ExtraInfo: map[string]string{
			graph.InfoNamespace: p.namespace, graph.InfoSource: graph.SourceInTree,
		}}, nil
	}
	problem := func(pv, reason string) *graph.Problem {
		return &graph.Problem{Pod: podName, Volume: ref.podVolume, Claim: ref.claim, PersistentVolume: pv, Reason: reason}
	}
	c := claims[nsName{p.namespace, ref.claim}]
	if c == nil {
		return graph.Resource{}, problem("", "persistent volume claim not found")
	}
	pv := pvs[c.Spec.VolumeName]
	switch {
	case c.Spec.VolumeName == "":
		return graph.Resource{}, problem("", fmt.Sprintf("persistent volume claim is not bound (phase %s)", phaseOrUnknown(c.Status.Phase)))
	case pv == nil:
		return graph.Resource{}, problem(c.Spec.VolumeName, "persistent volume not found")
	case c.Status.Phase != corev1.ClaimBound:
		return graph.Resource{}, problem(c.Spec.VolumeName, fmt.Sprintf("persistent volume claim is not bound (phase %s)", phaseOrUnknown(c.Status.Phase)))
	}
	info := map[string]string{graph.InfoNamespace: p.namespace, graph.InfoClaim: ref.claim, graph.InfoPV: pv.Name}
	if size, ok := pv.Spec.Capacity[corev1.ResourceStorage]; ok && size.Sign() > 0 {
		info[graph.InfoSizeBytes] = strconv.FormatInt(size.Value(), 10)
	}
	switch s := pv.Spec.PersistentVolumeSource; {
	case s.CSI != nil && s.CSI.Driver == graph.CinderCSIDriver:
		info[graph.InfoSource] = graph.SourceCSI
		return graph.Resource{Type: graph.VolumeType, ID: s.CSI.VolumeHandle, Name: p.namespace + "/" + ref.claim, ExtraInfo: info}, nil
	case s.Cinder != nil:
		info[graph.InfoSource] = graph.SourceInTree
		return graph.Resource{Type: graph.VolumeType, ID: s.Cinder.VolumeID, Name: p.namespace + "/" + ref.claim, ExtraInfo: info}, nil
	case s.CSI != nil:
		return graph.Resource{}, problem(pv.Name, fmt.Sprintf("persistent volume uses CSI driver %s, not Cinder", s.CSI.Driver))
	default:
		return graph.Resource{}, problem(pv.Name, fmt.Sprintf("persistent volume is not a Cinder volume (%s)", sourceKind(s)))
	}
}

// fetchClaims fills claims: one GET each when few, else pages through the claims of
// their namespaces (every namespace when they span many).
func (r *Resolver) fetchClaims(ctx context.Context, claims map[nsName]*corev1.PersistentVolumeClaim) error {
	if len(claims) <= r.getMax {
		for k := range claims {
			c, err := r.c.GetPVC(ctx, k.ns, k.name)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("get persistent volume claim %s/%s: %w", k.ns, k.name, err)
			}
			claims[k] = c
		}
		return nil
	}
	nss := map[string]bool{}
	for k := range claims {
		nss[k.ns] = true
	}
	scopes := []string{metav1.NamespaceAll}
	if len(nss) <= r.getMax {
		scopes = scopes[:0]
		for ns := range nss {
			scopes = append(scopes, ns)
		}
	}
	for _, ns := range scopes {
		opts := metav1.ListOptions{Limit: r.pageSize}
		for {
			l, err := r.c.ListPVCs(ctx, ns, opts)
			if err != nil {
				return fmt.Errorf("list persistent volume claims (namespace %q): %w", ns, err)
			}
			for i := range l.Items {
				k := nsName{l.Items[i].Namespace, l.Items[i].Name}
				if _, want := claims[k]; want {
					claims[k] = &l.Items[i]
				}
			}
			if l.Continue == "" {
				break
			}
			opts.Continue = l.Continue
		}
	}
	return nil
}

// fetchPVs fills pvs the same way.
func (r *Resolver) fetchPVs(ctx context.Context, pvs map[string]*corev1.PersistentVolume) error {
	if len(pvs) <= r.getMax {
		for name := range pvs {
			pv, err := r.c.GetPV(ctx, name)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("get persistent volume %s: %w", name, err)
			}
			pvs[name] = pv
		}
		return nil
	}
	opts := metav1.ListOptions{Limit: r.pageSize}
	for {
		l, err := r.c.ListPVs(ctx, opts)
		if err != nil {
			return fmt.Errorf("list persistent volumes: %w", err)
		}
		for i := range l.Items {
			if _, want := pvs[l.Items[i].Name]; want {
				pvs[l.Items[i].Name] = &l.Items[i]
			}
		}
		if l.Continue == "" {
			return nil
		}
		opts.Continue = l.Continue
	}
}

func sourceKind(s corev1.PersistentVolumeSource) string {
	switch {
	case s.HostPath != nil:
		return "hostPath"
	case s.NFS != nil:
		return "nfs"
	case s.Local != nil:
		return "local"
	case s.ISCSI != nil:
		return "iscsi"
	case s.RBD != nil:
		return "rbd"
	case s.CephFS != nil:
		return "cephfs"
	default:
		return "another volume source"
	}
}

func phaseOrUnknown[T ~string](p T) string {
	if p == "" {
		return "Unknown"
	}
	return string(p)
}
