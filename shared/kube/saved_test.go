package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func livePod() *corev1.Pod {
	prio := int32(1000)
	runAsUser := int64(1000)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web", Namespace: "shop", UID: types.UID("u-1"), ResourceVersion: "42", Generation: 3,
			CreationTimestamp: metav1.Now(), Labels: map[string]string{"app": "web"},
			Annotations:     map[string]string{"team": "a", corev1.LastAppliedConfigAnnotation: "{...}"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-1"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: corev1.PodSpec{
			NodeName: "node-1", PriorityClassName: "high", Priority: &prio, RestartPolicy: corev1.RestartPolicyAlways,
			SecurityContext:    &corev1.PodSecurityContext{RunAsUser: &runAsUser},
			ServiceAccountName: "web",
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox",
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets"}}}},
			Containers: []corev1.Container{{Name: "app", Image: "nginx",
				Env: []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "data", MountPath: "/data"}, {Name: "cfg", MountPath: "/etc/cfg"},
					{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets"}}}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}},
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
			},
			EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
}

func TestSavedPod(t *testing.T) {
	in := livePod()
	got := SavedPod(in)
	checks := []struct {
		name string
		ok   bool
	}{
		{"kind set", got.Kind == "Pod" && got.APIVersion == "v1"},
		{"name and namespace kept", got.Name == "web" && got.Namespace == "shop"},
		{"server fields dropped", got.UID == "" && got.ResourceVersion == "" && got.Generation == 0 && got.CreationTimestamp.IsZero() && got.ManagedFields == nil},
		{"owner references dropped", got.OwnerReferences == nil},
		{"labels kept", got.Labels["app"] == "web"},
		{"annotations kept, last-applied dropped", got.Annotations["team"] == "a" && len(got.Annotations) == 1},
		{"node dropped", got.Spec.NodeName == ""},
		{"priority dropped when a class names it", got.Spec.Priority == nil && got.Spec.PriorityClassName == "high"},
		{"ephemeral containers dropped", got.Spec.EphemeralContainers == nil},
		{"status dropped", got.Status.Phase == "" && got.Status.PodIP == ""},
		{"token volume dropped", len(got.Spec.Volumes) == 2 && got.Spec.Volumes[0].Name == "data" && got.Spec.Volumes[1].Name == "cfg"},
		{"token mounts dropped", len(got.Spec.Containers[0].VolumeMounts) == 2 && got.Spec.InitContainers[0].VolumeMounts == nil},
		{"env, security context, restart policy, service account kept", got.Spec.Containers[0].Env[0].Value == "prod" &&
			*got.Spec.SecurityContext.RunAsUser == 1000 && got.Spec.RestartPolicy == corev1.RestartPolicyAlways && got.Spec.ServiceAccountName == "web"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: %+v", c.name, got)
		}
	}
	if in.Spec.NodeName != "node-1" || len(in.Spec.Volumes) != 3 || len(in.Spec.Containers[0].VolumeMounts) != 3 {
		t.Fatal("SavedPod modified its input")
	}
}

func TestSavedClaimAndVolume(t *testing.T) {
	c := SavedClaim(&corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "shop", UID: "u", ResourceVersion: "1",
			Annotations: map[string]string{"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/storage-provisioner": "x", "keep": "me"}},
		Spec:   corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound},
	})
	if c.UID != "" || c.Status.Phase != "" || c.Spec.VolumeName != "pv-1" || len(c.Annotations) != 1 || c.Kind != "PersistentVolumeClaim" {
		t.Errorf("claim %+v", c)
	}
	pv := SavedVolume(&corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1", UID: "u", Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "cinder.csi.openstack.org"}},
		Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "shop", Name: "data", UID: "claim-uid", ResourceVersion: "7"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "cinder.csi.openstack.org", VolumeHandle: "v"}}},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
	})
	if pv.UID != "" || pv.Status.Phase != "" || pv.Spec.ClaimRef.UID != "" || pv.Spec.ClaimRef.Name != "data" || pv.Annotations != nil || pv.Spec.CSI.VolumeHandle != "v" {
		t.Errorf("volume %+v", pv)
	}
}
