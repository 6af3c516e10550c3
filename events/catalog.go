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
	// MetadataSnapshot asks snapshot-metadata to save one pod's definitions.
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
	// Tick drives progress checks and the stuck-work collector (a PingSource).
	Tick = "dev.podguard.tick"

	// CheckpointShow asks for one checkpoint; CheckpointShown answers.
	CheckpointShow  = "dev.podguard.checkpoint.show"
	CheckpointShown = "dev.podguard.checkpoint.shown"
	// CheckpointsList asks for the checkpoints of a plan, newest first; CheckpointsListed answers.
	CheckpointsList   = "dev.podguard.checkpoints.list"
	CheckpointsListed = "dev.podguard.checkpoints.listed"
	// ProviderShow asks what this deployment protects (Karbor's provider-show).
	ProviderShow  = "dev.podguard.provider.show"
	ProviderShown = "dev.podguard.provider.shown"
)

// Extension attributes that tie the events of one operation together. The runtime copies
// them from a request to its reply, and Triggers filter on them.
const (
	// ExtFlow is the operation an event belongs to: protect, restore or delete.
	ExtFlow = "podguardflow"
	// ExtCheckpoint is the checkpoint id.
	ExtCheckpoint = "podguardcheckpoint"
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
}

// Function names, as used in Producers and Consumers and in the deploy manifests.
const (
	FnListPods         = "list-pods"
	FnSnapshotMetadata = "snapshot-metadata"
	FnBackupVolume     = "back-up-volume"
	FnChoreographer    = "choreographer"
	FnCheckpoints      = "checkpoints"
	User               = "user"
	PingSource         = "pingsource"
)

// Catalog returns every event type, sorted by name.
func Catalog() []Type {
	c := []Type{
		{PodsList, "List protectable pods of a scope and resolve their Cinder volumes.", []string{User, FnChoreographer}, []string{FnListPods}},
		{PodsListed, "The dependency graph of a scope: pods, their Cinder volumes, unresolved volumes and excluded pods.", []string{FnListPods}, []string{User, FnChoreographer}},
		{PodShow, "Show one pod, by resource id or \"namespace:name\".", []string{User}, []string{FnListPods}},
		{PodShown, "One pod with its Cinder volumes, or found=false.", []string{FnListPods}, []string{User}},
		{ProtectRequested, "Protect a plan: start a checkpoint of its pods and volumes.", []string{User, PingSource}, []string{FnChoreographer}},
		{MetadataSnapshot, "Save one pod's definition, and those of its PVCs and PVs, into the checkpoint.", []string{FnChoreographer}, []string{FnSnapshotMetadata}},
		{MetadataSnapshotted, "A pod's metadata is saved (available) or could not be (error).", []string{FnSnapshotMetadata}, []string{FnChoreographer}},
		{VolumeBackup, "Back up one Cinder volume into the checkpoint, or check the backup already started.", []string{FnChoreographer}, []string{FnBackupVolume}},
		{VolumeBackedUp, "A volume's backup is available, or failed (error).", []string{FnBackupVolume}, []string{FnChoreographer}},
		{CheckpointFinished, "A checkpoint is available, or error with every failed resource and its reason.", []string{FnChoreographer}, []string{User}},
		{Tick, "Periodic: checks work in flight, re-drives lost events, fails work past its deadline.", []string{PingSource}, []string{FnChoreographer}},
		{CheckpointShow, "Show one checkpoint.", []string{User}, []string{FnCheckpoints}},
		{CheckpointShown, "A checkpoint with its status, graph and per-resource status, or found=false.", []string{FnCheckpoints}, []string{User}},
		{CheckpointsList, "List the checkpoints of a plan (or all), newest first.", []string{User}, []string{FnCheckpoints}},
		{CheckpointsListed, "A page of checkpoints, newest first.", []string{FnCheckpoints}, []string{User}},
		{ProviderShow, "Show what this deployment protects: resource types and their schemas.", []string{User}, []string{FnCheckpoints}},
		{ProviderShown, "Resource types with their options, restore and saved-info schemas.", []string{FnCheckpoints}, []string{User}},
	}
	sort.Slice(c, func(i, j int) bool { return c[i].Name < c[j].Name })
	return c
}

// SchemaURL is the dataschema of an event type.
func SchemaURL(eventType string) string {
	return schemaBase + eventType + ".json"
}

const schemaBase = "https://podguard.dev/schemas/"
