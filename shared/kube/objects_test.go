package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podguard/podguard/shared/checkpoint"
)

func liveMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("u-1"), ResourceVersion: "42",
		CreationTimestamp: metav1.Now(), Labels: map[string]string{"app": "web"},
		Annotations:     map[string]string{"team": "a", corev1.LastAppliedConfigAnnotation: "{...}"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web"}},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}
}

func checkSavedMeta(t *testing.T, kind string, m metav1.ObjectMeta) {
	t.Helper()
	if m.Name == "" || m.Namespace != "shop" || m.UID != "" || m.ResourceVersion != "" || !m.CreationTimestamp.IsZero() ||
		len(m.OwnerReferences) != 0 || len(m.ManagedFields) != 0 || m.Labels["app"] != "web" || m.Annotations["team"] != "a" {
		t.Errorf("saved %s metadata %+v", kind, m)
	}
	if _, ok := m.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		t.Errorf("saved %s keeps the last-applied annotation", kind)
	}
}

func TestSavedDependencies(t *testing.T) {
	yes := true
	cm := SavedConfigMap(&corev1.ConfigMap{ObjectMeta: liveMeta("cfg"), Data: map[string]string{"mode": "prod"}, BinaryData: map[string][]byte{"b": {1}}, Immutable: &yes})
	checkSavedMeta(t, "ConfigMap", cm.ObjectMeta)
	if cm.Kind != "ConfigMap" || cm.Data["mode"] != "prod" || cm.BinaryData["b"][0] != 1 || !*cm.Immutable {
		t.Errorf("saved ConfigMap %+v", cm)
	}
	sec := SavedSecret(&corev1.Secret{ObjectMeta: liveMeta("db"), Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"password": []byte("s3cret")}, StringData: map[string]string{"x": "y"}})
	checkSavedMeta(t, "Secret", sec.ObjectMeta)
	if sec.Kind != "Secret" || sec.Type != corev1.SecretTypeBasicAuth || string(sec.Data["password"]) != "s3cret" || sec.StringData != nil {
		t.Errorf("saved Secret %+v", sec)
	}
	sa := SavedServiceAccount(&corev1.ServiceAccount{ObjectMeta: liveMeta("app-sa"), AutomountServiceAccountToken: &yes,
		Secrets:          []corev1.ObjectReference{{Name: "app-sa-token-x7k2q"}, {Name: "mountable"}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "registry"}}})
	checkSavedMeta(t, "ServiceAccount", sa.ObjectMeta)
	if sa.Kind != "ServiceAccount" || len(sa.Secrets) != 1 || sa.Secrets[0].Name != "mountable" || sa.ImagePullSecrets[0].Name != "registry" || !*sa.AutomountServiceAccountToken {
		t.Errorf("saved ServiceAccount %+v: generated token Secrets are dropped, the rest kept", sa)
	}
}

func TestRestoredObject(t *testing.T) {
	saved := checkpoint.ObjectInfo{Secret: SavedSecret(&corev1.Secret{ObjectMeta: liveMeta("db"), Data: map[string][]byte{"password": []byte("s3cret")}})}
	got, err := RestoredObject(saved, "shop-dr", "r-1")
	if err != nil {
		t.Fatal(err)
	}
	s := got.Secret
	if got.Kind() != "Secret" || got.Name() != "db" || s.Namespace != "shop-dr" || s.Labels[LabelRestore] != "r-1" || s.Labels["app"] != "web" ||
		s.Annotations[AnnotationRestoredFrom] != "shop/db" || string(s.Data["password"]) != "s3cret" {
		t.Fatalf("restored %+v", s)
	}
	if saved.Secret.Namespace != "shop" || saved.Secret.Labels[LabelRestore] != "" {
		t.Fatalf("the saved object was modified: %+v", saved.Secret)
	}
	if !SameContent(got, saved) {
		t.Fatal("restored and saved differ in content")
	}
	for _, bad := range []checkpoint.ObjectInfo{{}, {ConfigMap: &corev1.ConfigMap{}, Secret: &corev1.Secret{}}, {ConfigMap: &corev1.ConfigMap{}}} {
		if _, err := RestoredObject(bad, "shop-dr", "r-1"); err == nil {
			t.Errorf("restored %+v", bad)
		}
	}
	if _, err := RestoredObject(saved, "Not_A_Namespace", "r-1"); err == nil {
		t.Error("restored into an invalid namespace")
	}
}

func TestSameContent(t *testing.T) {
	yes, no := true, false
	cm := func(data map[string]string, imm *bool) checkpoint.ObjectInfo {
		return checkpoint.ObjectInfo{ConfigMap: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Labels: map[string]string{"any": "thing"}}, Data: data, Immutable: imm}}
	}
	sec := func(typ corev1.SecretType, v string) checkpoint.ObjectInfo {
		return checkpoint.ObjectInfo{Secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Type: typ, Data: map[string][]byte{"k": []byte(v)}}}
	}
	sa := func(automount *bool, secrets ...string) checkpoint.ObjectInfo {
		a := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}, AutomountServiceAccountToken: automount}
		for _, s := range secrets {
			a.Secrets = append(a.Secrets, corev1.ObjectReference{Name: s})
		}
		return checkpoint.ObjectInfo{ServiceAccount: a}
	}
	for _, c := range []struct {
		name string
		a, b checkpoint.ObjectInfo
		same bool
	}{
		{"same data, other metadata", cm(map[string]string{"a": "1"}, nil), checkpoint.ObjectInfo{ConfigMap: &corev1.ConfigMap{Data: map[string]string{"a": "1"}}}, true},
		{"no data and empty data", cm(nil, nil), cm(map[string]string{}, &no), true},
		{"other value", cm(map[string]string{"a": "1"}, nil), cm(map[string]string{"a": "2"}, nil), false},
		{"more keys", cm(map[string]string{"a": "1"}, nil), cm(map[string]string{"a": "1", "b": "2"}, nil), false},
		{"immutable", cm(nil, &yes), cm(nil, nil), false},
		{"secret: Opaque is the default type", sec("", "v"), sec(corev1.SecretTypeOpaque, "v"), true},
		{"secret: other type", sec(corev1.SecretTypeOpaque, "v"), sec(corev1.SecretTypeTLS, "v"), false},
		{"secret: other value", sec("", "v"), sec("", "w"), false},
		{"service account: generated tokens do not count", sa(nil, "app-token-abcde"), sa(&yes), true},
		{"service account: mountable secrets", sa(nil, "creds"), sa(nil), false},
		{"service account: automount", sa(&no), sa(nil), false},
		{"other kinds", cm(nil, nil), sec("", ""), false},
	} {
		if got := SameContent(c.a, c.b); got != c.same {
			t.Errorf("%s: SameContent = %v, want %v", c.name, got, c.same)
		}
	}
}
