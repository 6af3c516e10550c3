package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SavedPod returns the part of a pod needed to recreate it: the full spec (containers,
// init containers, env, volumes, security context, restart policy, ...), labels and
// annotations; without what the server sets (uid, resourceVersion, timestamps, managed
// fields, owner references, node, status) and without the service-account token volume
// the API server injects, which it injects again when the pod is recreated.
func SavedPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: savedMeta(p.ObjectMeta),
		Spec:       *p.Spec.DeepCopy(),
	}
	s := &out.Spec
	s.NodeName = ""
	s.EphemeralContainers = nil // cannot be set at creation
	if s.PriorityClassName != "" {
		s.Priority = nil // admission computes it from the class again
	}
	tokens := map[string]bool{}
	vols := s.Volumes[:0]
	for _, v := range s.Volumes {
		if isServiceAccountToken(v) {
			tokens[v.Name] = true
			continue
		}
		vols = append(vols, v)
	}
	s.Volumes = vols
	if len(s.Volumes) == 0 {
		s.Volumes = nil
	}
	for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range cs {
			cs[i].VolumeMounts = withoutMounts(cs[i].VolumeMounts, tokens)
		}
	}
	return out
}

// SavedClaim returns a claim's definition without server-set fields and binding
// annotations; spec.volumeName still names the original volume.
func SavedClaim(c *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	out := &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: savedMeta(c.ObjectMeta),
		Spec:       *c.Spec.DeepCopy(),
	}
	for k := range out.Annotations {
		if strings.HasPrefix(k, "pv.kubernetes.io/") || strings.HasSuffix(k, "storage-provisioner") {
			delete(out.Annotations, k)
		}
	}
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	return out
}

// SavedVolume returns a persistent volume's definition without server-set fields; its
// claim reference keeps only the claim's namespace and name.
func SavedVolume(pv *corev1.PersistentVolume) *corev1.PersistentVolume {
	out := &corev1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: savedMeta(pv.ObjectMeta),
		Spec:       *pv.Spec.DeepCopy(),
	}
	if r := out.Spec.ClaimRef; r != nil {
		out.Spec.ClaimRef = &corev1.ObjectReference{Kind: r.Kind, APIVersion: r.APIVersion, Namespace: r.Namespace, Name: r.Name}
	}
	for k := range out.Annotations {
		if strings.HasPrefix(k, "pv.kubernetes.io/") {
			delete(out.Annotations, k)
		}
	}
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	return out
}

// SavedConfigMap returns a ConfigMap's definition (data, binary data, immutable, labels
// and annotations) without what the server sets (uid, resourceVersion, timestamps,
// managed fields) and without owner references: the owners are not restored with it.
func SavedConfigMap(c *corev1.ConfigMap) *corev1.ConfigMap {
	out := c.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}
	out.ObjectMeta = savedMeta(c.ObjectMeta)
	return out
}

// SavedSecret returns a Secret's definition (type, data, immutable, labels and
// annotations) as SavedConfigMap does a ConfigMap's. Its data is a secret: it is saved
// into the record as every definition is (see snapshot-metadata).
func SavedSecret(s *corev1.Secret) *corev1.Secret {
	out := s.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
	out.ObjectMeta = savedMeta(s.ObjectMeta)
	out.StringData = nil // write-only: the server folds it into data
	return out
}

// SavedServiceAccount returns a ServiceAccount's definition as SavedConfigMap does a
// ConfigMap's, without the token Secrets Kubernetes generated for it
// (<name>-token-<suffix>), which the token controller makes again where it still does.
func SavedServiceAccount(sa *corev1.ServiceAccount) *corev1.ServiceAccount {
	out := sa.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	out.ObjectMeta = savedMeta(sa.ObjectMeta)
	out.Secrets = withoutTokenSecrets(sa.Name, out.Secrets)
	return out
}

// withoutTokenSecrets drops the references to the token Secrets generated for
// ServiceAccount name.
func withoutTokenSecrets(name string, refs []corev1.ObjectReference) []corev1.ObjectReference {
	var out []corev1.ObjectReference
	for _, r := range refs {
		if !strings.HasPrefix(r.Name, name+"-token-") {
			out = append(out, r)
		}
	}
	return out
}

func savedMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, Labels: copyMap(m.Labels), Annotations: copyMap(m.Annotations)}
	delete(out.Annotations, corev1.LastAppliedConfigAnnotation)
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	return out
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// isServiceAccountToken recognises the projected volume the API server injects
// (kube-api-access-*: a service account token, the root CA and the namespace).
func isServiceAccountToken(v corev1.Volume) bool {
	if v.Projected == nil || !strings.HasPrefix(v.Name, "kube-api-access-") {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

func withoutMounts(ms []corev1.VolumeMount, drop map[string]bool) []corev1.VolumeMount {
	if len(drop) == 0 {
		return ms
	}
	out := ms[:0]
	for _, m := range ms {
		if !drop[m.Name] {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
