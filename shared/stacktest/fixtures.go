package stacktest

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/shared/graph"
)

// CinderPV is a PersistentVolume of a Cinder volume, CSI or in-tree, pre-bound to the
// claim ns/claim so the PV controller binds the pair at once.
func CinderPV(name, volumeID string, csi bool, ns, claim string) *corev1.PersistentVolume {
	src := corev1.PersistentVolumeSource{Cinder: &corev1.CinderPersistentVolumeSource{VolumeID: volumeID}}
	if csi {
		src = corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: graph.CinderCSIDriver, VolumeHandle: volumeID}}
	}
	return OtherPV(name, src, ns, claim)
}

// OtherPV is a PersistentVolume of any source, pre-bound to ns/claim.
func OtherPV(name string, src corev1.PersistentVolumeSource, ns, claim string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim},
			PersistentVolumeSource:        src,
		},
	}
}

// Claim is a PersistentVolumeClaim; with a non-empty pv it is pre-bound to that PV.
func Claim(ns, name, pv string) *corev1.PersistentVolumeClaim {
	empty := ""
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			StorageClassName: &empty,
			VolumeName:       pv,
		},
	}
}

// Pod is a pod placed on the kwok node (so it reaches Running without the scheduler)
// that mounts the given claims at /data/<claim>.
func Pod(ns, name string, labels map[string]string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: KwokNode,
			Containers: []corev1.Container{{
				Name: "app", Image: "busybox", Command: []string{"sleep", "infinity"},
			}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: c, MountPath: "/data/" + c})
	}
	return p
}
