package events

import (
	"fmt"
	"strings"
	"time"

	"github.com/podguard/podguard/shared/graph"
)

// Scope selects pods: every namespace, some namespaces, or explicit pods, optionally
// narrowed by a label selector.
type Scope struct {
	AllNamespaces bool     `json:"allNamespaces,omitempty"`
	Namespaces    []string `json:"namespaces,omitempty"`
	LabelSelector string   `json:"labelSelector,omitempty"`
	// Pods are "namespace:name" or resource ids.
	Pods []string `json:"pods,omitempty"`
}

// Check reports what the schema cannot express: exactly one of allNamespaces, namespaces
// and pods.
func (s Scope) Check() error {
	n := 0
	var set []string
	if s.AllNamespaces {
		n++
		set = append(set, "allNamespaces")
	}
	if len(s.Namespaces) > 0 {
		n++
		set = append(set, "namespaces")
	}
	if len(s.Pods) > 0 {
		n++
		set = append(set, "pods")
	}
	switch {
	case n == 0:
		return fmt.Errorf("/scope: name one of allNamespaces, namespaces or pods")
	case n > 1:
		return fmt.Errorf("/scope: %s are exclusive, name only one", strings.Join(set, " and "))
	case len(s.Pods) > 0 && s.LabelSelector != "":
		return fmt.Errorf("/scope/labelSelector: does not apply to explicit pods")
	}
	return nil
}

// PodsListRequest is the data of PodsList.
type PodsListRequest struct {
	Scope Scope `json:"scope"`
}

// ObjectRef points at a payload stored in the bank because it was too large for an event.
type ObjectRef struct {
	Container string `json:"container"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	SHA256    string `json:"sha256"`
}

// PodsListedResult is the data of PodsListed. Exactly one of Graph and GraphRef is set.
type PodsListedResult struct {
	Scope    Scope        `json:"scope"`
	Pods     int          `json:"pods"`
	Volumes  int          `json:"volumes"`
	Graph    *graph.Graph `json:"graph,omitempty"`
	GraphRef *ObjectRef   `json:"graphRef,omitempty"`
}

// PodShowRequest is the data of PodShow.
type PodShowRequest struct {
	Pod string `json:"pod"`
}

// PodShownResult is the data of PodShown.
type PodShownResult struct {
	Pod         string       `json:"pod"`
	Found       bool         `json:"found"`
	Reason      string       `json:"reason,omitempty"`
	Protectable bool         `json:"protectable"`
	Graph       *graph.Graph `json:"graph,omitempty"`
}

// Resource statuses of a checkpoint (Karbor's).
const (
	StatusProtecting = "protecting"
	StatusAvailable  = "available"
	StatusError      = "error"
	StatusDeleting   = "deleting"
	StatusDeleted    = "deleted"
	StatusRestoring  = "restoring"
	// StatusErrorDeleting is a checkpoint whose deletion failed.
	StatusErrorDeleting = "error-deleting"
)

// VolumeParameters are the options of OS::Cinder::Volume (Karbor's Cinder protection
// plugin options).
type VolumeParameters struct {
	BackupName  string `json:"backup_name,omitempty"`
	Description string `json:"description,omitempty"`
	// BackupMode is full or incremental.
	BackupMode string `json:"backup_mode,omitempty"`
	Container  string `json:"container,omitempty"`
	Force      bool   `json:"force,omitempty"`
}

// PodParameters are the options of OS::Kubernetes::Pod.
type PodParameters struct {
	BackupName  string `json:"backup_name,omitempty"`
	Description string `json:"description,omitempty"`
}

// Parameters are a plan's options per resource type.
type Parameters struct {
	Pod    PodParameters    `json:"OS::Kubernetes::Pod"`
	Volume VolumeParameters `json:"OS::Cinder::Volume"`
}

// Plan is what to protect and how.
type Plan struct {
	ID         string     `json:"id,omitempty"`
	Name       string     `json:"name,omitempty"`
	Scope      Scope      `json:"scope"`
	Parameters Parameters `json:"parameters"`
	// Retention, when set, deletes the plan's older checkpoints (it needs ID).
	Retention *Retention `json:"retention,omitempty"`
}

// Retention is a plan's retention policy, Karbor's retention_protect: an available
// checkpoint of the plan is deleted when either rule says so; 0 means no limit.
type Retention struct {
	// MaxBackups keeps the newest MaxBackups available checkpoints.
	MaxBackups int `json:"max_backups,omitempty"`
	// RetentionDuration keeps the available checkpoints younger than this many days.
	RetentionDuration int `json:"retention_duration,omitempty"`
}

// ProtectRequest is the data of ProtectRequested.
type ProtectRequest struct {
	Plan Plan `json:"plan"`
	// Occurrence names a scheduled firing (a PingSource's schedule time); two requests
	// of the same plan and occurrence make one checkpoint.
	Occurrence string `json:"occurrence,omitempty"`
}

// StepRequest is the data of MetadataSnapshot and VolumeBackup: a batch of resources of
// one type in a checkpoint (MetadataSnapshot: pods, or the ConfigMaps, Secrets or
// ServiceAccounts they reference), and the time by which the step must be finished.
type StepRequest struct {
	Checkpoint string            `json:"checkpoint"`
	Batch      string            `json:"batch"`
	Resources  []graph.Resource  `json:"resources"`
	Parameters *VolumeParameters `json:"parameters,omitempty"`
	Deadline   time.Time         `json:"deadline"`
}

// StepResult is the data of MetadataSnapshotted and VolumeBackedUp: the outcome of every
// resource of a batch.
type StepResult struct {
	Checkpoint string           `json:"checkpoint"`
	Batch      string           `json:"batch"`
	Results    []ResourceResult `json:"results"`
}

// ResourceResult is the outcome of one resource.
type ResourceResult struct {
	Key    string `json:"key"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// CheckpointFinishedResult is the data of CheckpointFinished.
type CheckpointFinishedResult struct {
	Checkpoint string `json:"checkpoint"`
	Plan       string `json:"plan,omitempty"`
	Status     string `json:"status"`
	Resources  int    `json:"resources"`
	// Failed lists every failure: each resource that failed, each problem of the graph
	// (a claim or persistent volume that does not lead to a Cinder volume: the pod's data
	// is not all in the checkpoint), and a scope with no protectable pod.
	Failed []FailedResource `json:"failed,omitempty"`
	// Excluded are the pods of the scope left out because they are not protectable
	// (phase Pending, Failed or Unknown), as Karbor left them out.
	Excluded []graph.Excluded `json:"excluded,omitempty"`
	// MoreFailed and MoreExcluded count those the event leaves out (it lists at most 100
	// of each); the checkpoint's view lists them all.
	MoreFailed   int `json:"more_failed,omitempty"`
	MoreExcluded int `json:"more_excluded,omitempty"`
	// RequestedBy is who asked for the checkpoint, as its index records it (see
	// ExtCaller); absent when the request named no one.
	RequestedBy string `json:"requested_by,omitempty"`
}

// Progress is how far a checkpoint's protect, or a restore, has come, counted from what
// the bank records: a resource is done once the result of its batch was accepted and it
// did not fail, failed once a failure is recorded for it (for a pod, also one of its
// volumes that could not be resolved), and waiting otherwise.
type Progress struct {
	// Resources counts the resources of each type (OS::Kubernetes::Pod,
	// OS::Cinder::Volume, and the ConfigMaps, Secrets and ServiceAccounts pods
	// reference, when the checkpoint holds any): done, failed and total.
	Resources map[string]Count `json:"resources"`
	// Bytes counts the sizes of the volumes, as the listing recorded them.
	Bytes Bytes `json:"bytes"`
	// ElapsedSeconds is the time since the operation was requested, up to its end once
	// it ended.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// RemainingSeconds estimates the time left at the rate so far (see EstimateBasis);
	// absent when nothing measured is done yet, and once the operation ended.
	RemainingSeconds *float64 `json:"remaining_seconds,omitempty"`
	// EstimateBasis is what the estimate extrapolates: "bytes" (of the volumes done or
	// failed) or "resources"; the longer estimate of the two wins.
	EstimateBasis string `json:"estimate_basis,omitempty"`
}

// Finished counts the resources done or failed, over every type.
func (p Progress) Finished() int {
	n := 0
	for _, c := range p.Resources {
		n += c.Done + c.Failed
	}
	return n
}

// Count is the progress of the resources of one type.
type Count struct {
	Done   int `json:"done"`
	Failed int `json:"failed"`
	Total  int `json:"total"`
}

// Bytes is the progress of the volumes by size. Total is the size of every volume whose
// size is known; Unsized counts the others (an in-tree cinder volume written into the pod,
// or a graph listed before sizes were recorded), which are in no byte count.
type Bytes struct {
	Done    int64 `json:"done"`
	Failed  int64 `json:"failed"`
	Total   int64 `json:"total"`
	Unsized int   `json:"unsized,omitempty"`
}

// Estimate bases (Progress.EstimateBasis).
const (
	EstimateByBytes     = "bytes"
	EstimateByResources = "resources"
)

// CheckpointProgressedResult is the data of CheckpointProgressed.
type CheckpointProgressedResult struct {
	Checkpoint string   `json:"checkpoint"`
	Plan       string   `json:"plan,omitempty"`
	Progress   Progress `json:"progress"`
}

// FailedResource names a resource that failed and why.
type FailedResource struct {
	Key    string `json:"key"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

// Restore statuses (Karbor's).
const (
	RestoreInProgress = "in_progress"
	RestoreSuccess    = "success"
	RestoreFail       = "fail"
)

// RestoreParameters are Karbor's restore options, plus a target namespace and a name
// for each restored pod.
type RestoreParameters struct {
	RestoreName        string `json:"restore_name,omitempty"`
	RestoreDescription string `json:"restore_description,omitempty"`
	// Namespace receives the restored pods; empty means each pod's original namespace.
	Namespace string `json:"namespace,omitempty"`
	// Names maps an original pod ("namespace:name") to the name of its restored pod.
	Names map[string]string `json:"names,omitempty"`
	// ExistingResources says what to do with a ConfigMap, Secret or ServiceAccount of a
	// restored pod when the target namespace holds one of the same name with other
	// content: ExistingSkip (the default, "") keeps it, ExistingFail fails the resource.
	// One with the same content counts as restored either way.
	ExistingResources string `json:"existing_resources,omitempty"`
	// CreateNamespace lets the restore create a target namespace that does not exist
	// (labelled with the restore); without it, the pods and objects bound for a missing
	// namespace fail, and the front door asks the caller's right to create namespaces
	// only when it is set.
	CreateNamespace bool `json:"create_namespace,omitempty"`
}

// Values of RestoreParameters.ExistingResources.
const (
	// ExistingSkip keeps an object of the same name and other content that the target
	// namespace holds; the resource is available, and its reason says it was kept.
	ExistingSkip = "skip"
	// ExistingFail fails the resource instead, leaving the existing object as it is.
	ExistingFail = "fail"
)

// RestoreRequest is the data of RestoreRequested.
type RestoreRequest struct {
	Checkpoint string            `json:"checkpoint"`
	Parameters RestoreParameters `json:"parameters"`
}

// RestoreStepRequest is the data of VolumeRestore and PodRecreate: a batch of the
// checkpoint's resources to restore (PodRecreate: pods, or the ConfigMaps, Secrets or
// ServiceAccounts they reference).
type RestoreStepRequest struct {
	Restore    string            `json:"restore"`
	Checkpoint string            `json:"checkpoint"`
	Batch      string            `json:"batch"`
	Resources  []graph.Resource  `json:"resources"`
	Parameters RestoreParameters `json:"parameters"`
	Deadline   time.Time         `json:"deadline"`
	// Volumes is never sent: recreate-pod reads the restored volumes from the
	// restore-volume records, and refuses a request that names any.
	Volumes map[string]string `json:"volumes,omitempty"`
}

// RestoreStepResult is the data of VolumeRestored and PodRecreated.
type RestoreStepResult struct {
	Restore string           `json:"restore"`
	Batch   string           `json:"batch"`
	Results []ResourceResult `json:"results"`
}

// RestoreFinishedResult is the data of RestoreFinished.
type RestoreFinishedResult struct {
	Restore    string           `json:"restore"`
	Checkpoint string           `json:"checkpoint"`
	Status     string           `json:"status"`
	Failed     []FailedResource `json:"failed,omitempty"`
	// RequestedBy is who asked for the restore, as its index records it (see ExtCaller);
	// absent when the request named no one.
	RequestedBy string `json:"requested_by,omitempty"`
}

// RestoreProgressedResult is the data of RestoreProgressed.
type RestoreProgressedResult struct {
	Restore    string   `json:"restore"`
	Checkpoint string   `json:"checkpoint"`
	Progress   Progress `json:"progress"`
}

// DeleteRequest is the data of DeleteRequested.
type DeleteRequest struct {
	Checkpoint string `json:"checkpoint"`
}

// CheckpointDeletedResult is the data of CheckpointDeleted.
type CheckpointDeletedResult struct {
	Checkpoint string           `json:"checkpoint"`
	Status     string           `json:"status"`
	Failed     []FailedResource `json:"failed,omitempty"`
	// RequestedBy is who asked for the deletion's last attempt, as the deletion's index
	// records it (see ExtCaller): a caller, or "retention of plan <id>"; absent when the
	// request named no one.
	RequestedBy string `json:"requested_by,omitempty"`
}

// Trigger formats.
const (
	// FormatCalendar is Karbor's calendar format: an iCal RRULE.
	FormatCalendar = "calendar"
)

// Trigger says when a schedule runs: Karbor's time trigger properties, plus a time zone.
type Trigger struct {
	// Format is "calendar" (the default).
	Format string `json:"format,omitempty"`
	// Pattern is an iCal recurrence: a VEVENT with RRULE lines, RRULE lines, or a bare
	// rule such as FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=2.
	Pattern string `json:"pattern"`
	// StartTime is when occurrences begin; it also gives the minute and second of rules
	// without BYMINUTE or BYSECOND. RFC 3339, or Karbor's "2006-01-02 15:04:05" (read in
	// Timezone). Default: when the schedule is saved.
	StartTime string `json:"start_time,omitempty"`
	// EndTime, if set, is when occurrences end.
	EndTime string `json:"end_time,omitempty"`
	// Window is how late, in seconds, an occurrence may still run; one missed by more is
	// skipped and reported, not run late.
	Window int `json:"window,omitempty"`
	// Timezone is the IANA zone the rule is evaluated in (default UTC): BYHOUR=2 is 02:00
	// there, summer time included.
	Timezone string `json:"timezone,omitempty"`
}

// Schedule is a plan protected at the occurrences of a trigger.
type Schedule struct {
	ID      string  `json:"id"`
	Name    string  `json:"name,omitempty"`
	Plan    Plan    `json:"plan"`
	Trigger Trigger `json:"trigger"`
}

// ScheduleRef is the data of ScheduleDelete.
type ScheduleRef struct {
	ID string `json:"id"`
}

// ScheduleSavedResult is the data of ScheduleSaved.
type ScheduleSavedResult struct {
	Schedule Schedule    `json:"schedule"`
	Next     []time.Time `json:"next"`
}

// ScheduleDeletedResult is the data of ScheduleDeleted.
type ScheduleDeletedResult struct {
	ID    string `json:"id"`
	Found bool   `json:"found"`
}

// ScheduleSkippedResult is the data of ScheduleSkipped.
type ScheduleSkippedResult struct {
	Schedule string `json:"schedule"`
	Plan     string `json:"plan"`
	// Occurrences are the skipped occurrences, oldest first (at most MaxReportedSkips);
	// More counts those left out.
	Occurrences []time.Time `json:"occurrences"`
	More        int         `json:"more,omitempty"`
	Reason      string      `json:"reason"`
}

// MaxReportedSkips bounds the occurrences one ScheduleSkipped lists.
const MaxReportedSkips = 20

// DeadLettersListRequest is the data of DeadLettersList.
type DeadLettersListRequest struct {
	// Type, when set, lists only the dead letters of events of this type.
	Type   string `json:"type,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	Marker string `json:"marker,omitempty"`
}

// DeadLetterReplayRequest is the data of DeadLetterReplay.
type DeadLetterReplayRequest struct {
	DeadLetter string `json:"deadletter"`
}

// DeadLetterReplayedResult is the data of DeadLetterReplayed.
type DeadLetterReplayedResult struct {
	DeadLetter string `json:"deadletter"`
	// Event names the event sent again: its original id, source and type.
	Event      EventRef  `json:"event"`
	ReplayedAt time.Time `json:"replayed_at"`
}

// EventRef names a CloudEvent: source and id identify it, type says what it is.
type EventRef struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Type   string `json:"type"`
}

// DeadLettersListedResult is the data of DeadLettersListed. Next, when not empty, is the
// marker of the next page.
type DeadLettersListedResult struct {
	DeadLetters []DeadLetterSummary `json:"deadletters"`
	Next        string              `json:"next"`
}

// DeadLetterSummary is a dead letter in a list.
type DeadLetterSummary struct {
	ID         string    `json:"id"`
	RecordedAt time.Time `json:"recorded_at"`
	Event      EventRef  `json:"event"`
	// Code, Destination and Error are the last HTTP status of the delivery that failed
	// (knativeerrorcode), where it went (knativeerrordest) and the start of the response
	// (knativeerrordata, decoded), as first recorded.
	Code        int    `json:"code,omitempty"`
	Destination string `json:"destination,omitempty"`
	Error       string `json:"error,omitempty"`
	// Failures counts the failed deliveries of the event that reached the dead-letter
	// sink: more than one when it failed again after a replay or a re-send.
	Failures     int       `json:"failures"`
	LastFailedAt time.Time `json:"last_failed_at,omitzero"`
	// Replays counts the times it was sent again.
	Replays        int       `json:"replays"`
	LastReplayedAt time.Time `json:"last_replayed_at,omitzero"`
}
