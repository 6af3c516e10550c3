// Package checkpoint holds what a checkpoint saves per resource (Karbor's "saved info"):
// the definitions of a pod, of a ConfigMap, Secret or ServiceAccount a pod references,
// and the backup of a volume. Steps write them into the bank's records; the restore side
// reads them back, and records what each resource was restored into.
package checkpoint

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProviderID names podguard's protection provider in checkpoints.
const ProviderID = "b3f5e2a0-5d54-5c36-9d6a-706f64677561"

// PodInfo is the saved info of an OS::Kubernetes::Pod: what recreating it needs.
type PodInfo struct {
	Pod    *corev1.Pod                     `json:"pod"`
	Claims []*corev1.PersistentVolumeClaim `json:"claims,omitempty"`
	// Volumes are the persistent volumes behind Claims.
	Volumes []*corev1.PersistentVolume `json:"volumes,omitempty"`
}

// ObjectInfo is the saved info of an OS::Kubernetes::ConfigMap, OS::Kubernetes::Secret
// or OS::Kubernetes::ServiceAccount: the object's definition, without what the server
// sets; exactly the field of its kind is set.
type ObjectInfo struct {
	ConfigMap      *corev1.ConfigMap      `json:"configMap,omitempty"`
	Secret         *corev1.Secret         `json:"secret,omitempty"`
	ServiceAccount *corev1.ServiceAccount `json:"serviceAccount,omitempty"`
}

// Object is the object saved (the first field set); nil when none is.
func (i ObjectInfo) Object() metav1.Object {
	switch {
	case i.ConfigMap != nil:
		return i.ConfigMap
	case i.Secret != nil:
		return i.Secret
	case i.ServiceAccount != nil:
		return i.ServiceAccount
	}
	return nil
}

// Kind is the Kubernetes kind of the object saved ("ConfigMap"); "" when none is.
func (i ObjectInfo) Kind() string {
	switch {
	case i.ConfigMap != nil:
		return "ConfigMap"
	case i.Secret != nil:
		return "Secret"
	case i.ServiceAccount != nil:
		return "ServiceAccount"
	}
	return ""
}

// Name is the name of the object saved; "" when none is.
func (i ObjectInfo) Name() string {
	if o := i.Object(); o != nil {
		return o.GetName()
	}
	return ""
}

// VolumeInfo is the saved info of an OS::Cinder::Volume: its backup.
type VolumeInfo struct {
	VolumeID string `json:"volume_id"`
	BackupID string `json:"backup_id"`
	// Mode is the mode used: full or incremental.
	Mode string `json:"backup_mode"`
	// Note explains a fallback, such as an incremental backup made full because the
	// volume had no earlier backup.
	Note         string    `json:"note,omitempty"`
	SizeGiB      int       `json:"size_gib,omitempty"`
	BackupStatus string    `json:"backup_status"`
	StartedAt    time.Time `json:"started_at"`
}

// RestoredVolume is what a restore records for a volume: the new volume made from the
// backup (listed even when the restore of the volume failed, so nothing is orphaned).
type RestoredVolume struct {
	OriginalID string `json:"original_volume_id"`
	VolumeID   string `json:"volume_id,omitempty"`
	BackupID   string `json:"backup_id"`
	Name       string `json:"name,omitempty"`
}

// RestoredPod is what a restore records for a pod: the pod and the objects created for
// it.
type RestoredPod struct {
	Original          string   `json:"original"`
	Namespace         string   `json:"namespace"`
	Name              string   `json:"name"`
	Claims            []string `json:"claims,omitempty"`
	PersistentVolumes []string `json:"persistent_volumes,omitempty"`
	Phase             string   `json:"phase,omitempty"`
}

// Outcomes of a restored object (RestoredObject.Outcome).
const (
	// ObjectCreated: the restore created the object (labelled with the restore).
	ObjectCreated = "created"
	// ObjectIdentical: the target namespace held an object of the same name and content;
	// it stands for the saved one.
	ObjectIdentical = "identical"
	// ObjectKept: the target namespace held an object of the same name and other content,
	// kept as it is (existing_resources skip).
	ObjectKept = "kept"
)

// RestoredObject is what a restore records for a ConfigMap, Secret or ServiceAccount: the
// object that stands for the saved one in the target namespace, and how it came to.
type RestoredObject struct {
	Kind string `json:"kind"`
	// Original is the saved object's "namespace/name".
	Original  string `json:"original"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Outcome is ObjectCreated, ObjectIdentical or ObjectKept; empty when the object was
	// not restored.
	Outcome string `json:"outcome,omitempty"`
}
