package kube

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// Marks of the objects a restore creates.
const (
	// LabelRestore labels every object a restore creates with the restore's id.
	LabelRestore = "podguard.dev/restore"
	// AnnotationRestoredFrom names the saved object a created object was restored from:
	// "<namespace>/<name>", or "<name>" for a persistent volume (cluster-scoped).
	AnnotationRestoredFrom = "podguard.dev/restored-from"
)

const (
	// csiProvisionerIdentity is the volume attribute the CSI external-provisioner sets on
	// the volumes it provisions; a restored volume was not provisioned by it.
	csiProvisionerIdentity = "storage.kubernetes.io/csiProvisionerIdentity"
	// annSelectedNode is the node the scheduler chose for a claim with delayed binding;
	// it names a node of the original scheduling, not of the restored pod.
	annSelectedNode = "volume.kubernetes.io/selected-node"
	// restoredVolumePrefix starts the name of a restored persistent volume.
	restoredVolumePrefix = "podguard-"
	// claimSuffixLen is how much of the restore id makes a claim restored into its
	// original namespace distinct from the original claim.
	claimSuffixLen = 8
)

// controllerLabels are the labels by which a workload controller counts a pod as one of
// its own revisions; a restored pod drops them.
var controllerLabels = []string{"pod-template-hash", "controller-revision-hash"}

// RestoreOptions says where and how a pod is restored.
type RestoreOptions struct {
	RestoreID string            // the restore's id; labels the created objects
	Namespace string            // target namespace (may differ from the original)
	PodName   string            // name of the restored pod
	Volumes   map[string]string // original Cinder volume id -> restored Cinder volume id
}

// RestoredObjects are what recreating one pod creates, in creation order.
type RestoredObjects struct {
	Volumes []*corev1.PersistentVolume
	Claims  []*corev1.PersistentVolumeClaim
	Pod     *corev1.Pod
}

// RestoredPod returns the objects that recreate a saved pod on restored Cinder volumes:
// for each of its claims, a persistent volume on the restored Cinder volume, pre-bound to
// a new claim (Volumes[i] goes with Claims[i]); then the pod, using the new claims.
//
// A claim restored into its original namespace is named "<claim>-<first 8 characters of
// the restore id>", so that it cannot clash with the original claim; in another namespace
// it keeps its name. A generic ephemeral volume whose claim was saved becomes a
// persistentVolumeClaim volume on the restored claim, so that the pod finds its data. The
// label selector requirements that the API server merged from the pod's labels
// (matchLabelKeys, mismatchLabelKeys) are left out, for it to merge them again: see
// unmergeLabelKeys.
//
// Every error is permanent: the same input always fails. The problems of all the claims
// and volumes are reported together. info is not modified.
func RestoredPod(info checkpoint.PodInfo, o RestoreOptions) (*RestoredObjects, error) {
	if info.Pod == nil {
		return nil, errors.New("saved info has no pod")
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	origNS := info.Pod.Namespace
	pvs := make(map[string]*corev1.PersistentVolume, len(info.Volumes))
	for _, pv := range info.Volumes {
		if pv != nil {
			pvs[pv.Name] = pv
		}
	}
	out := &RestoredObjects{}
	// claimNames maps each saved claim to its restored name; "" when it cannot be restored
	// (the reason is in problems already).
	claimNames := map[string]string{}
	taken := map[string]string{} // restored claim or volume name -> original claim
	var problems []error
	for _, c := range info.Claims {
		if c == nil {
			continue
		}
		if _, done := claimNames[c.Name]; done {
			continue // a pod may mount a claim through several volumes
		}
		claimNames[c.Name] = ""
		pv, claim, err := restoredClaim(c, pvs[c.Spec.VolumeName], origNS, o)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		for _, name := range []string{"claim " + claim.Name, "persistent volume " + pv.Name} {
			if other, clash := taken[name]; clash {
				err = fmt.Errorf("claims %s and %s would both be restored as %s", other, c.Name, name)
				break
			}
			taken[name] = c.Name
		}
		if err != nil {
			problems = append(problems, err)
			continue
		}
		claimNames[c.Name] = claim.Name
		out.Volumes = append(out.Volumes, pv)
		out.Claims = append(out.Claims, claim)
	}
	pod, errs := restoredPodObject(info.Pod, claimNames, o)
	problems = append(problems, errs...)
	if len(problems) > 0 {
		return nil, fmt.Errorf("pod %s/%s cannot be restored: %w", origNS, info.Pod.Name, errors.Join(problems...))
	}
	out.Pod = pod
	return out, nil
}

// OwnedByRestore reports whether an existing object was created by restore id (so a
// redelivered request may reuse it), as opposed to a name clash with someone else's object.
func OwnedByRestore(obj metav1.Object, restoreID string) bool {
	if obj == nil || restoreID == "" {
		return false
	}
	return obj.GetLabels()[LabelRestore] == restoreID
}

func (o RestoreOptions) validate() error {
	if o.RestoreID == "" {
		return errors.New("restore id is empty")
	}
	if errs := validation.IsValidLabelValue(o.RestoreID); len(errs) > 0 {
		return fmt.Errorf("restore id %q is not a valid label value: %s", o.RestoreID, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return fmt.Errorf("target namespace %q is not valid: %s", o.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(o.PodName); len(errs) > 0 {
		return fmt.Errorf("pod name %q is not valid: %s", o.PodName, strings.Join(errs, "; "))
	}
	return nil
}

// restoredClaim returns the persistent volume and the claim that recreate saved claim c,
// whose saved persistent volume is pv (nil when none was saved).
func restoredClaim(c *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, podNS string, o RestoreOptions) (*corev1.PersistentVolume, *corev1.PersistentVolumeClaim, error) {
	ns := c.Namespace
	if ns == "" {
		ns = podNS
	}
	ref := ns + "/" + c.Name
	switch {
	case c.Spec.VolumeName == "":
		return nil, nil, fmt.Errorf("claim %s was not bound to a persistent volume when saved: its data cannot be restored", ref)
	case pv == nil:
		return nil, nil, fmt.Errorf("claim %s: its persistent volume %s was not saved: its data cannot be restored", ref, c.Spec.VolumeName)
	}
	origID, err := cinderVolumeID(pv)
	if err != nil {
		return nil, nil, fmt.Errorf("claim %s: %w: its data cannot be restored", ref, err)
	}
	newID := o.Volumes[origID]
	if newID == "" {
		return nil, nil, fmt.Errorf("claim %s: no restored volume for Cinder volume %s", ref, origID)
	}
	claimName, err := restoredClaimName(c.Name, ns, o)
	if err != nil {
		return nil, nil, fmt.Errorf("claim %s: %w", ref, err)
	}
	pvName := restoredVolumePrefix + newID
	if errs := validation.IsDNS1123Subdomain(pvName); len(errs) > 0 {
		return nil, nil, fmt.Errorf("claim %s: restored volume id %q does not make a valid persistent volume name: %s", ref, newID, strings.Join(errs, "; "))
	}
	claimRef := &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: o.Namespace, Name: claimName}
	newPV := restoredVolume(pv, pvName, newID, claimRef, o.RestoreID)

	meta := restoredMeta(c.ObjectMeta, o.Namespace, claimName, o.RestoreID, ref)
	delete(meta.Annotations, annSelectedNode)
	newClaim := &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: meta,
		Spec:       *c.Spec.DeepCopy(),
	}
	s := &newClaim.Spec
	s.VolumeName = pvName
	sc := pv.Spec.StorageClassName
	s.StorageClassName = &sc
	s.Selector = nil
	s.DataSource = nil
	s.DataSourceRef = nil
	return newPV, newClaim, nil
}

// cinderVolumeID returns the Cinder volume behind a persistent volume, or why it has none.
func cinderVolumeID(pv *corev1.PersistentVolume) (string, error) {
	switch s := pv.Spec.PersistentVolumeSource; {
	case s.CSI != nil && s.CSI.Driver == graph.CinderCSIDriver:
		return s.CSI.VolumeHandle, nil
	case s.Cinder != nil:
		return s.Cinder.VolumeID, nil
	case s.CSI != nil:
		return "", fmt.Errorf("persistent volume %s uses CSI driver %s, not Cinder", pv.Name, s.CSI.Driver)
	default:
		return "", fmt.Errorf("persistent volume %s is not a Cinder volume (%s)", pv.Name, sourceKind(s))
	}
}

// restoredClaimName names a claim restored into o.Namespace from namespace origNS.
func restoredClaimName(name, origNS string, o RestoreOptions) (string, error) {
	out := name
	if o.Namespace == origNS {
		suffix := o.RestoreID
		if len(suffix) > claimSuffixLen {
			suffix = suffix[:claimSuffixLen]
		}
		suffix = "-" + suffix
		if limit := validation.DNS1123SubdomainMaxLength - len(suffix); len(name) > limit {
			name = strings.TrimRight(name[:limit], "-.")
		}
		out = name + suffix
	}
	if errs := validation.IsDNS1123Subdomain(out); len(errs) > 0 {
		return "", fmt.Errorf("restored claim name %q is not valid: %s", out, strings.Join(errs, "; "))
	}
	return out, nil
}

// restoredVolume returns a persistent volume like saved, on Cinder volume newID, pre-bound
// to claimRef.
func restoredVolume(saved *corev1.PersistentVolume, name, newID string, claimRef *corev1.ObjectReference, restoreID string) *corev1.PersistentVolume {
	in := saved.Spec
	pv := &corev1.PersistentVolume{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{LabelRestore: restoreID},
			Annotations: map[string]string{AnnotationRestoredFrom: saved.Name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      in.Capacity.DeepCopy(),
			AccessModes:                   append([]corev1.PersistentVolumeAccessMode(nil), in.AccessModes...),
			ClaimRef:                      claimRef,
			PersistentVolumeReclaimPolicy: in.PersistentVolumeReclaimPolicy,
			StorageClassName:              in.StorageClassName,
			MountOptions:                  append([]string(nil), in.MountOptions...),
			NodeAffinity:                  in.NodeAffinity.DeepCopy(),
		},
	}
	if in.VolumeMode != nil {
		m := *in.VolumeMode
		pv.Spec.VolumeMode = &m
	}
	if in.VolumeAttributesClassName != nil {
		c := *in.VolumeAttributesClassName
		pv.Spec.VolumeAttributesClassName = &c
	}
	if s := in.CSI; s != nil && s.Driver == graph.CinderCSIDriver {
		csi := s.DeepCopy()
		csi.VolumeHandle = newID
		delete(csi.VolumeAttributes, csiProvisionerIdentity)
		if len(csi.VolumeAttributes) == 0 {
			csi.VolumeAttributes = nil
		}
		pv.Spec.CSI = csi
	} else {
		cinder := in.Cinder.DeepCopy()
		cinder.VolumeID = newID
		pv.Spec.Cinder = cinder
	}
	return pv
}

// restoredPodObject returns the pod that recreates saved in o.Namespace, using the
// restored claims (original claim name -> restored claim name, "" for a saved claim that
// cannot be restored, whose problem is already reported) and volumes.
func restoredPodObject(saved *corev1.Pod, claims map[string]string, o RestoreOptions) (*corev1.Pod, []error) {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: restoredMeta(saved.ObjectMeta, o.Namespace, o.PodName, o.RestoreID, saved.Namespace+"/"+saved.Name),
		Spec:       *saved.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = ""
	// A restored pod is nobody's replica: without the template hash the original's
	// ReplicaSet (or StatefulSet revision) does not adopt it and delete a surplus pod.
	for _, l := range controllerLabels {
		delete(pod.Labels, l)
	}
	unmergeLabelKeys(&pod.Spec, saved.Labels, pod.Labels)
	var problems []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.PersistentVolumeClaim != nil:
			name, ok := claims[v.PersistentVolumeClaim.ClaimName]
			if !ok {
				problems = append(problems, fmt.Errorf("volume %s: claim %s was not saved", v.Name, v.PersistentVolumeClaim.ClaimName))
				continue
			}
			if name == "" {
				continue // saved but cannot be restored: reported
			}
			v.PersistentVolumeClaim.ClaimName = name
		case v.Ephemeral != nil:
			// Kubernetes names the claim of a generic ephemeral volume <pod>-<volume>.
			name, ok := claims[saved.Name+"-"+v.Name]
			switch {
			case !ok:
				continue // not saved: the pod gets a new, empty ephemeral volume
			case name == "":
				continue // saved but cannot be restored: reported
			}
			v.VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}
		case v.Cinder != nil:
			newID := o.Volumes[v.Cinder.VolumeID]
			if newID == "" {
				problems = append(problems, fmt.Errorf("volume %s: no restored volume for Cinder volume %s", v.Name, v.Cinder.VolumeID))
				continue
			}
			v.Cinder.VolumeID = newID
		}
	}
	return pod, problems
}

// unmergeLabelKeys takes out of spec's label selectors what the API server merged into
// them when it created the original pod: for every pod (anti-)affinity term and topology
// spread constraint with matchLabelKeys or mismatchLabelKeys, it appended a requirement
// per key that the pod had as a label (`key In (value)` for each of matchLabelKeys, then
// `key NotIn (value)` for each of mismatchLabelKeys). Created again with them, the pod
// would get them twice, which the API server refuses ("exists in both matchLabelKeys
// and labelSelector"); without them, it merges them again from the restored pod's
// labels. What it will merge again is taken out, and only when the selector ends with
// exactly what it merged from the saved labels: a requirement for a key the restored
// pod no longer has as a label (a controller's) stays, as the original selected.
func unmergeLabelKeys(spec *corev1.PodSpec, saved, restored map[string]string) {
	terms := func(required []corev1.PodAffinityTerm, preferred []corev1.WeightedPodAffinityTerm) {
		for i := range required {
			t := &required[i]
			unmerge(t.LabelSelector, t.MatchLabelKeys, t.MismatchLabelKeys, saved, restored)
		}
		for i := range preferred {
			t := &preferred[i].PodAffinityTerm
			unmerge(t.LabelSelector, t.MatchLabelKeys, t.MismatchLabelKeys, saved, restored)
		}
	}
	if a := spec.Affinity; a != nil {
		if p := a.PodAffinity; p != nil {
			terms(p.RequiredDuringSchedulingIgnoredDuringExecution, p.PreferredDuringSchedulingIgnoredDuringExecution)
		}
		if p := a.PodAntiAffinity; p != nil {
			terms(p.RequiredDuringSchedulingIgnoredDuringExecution, p.PreferredDuringSchedulingIgnoredDuringExecution)
		}
	}
	for i := range spec.TopologySpreadConstraints {
		c := &spec.TopologySpreadConstraints[i]
		unmerge(c.LabelSelector, c.MatchLabelKeys, nil, saved, restored)
	}
}

// unmerge takes out of sel the requirements merged from the saved labels for the keys of
// match and mismatch that the restored labels still have (see unmergeLabelKeys).
func unmerge(sel *metav1.LabelSelector, match, mismatch []string, saved, restored map[string]string) {
	if sel == nil {
		return
	}
	type merged struct {
		req   metav1.LabelSelectorRequirement
		again bool // the API server merges it again from the restored labels
	}
	var tail []merged
	add := func(keys []string, op metav1.LabelSelectorOperator) {
		for _, k := range keys {
			if v, ok := saved[k]; ok {
				rv, has := restored[k]
				again := has && rv == v
				tail = append(tail, merged{metav1.LabelSelectorRequirement{Key: k, Operator: op, Values: []string{v}}, again})
			}
		}
	}
	add(match, metav1.LabelSelectorOpIn)
	add(mismatch, metav1.LabelSelectorOpNotIn)
	n := len(sel.MatchExpressions) - len(tail)
	if len(tail) == 0 || n < 0 {
		return
	}
	for i, m := range tail {
		if !equality.Semantic.DeepEqual(sel.MatchExpressions[n+i], m.req) {
			return // not merged by the API server as the labels are now: left as saved
		}
	}
	kept := sel.MatchExpressions[:n:n]
	for _, m := range tail {
		if !m.again {
			kept = append(kept, m.req)
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	sel.MatchExpressions = kept
}

// restoredMeta is the metadata of a restored object: the saved labels and annotations
// plus the restore's marks; nothing the server sets.
func restoredMeta(saved metav1.ObjectMeta, ns, name, restoreID, from string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{
		Name:        name,
		Namespace:   ns,
		Labels:      copyMap(saved.Labels),
		Annotations: copyMap(saved.Annotations),
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Labels[LabelRestore] = restoreID
	m.Annotations[AnnotationRestoredFrom] = from
	return m
}
