// Package checkpoint holds what a checkpoint saves per resource (Karbor's "saved info"):
// the definitions of a pod, and the backup of a volume. Steps write them into the bank's
// records; the restore side reads them back.
package checkpoint

import (
	"time"

	corev1 "k8s.io/api/core/v1"
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
