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

// Names of the objects of AppObjects.
const (
	AppConfig         = "app-config"
	AppSecret         = "app-secret"
	AppServiceAccount = "app-sa"
	// AbsentConfig is the ConfigMap that AppPods reference as optional and that does not
	// exist.
	AbsentConfig = "absent-config"
)

// AppObjects are what the pods of AppPods reference in namespace ns: a ConfigMap, a
// Secret and a ServiceAccount, each with content of its own.
func AppObjects(ns string) (*corev1.ConfigMap, *corev1.Secret, *corev1.ServiceAccount) {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "shop"}}
	}
	return &corev1.ConfigMap{ObjectMeta: meta(AppConfig), Data: map[string]string{"mode": "production", "greeting": "hello from " + ns}},
		&corev1.Secret{ObjectMeta: meta(AppSecret), Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("s3cret of " + ns)}},
		&corev1.ServiceAccount{ObjectMeta: meta(AppServiceAccount)}
}

// AppPods are two kwok pods of namespace ns running as the ServiceAccount app-sa and
// sharing the ConfigMap and the Secret of AppObjects: web mounts the ConfigMap as a
// volume, reads the Secret into env (secretKeyRef) and takes env from the ConfigMap
// absent-config, marked optional, which does not exist; worker takes its env from the
// ConfigMap (envFrom) and pulls its image with the Secret (imagePullSecrets).
func AppPods(ns string) (web, worker *corev1.Pod) {
	optional := true
	web = Pod(ns, "web", map[string]string{"app": "web"})
	web.Spec.ServiceAccountName = AppServiceAccount
	web.Spec.Volumes = append(web.Spec.Volumes, corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: AppConfig}}}})
	c := &web.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "config", MountPath: "/etc/app"})
	c.Env = append(c.Env, corev1.EnvVar{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: AppSecret}, Key: "password"}}})
	c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: AbsentConfig}, Optional: &optional}})

	worker = Pod(ns, "worker", map[string]string{"app": "worker"})
	worker.Spec.ServiceAccountName = AppServiceAccount
	worker.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: AppSecret}}
	worker.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: AppConfig}}}}
	return web, worker
}
