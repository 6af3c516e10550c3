package kube

import (
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/podguard/podguard/shared/graph"
)

// What Kubernetes creates in every namespace, and a pod therefore finds wherever it is
// restored: the resolver does not protect it.
const (
	// DefaultServiceAccount is the ServiceAccount a pod runs as when it names none.
	DefaultServiceAccount = "default"
	// RootCAConfigMap is the ConfigMap holding the cluster's CA that the API server's
	// service-account volume (kube-api-access-*) projects into every pod.
	RootCAConfigMap = "kube-root-ca.crt"
)

// objectRef is one object of a pod's namespace that the pod references: a ConfigMap, a
// Secret or its ServiceAccount.
type objectRef struct {
	typ  string // graph.ConfigMapType, graph.SecretType or graph.ServiceAccountType
	name string
	// optional: every reference to the object is marked `optional: true`, so the pod
	// starts without it.
	optional bool
	// via says where the pod requires the object ("env DB_PASSWORD of container app"):
	// its references not marked optional.
	via []string
}

// podReferences lists the ConfigMaps, Secrets and ServiceAccount a pod references, each
// once, by type (ConfigMaps, Secrets, ServiceAccount) then name: the ConfigMaps and
// Secrets of its volumes (configMap, secret and projected sources, and the Secrets other
// volume plugins authenticate with: volumeSecret), of its containers' env
// (configMapKeyRef, secretKeyRef) and envFrom, in containers, init containers and
// ephemeral containers, its imagePullSecrets, and its ServiceAccount.
//
// What Kubernetes creates in every namespace is left out: the `default` ServiceAccount
// and the `kube-root-ca.crt` ConfigMap. (Service-account-token Secrets are left out too,
// once read: a Secret's type is not in the pod.)
func podReferences(p *corev1.Pod) []objectRef {
	type key struct{ typ, name string }
	refs := map[key]*objectRef{}
	required := map[key][]string{}
	add := func(typ, name string, opt *bool, via string) {
		if name == "" || (typ == graph.ConfigMapType && name == RootCAConfigMap) || (typ == graph.ServiceAccountType && name == DefaultServiceAccount) {
			return
		}
		k := key{typ, name}
		if refs[k] == nil {
			refs[k] = &objectRef{typ: typ, name: name}
		}
		if opt == nil || !*opt {
			required[k] = appendOnce(required[k], via)
		}
	}
	s := &p.Spec
	for _, v := range s.Volumes {
		via := "volume " + v.Name
		switch {
		case v.ConfigMap != nil:
			add(graph.ConfigMapType, v.ConfigMap.Name, v.ConfigMap.Optional, via)
		case v.Secret != nil:
			add(graph.SecretType, v.Secret.SecretName, v.Secret.Optional, via)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					add(graph.ConfigMapType, src.ConfigMap.Name, src.ConfigMap.Optional, via)
				}
				if src.Secret != nil {
					add(graph.SecretType, src.Secret.Name, src.Secret.Optional, via)
				}
			}
		default:
			if name := volumeSecret(v.VolumeSource); name != "" {
				add(graph.SecretType, name, nil, via)
			}
		}
	}
	container := func(kind string, c *corev1.Container) {
		of := " of " + kind + " " + c.Name
		for _, env := range c.Env {
			if f := env.ValueFrom; f != nil {
				if r := f.ConfigMapKeyRef; r != nil {
					add(graph.ConfigMapType, r.Name, r.Optional, "env "+env.Name+of)
				}
				if r := f.SecretKeyRef; r != nil {
					add(graph.SecretType, r.Name, r.Optional, "env "+env.Name+of)
				}
			}
		}
		for _, from := range c.EnvFrom {
			if r := from.ConfigMapRef; r != nil {
				add(graph.ConfigMapType, r.Name, r.Optional, "envFrom"+of)
			}
			if r := from.SecretRef; r != nil {
				add(graph.SecretType, r.Name, r.Optional, "envFrom"+of)
			}
		}
	}
	for i := range s.InitContainers {
		container("init container", &s.InitContainers[i])
	}
	for i := range s.Containers {
		container("container", &s.Containers[i])
	}
	for i := range s.EphemeralContainers {
		container("ephemeral container", (*corev1.Container)(&s.EphemeralContainers[i].EphemeralContainerCommon))
	}
	for _, r := range s.ImagePullSecrets {
		add(graph.SecretType, r.Name, nil, "imagePullSecrets")
	}
	sa := s.ServiceAccountName
	if sa == "" {
		sa = s.DeprecatedServiceAccount
	}
	add(graph.ServiceAccountType, sa, nil, "serviceAccountName")

	out := make([]objectRef, 0, len(refs))
	for k, r := range refs {
		r.optional, r.via = len(required[k]) == 0, required[k]
		out = append(out, *r)
	}
	order := map[string]int{}
	for i, typ := range graph.DependencyTypes() {
		order[typ] = i
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].typ != out[j].typ {
			return order[out[i].typ] < order[out[j].typ]
		}
		return out[i].name < out[j].name
	})
	return out
}

// missingReason is the reason of a problem with a referenced object that does not
// exist: where the pod references it.
func (r objectRef) missingReason() string {
	return "not found; referenced by " + strings.Join(r.via, ", ")
}

func appendOnce(ss []string, s string) []string {
	if slices.Contains(ss, s) {
		return ss
	}
	return append(ss, s)
}

// volumeSecret is the Secret of the pod's namespace that a volume plugin authenticates
// with, "" for none: an inline CSI volume's nodePublishSecretRef, and the secretRef of
// cephfs, rbd, iscsi, flexVolume, scaleIO and storageos, and azureFile's secretName. The
// kubelet cannot mount the volume without it.
func volumeSecret(v corev1.VolumeSource) string {
	local := func(r *corev1.LocalObjectReference) string {
		if r == nil {
			return ""
		}
		return r.Name
	}
	switch {
	case v.CSI != nil:
		return local(v.CSI.NodePublishSecretRef)
	case v.CephFS != nil:
		return local(v.CephFS.SecretRef)
	case v.RBD != nil:
		return local(v.RBD.SecretRef)
	case v.ISCSI != nil:
		return local(v.ISCSI.SecretRef)
	case v.FlexVolume != nil:
		return local(v.FlexVolume.SecretRef)
	case v.ScaleIO != nil:
		return local(v.ScaleIO.SecretRef)
	case v.StorageOS != nil:
		return local(v.StorageOS.SecretRef)
	case v.AzureFile != nil:
		return v.AzureFile.SecretName
	}
	return ""
}
