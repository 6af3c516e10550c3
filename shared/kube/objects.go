package kube

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/podguard/podguard/shared/checkpoint"
)

// RestoredObject returns what restores a saved ConfigMap, Secret or ServiceAccount into
// namespace ns: the same name and content, the saved labels and annotations, and the
// restore's marks (LabelRestore, AnnotationRestoredFrom), so that a redelivered request
// recognises the object it created. info is not modified.
func RestoredObject(info checkpoint.ObjectInfo, ns, restoreID string) (checkpoint.ObjectInfo, error) {
	if err := (RestoreOptions{RestoreID: restoreID, Namespace: ns, PodName: "x"}).validate(); err != nil {
		return checkpoint.ObjectInfo{}, err
	}
	var out checkpoint.ObjectInfo
	switch {
	case info.ConfigMap != nil && info.Secret == nil && info.ServiceAccount == nil:
		c := info.ConfigMap.DeepCopy()
		c.ObjectMeta = restoredMeta(c.ObjectMeta, ns, c.Name, restoreID, from(c.Namespace, c.Name))
		out.ConfigMap = c
	case info.Secret != nil && info.ConfigMap == nil && info.ServiceAccount == nil:
		s := info.Secret.DeepCopy()
		s.ObjectMeta = restoredMeta(s.ObjectMeta, ns, s.Name, restoreID, from(s.Namespace, s.Name))
		out.Secret = s
	case info.ServiceAccount != nil && info.ConfigMap == nil && info.Secret == nil:
		sa := info.ServiceAccount.DeepCopy()
		sa.ObjectMeta = restoredMeta(sa.ObjectMeta, ns, sa.Name, restoreID, from(sa.Namespace, sa.Name))
		sa.Secrets = withoutTokenSecrets(sa.Name, sa.Secrets)
		out.ServiceAccount = sa
	default:
		return out, errors.New("the saved object is not exactly one ConfigMap, Secret or ServiceAccount")
	}
	if out.Name() == "" {
		return out, fmt.Errorf("the saved %s has no name", out.Kind())
	}
	return out, nil
}

func from(ns, name string) string { return ns + "/" + name }

// SameContent reports whether two objects of one kind hold the same content, whatever
// their metadata: a ConfigMap's data, binary data and immutability; a Secret's type,
// data and immutability; a ServiceAccount's image pull secrets, its Secrets other than
// generated tokens, and whether it mounts its token. Objects of different kinds differ.
func SameContent(a, b checkpoint.ObjectInfo) bool {
	switch {
	case a.ConfigMap != nil && b.ConfigMap != nil:
		x, y := a.ConfigMap, b.ConfigMap
		return sameStrings(x.Data, y.Data) && sameBytes(x.BinaryData, y.BinaryData) && isTrue(x.Immutable) == isTrue(y.Immutable)
	case a.Secret != nil && b.Secret != nil:
		x, y := a.Secret, b.Secret
		return secretType(x) == secretType(y) && sameBytes(x.Data, y.Data) && isTrue(x.Immutable) == isTrue(y.Immutable)
	case a.ServiceAccount != nil && b.ServiceAccount != nil:
		x, y := a.ServiceAccount, b.ServiceAccount
		automount := func(sa *corev1.ServiceAccount) bool {
			return sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken
		}
		names := func(sa *corev1.ServiceAccount) []string {
			var out []string
			for _, r := range withoutTokenSecrets(sa.Name, sa.Secrets) {
				out = append(out, r.Name)
			}
			return out
		}
		pulls := func(sa *corev1.ServiceAccount) []string {
			var out []string
			for _, r := range sa.ImagePullSecrets {
				out = append(out, r.Name)
			}
			return out
		}
		return automount(x) == automount(y) && slices.Equal(names(x), names(y)) && slices.Equal(pulls(x), pulls(y))
	}
	return false
}

func secretType(s *corev1.Secret) corev1.SecretType {
	if s.Type == "" {
		return corev1.SecretTypeOpaque
	}
	return s.Type
}

func isTrue(b *bool) bool { return b != nil && *b }

func sameStrings(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sameBytes(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
