// Package events is podguard's event catalog: the CloudEvent types its functions consume
// and emit, their Go payloads, and a JSON Schema for each (embedded, and named by the
// event's dataschema attribute).
//
// A request is validated against its schema before a step sees it:
//
//	v, err := events.NewValidator()
//	...
//	if err := v.Validate(e); err != nil { // names the offending field
//		return cloudevents.NewHTTPResult(400, "%v", err)
//	}
package events

import (
	"sort"
)

// Source is the CloudEvents source of events podguard emits; a function appends its name.
const Source = "podguard.dev/"

// Event types.
const (
	// PodsList asks list-pods for the protectable pods of a scope and their volumes.
	PodsList = "dev.podguard.pods.list"
	// PodsListed answers PodsList with the dependency graph, inline or as a bank reference.
	PodsListed = "dev.podguard.pods.listed"
	// PodShow asks list-pods for one pod, by id or "namespace:name".
	PodShow = "dev.podguard.pod.show"
	// PodShown answers PodShow; an unknown pod gives found=false with a reason.
	PodShown = "dev.podguard.pod.shown"

	// ProtectRequested starts a checkpoint of a plan (from a user, a system or a PingSource).
	ProtectRequested = "dev.podguard.protect.requested"
	// MetadataSnapshot asks snapshot-metadata to save the definitions of a batch of pods,
	// or of the ConfigMaps, Secrets or ServiceAccounts they reference.
	MetadataSnapshot = "dev.podguard.metadata.snapshot"
	// MetadataSnapshotted reports the outcome of MetadataSnapshot.
	MetadataSnapshotted = "dev.podguard.metadata.snapshotted"
	// VolumeBackup asks back-up-volume to back up one Cinder volume, or to check the
	// backup it started (the same request, redelivered by the tick).
	VolumeBackup = "dev.podguard.volume.backup"
	// VolumeBackedUp reports the final outcome of VolumeBackup.
	VolumeBackedUp = "dev.podguard.volume.backedup"
	// CheckpointFinished reports a checkpoint that became available or error.
	CheckpointFinished = "dev.podguard.checkpoint.finished"
	// CheckpointProgressed reports how far a checkpoint being protected has come; the
	// choreographer sends it as step results are accepted, at most every
	// PROGRESS_INTERVAL per checkpoint.
	CheckpointProgressed = "dev.podguard.checkpoint.progressed"
	// Tick drives progress checks and the stuck-work collector.
	Tick = "dev.podguard.tick"
	// PingSourceTick is the type of a Knative PingSource's events; the choreographer takes
	// it as a Tick.
	PingSourceTick = "dev.knative.sources.ping"

	// Restore and delete.

	// RestoreRequested restores a checkpoint: new volumes from its backups, then its pods.
	RestoreRequested = "dev.podguard.restore.requested"
	// VolumeRestore asks restore-volume for new volumes from the backups of a batch.
	VolumeRestore = "dev.podguard.volume.restore"
	// VolumeRestored reports the outcome of VolumeRestore.
	VolumeRestored = "dev.podguard.volume.restored"
	// PodRecreate asks recreate-pod to recreate a batch of pods on their restored volumes,
	// or, before them, a batch of the ConfigMaps, Secrets or ServiceAccounts they reference.
	PodRecreate = "dev.podguard.pod.recreate"
	// PodRecreated reports the outcome of PodRecreate: the pods Running, or why not.
	PodRecreated = "dev.podguard.pod.recreated"
	// RestoreFinished reports a restore that ended in success or fail.
	RestoreFinished = "dev.podguard.restore.finished"
	// RestoreProgressed reports how far a restore has come, as CheckpointProgressed does.
	RestoreProgressed = "dev.podguard.restore.progressed"
	// DeleteRequested deletes a checkpoint: its backups, then its metadata.
	DeleteRequested = "dev.podguard.delete.requested"
	// BackupDelete asks delete-backup to delete the backups of a batch of volumes.
	BackupDelete = "dev.podguard.backup.delete"
	// BackupDeleted reports the outcome of BackupDelete.
	BackupDeleted = "dev.podguard.backup.deleted"
	// CheckpointDeleted reports a checkpoint deleted, or error-deleting with reasons.
	CheckpointDeleted = "dev.podguard.checkpoint.deleted"
	// RestoreShow asks for one restore; RestoreShown answers.
	RestoreShow  = "dev.podguard.restore.show"
	RestoreShown = "dev.podguard.restore.shown"
	// RestoresList asks for restores, newest first; RestoresListed answers.
	RestoresList   = "dev.podguard.restores.list"
	RestoresListed = "dev.podguard.restores.listed"

	// Schedules: a plan protected at the occurrences of an iCal RRULE, evaluated by the tick.

	// ScheduleSet creates or replaces a schedule; ScheduleSaved answers with its next
	// occurrences.
	ScheduleSet   = "dev.podguard.schedule.set"
	ScheduleSaved = "dev.podguard.schedule.saved"
	// ScheduleDelete removes a schedule; ScheduleDeleted answers.
	ScheduleDelete  = "dev.podguard.schedule.delete"
	ScheduleDeleted = "dev.podguard.schedule.deleted"
	// ScheduleSkipped reports occurrences of a schedule that were not run because the tick
	// came later than the schedule's window after them.
	ScheduleSkipped = "dev.podguard.schedule.skipped"
	// SchedulesList asks for the schedules; SchedulesListed answers.
	SchedulesList   = "dev.podguard.schedules.list"
	SchedulesListed = "dev.podguard.schedules.listed"

	// CheckpointShow asks for one checkpoint; CheckpointShown answers.
	CheckpointShow  = "dev.podguard.checkpoint.show"
	CheckpointShown = "dev.podguard.checkpoint.shown"
	// CheckpointsList asks for the checkpoints of a plan, newest first; CheckpointsListed answers.
	CheckpointsList   = "dev.podguard.checkpoints.list"
	CheckpointsListed = "dev.podguard.checkpoints.listed"
	// ProviderShow asks what this deployment protects (Karbor's provider-show).
	ProviderShow  = "dev.podguard.provider.show"
	ProviderShown = "dev.podguard.provider.shown"

	// DeadLettersList asks dead-letters for the events the broker gave up delivering,
	// newest first; DeadLettersListed answers.
	DeadLettersList   = "dev.podguard.deadletters.list"
	DeadLettersListed = "dev.podguard.deadletters.listed"
	// DeadLetterReplay asks dead-letters to send a dead letter's event to the broker
	// again; DeadLetterReplayed answers.
	DeadLetterReplay   = "dev.podguard.deadletter.replay"
	DeadLetterReplayed = "dev.podguard.deadletter.replayed"
)

// Extension attributes that tie the events of one operation together. The runtime copies
// them from a request to its reply, and Triggers filter on them.
const (
	// ExtFlow is the operation an event belongs to: protect, restore or delete.
	ExtFlow = "podguardflow"
	// ExtCheckpoint is the checkpoint id.
	ExtCheckpoint = "podguardcheckpoint"
	// ExtCaller is who asked, as the front door authenticated them (a Kubernetes user
	// name such as system:serviceaccount:team-a:ci): set by the front door on the
	// requests it forwards, recorded on the operation they start.
	ExtCaller = "podguardcaller"
)

// Extension attributes a Knative broker (and the local one) sets. A dead letter carries
// the three error extensions: the URL whose delivery failed, the last HTTP status, and
// the start of the last response, base64-encoded and possibly cut short.
const (
	ExtErrorDest   = "knativeerrordest"
	ExtErrorCode   = "knativeerrorcode"
	ExtErrorData   = "knativeerrordata"
	ExtArrivalTime = "knativearrivaltime"
	ExtBrokerTTL   = "knativebrokerttl"
)

// Flows (values of ExtFlow).
const (
	FlowProtect = "protect"
	FlowRestore = "restore"
	FlowDelete  = "delete"
)

// Type describes one event type of the catalog.
type Type struct {
	Name        string
	Description string
	// Producers and Consumers name functions, or "user" for events sent or read by people
	// and external systems.
	Producers []string
	Consumers []string
	// DataOptional types may arrive without data.
	DataOptional bool
	// FrontDoor types are requests people and their systems send to the front door, which
	// authenticates and authorizes them; it answers those no function consumes, and
	// forwards the others into the broker as their producer.
	FrontDoor bool
}

// Function names, as used in Producers and Consumers and in the deploy manifests.
const (
	FnListPods         = "list-pods"
	FnSnapshotMetadata = "snapshot-metadata"
	FnBackupVolume     = "back-up-volume"
	FnChoreographer    = "choreographer"
	FnFrontDoor        = "front-door"
	FnRestoreVolume    = "restore-volume"
	FnRecreatePod      = "recreate-pod"
	FnDeleteBackup     = "delete-backup"
	FnDeadLetters      = "dead-letters"
	User               = "user"
	PingSource         = "pingsource"
)

// Label is typ when the catalog has it, else "other": what a metric label may say of an
// event type anyone could have made up, so that labels stay bounded.
func Label(typ string) string {
	for _, t := range Catalog() {
		if t.Name == typ {
			return typ
		}
	}
	return "other"
}

// FrontDoorTypes are the request types the front door accepts (Type.FrontDoor).
func FrontDoorTypes() []string {
	var out []string
	for _, t := range Catalog() {
		if t.FrontDoor {
			out = append(out, t.Name)
		}
	}
	return out
}

// Catalog returns every event type, sorted by name.
func Catalog() []Type {
	c := []Type{
		{Name: PodsList, Description: "List protectable pods of a scope and resolve their Cinder volumes.",
			Producers: []string{FnFrontDoor, FnChoreographer}, Consumers: []string{FnListPods}, FrontDoor: true},
		{Name: PodsListed, Description: "The dependency graph of a scope: pods, their Cinder volumes, unresolved volumes and excluded pods.",
			Producers: []string{FnListPods}, Consumers: []string{User, FnChoreographer}},
		{Name: PodShow, Description: "Show one pod, by resource id or \"namespace:name\".",
			Producers: []string{FnFrontDoor}, Consumers: []string{FnListPods}, FrontDoor: true},
		{Name: PodShown, Description: "One pod with its Cinder volumes, or found=false.",
			Producers: []string{FnListPods}, Consumers: []string{User}},
		{Name: ProtectRequested, Description: "Protect a plan: start a checkpoint of its pods and volumes.",
			Producers: []string{FnFrontDoor, FnChoreographer}, Consumers: []string{FnChoreographer}, FrontDoor: true},
		{Name: MetadataSnapshot, Description: "Save the definitions of a batch of pods (each with its PVCs and PVs), or of the ConfigMaps, Secrets or ServiceAccounts they reference, into the checkpoint.",
			Producers: []string{FnChoreographer}, Consumers: []string{FnSnapshotMetadata}},
		{Name: MetadataSnapshotted, Description: "The definitions of a batch are saved (available) or could not be (error).",
			Producers: []string{FnSnapshotMetadata}, Consumers: []string{FnChoreographer}},
		{Name: VolumeBackup, Description: "Back up one Cinder volume into the checkpoint, or check the backup already started.",
			Producers: []string{FnChoreographer}, Consumers: []string{FnBackupVolume}},
		{Name: VolumeBackedUp, Description: "A volume's backup is available, or failed (error).",
			Producers: []string{FnBackupVolume}, Consumers: []string{FnChoreographer}},
		{Name: CheckpointFinished, Description: "A checkpoint is available (everything in its scope is in it), or error with every failed resource, unresolved volume or empty scope and its reason; with the pods excluded as not protectable.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: CheckpointProgressed, Description: "How far a checkpoint being protected has come: resources done, failed and total per type, bytes of volumes done and total, elapsed time and an estimate of the time left; at most every few seconds per checkpoint, as results are accepted.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: Tick, Description: "Periodic: checks work in flight, re-drives lost events, fails work past its deadline.",
			Producers: []string{PingSource}, Consumers: []string{FnChoreographer}, DataOptional: true},
		{Name: PingSourceTick, Description: "A PingSource firing: the tick, in a cluster (podguard's own PingSource, into the broker); or, when its data carries a plan, a scheduled protect of that plan (a team's PingSource, through the front door).",
			Producers: []string{PingSource, FnFrontDoor}, Consumers: []string{FnChoreographer}, DataOptional: true, FrontDoor: true},
		{Name: CheckpointShow, Description: "Show one checkpoint.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, FrontDoor: true},
		{Name: CheckpointShown, Description: "A checkpoint with its status, graph and per-resource status, or found=false.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: CheckpointsList, Description: "List the checkpoints of a plan (or all), newest first.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, FrontDoor: true},
		{Name: CheckpointsListed, Description: "A page of checkpoints, newest first.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: ProviderShow, Description: "Show what this deployment protects: resource types and their schemas.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, DataOptional: true, FrontDoor: true},
		{Name: ProviderShown, Description: "Resource types with their options, restore and saved-info schemas.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: RestoreRequested, Description: "Restore an available checkpoint: new volumes from its backups, then its pods on them, into the original or another namespace.",
			Producers: []string{FnFrontDoor}, Consumers: []string{FnChoreographer}, FrontDoor: true},
		{Name: VolumeRestore, Description: "Create a new Cinder volume from the backup of each volume of a batch, or check those already started.",
			Producers: []string{FnChoreographer}, Consumers: []string{FnRestoreVolume}},
		{Name: VolumeRestored, Description: "The volumes of a batch are restored (available), or failed (error) with the volume created, if any.",
			Producers: []string{FnRestoreVolume}, Consumers: []string{FnChoreographer}},
		{Name: PodRecreate, Description: "Recreate the pods of a batch on their restored volumes (PVs, PVCs, pods), or check those already created; or create the ConfigMaps, Secrets or ServiceAccounts of a batch, before the pods that need them.",
			Producers: []string{FnChoreographer}, Consumers: []string{FnRecreatePod}},
		{Name: PodRecreated, Description: "The pods of a batch are Running (available), or failed (error) with the reason; or the objects of a batch are restored (available, also when an existing one was kept) or not (error).",
			Producers: []string{FnRecreatePod}, Consumers: []string{FnChoreographer}},
		{Name: RestoreFinished, Description: "A restore ended: success, or fail with every failed resource and its reason.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: RestoreProgressed, Description: "How far a restore has come: resources done, failed and total per type, bytes of volumes done and total, elapsed time and an estimate of the time left; at most every few seconds per restore, as results are accepted.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: DeleteRequested, Description: "Delete an available or error checkpoint: its backups, then its metadata.",
			Producers: []string{FnFrontDoor, FnChoreographer}, Consumers: []string{FnChoreographer}, FrontDoor: true},
		{Name: BackupDelete, Description: "Delete the backups of a batch of volumes of a checkpoint, or check deletions already started.",
			Producers: []string{FnChoreographer}, Consumers: []string{FnDeleteBackup}},
		{Name: BackupDeleted, Description: "The backups of a batch are deleted, or could not be (error) with the reason.",
			Producers: []string{FnDeleteBackup}, Consumers: []string{FnChoreographer}},
		{Name: CheckpointDeleted, Description: "A checkpoint is deleted, or error-deleting with every backup not deleted and why.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: RestoreShow, Description: "Show one restore.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, FrontDoor: true},
		{Name: RestoreShown, Description: "A restore with its status, and each resource's status, reason and restored counterpart, or found=false.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: RestoresList, Description: "List restores, newest first.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, FrontDoor: true},
		{Name: RestoresListed, Description: "A page of restores, newest first.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: ScheduleSet, Description: "Create or replace a schedule: a plan protected at the occurrences of an iCal RRULE (Karbor's calendar trigger).",
			Producers: []string{FnFrontDoor}, Consumers: []string{FnChoreographer}, FrontDoor: true},
		{Name: ScheduleSaved, Description: "A schedule as saved, with its next occurrences.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: ScheduleDelete, Description: "Delete a schedule; its checkpoints stay.",
			Producers: []string{FnFrontDoor}, Consumers: []string{FnChoreographer}, FrontDoor: true},
		{Name: ScheduleDeleted, Description: "A schedule is deleted (found=false when there was none).",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: ScheduleSkipped, Description: "Occurrences of a schedule missed by more than its window: skipped, not run late.",
			Producers: []string{FnChoreographer}, Consumers: []string{User}},
		{Name: SchedulesList, Description: "List the schedules, with their last and next occurrences.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, DataOptional: true, FrontDoor: true},
		{Name: SchedulesListed, Description: "Every schedule with its last and next occurrences and recently skipped ones.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: DeadLettersList, Description: "List the events the broker gave up delivering (dead letters), newest first, optionally of one type.",
			Producers: []string{User}, Consumers: []string{FnFrontDoor}, FrontDoor: true},
		{Name: DeadLettersListed, Description: "A page of dead letters, newest first: each with its event's attributes, the error code, destination and response, and its replays.",
			Producers: []string{FnFrontDoor}, Consumers: []string{User}},
		{Name: DeadLetterReplay, Description: "Send a dead letter's event to the broker again, as it was first sent.",
			Producers: []string{FnFrontDoor}, Consumers: []string{FnDeadLetters}, FrontDoor: true},
		{Name: DeadLetterReplayed, Description: "A dead letter's event was sent to the broker again.",
			Producers: []string{FnDeadLetters}, Consumers: []string{User}},
	}
	sort.Slice(c, func(i, j int) bool { return c[i].Name < c[j].Name })
	return c
}

// SchemaURL is the dataschema of an event type.
func SchemaURL(eventType string) string {
	return schemaBase + eventType + ".json"
}

const schemaBase = "https://podguard.dev/schemas/"
