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
	FnListPods = "list-pods"
	User       = "user"
)

// Catalog returns every event type, sorted by name.
func Catalog() []Type {
	c := []Type{
		{PodsList, "List protectable pods of a scope and resolve their Cinder volumes.", []string{User}, []string{FnListPods}},
		{PodsListed, "The dependency graph of a scope: pods, their Cinder volumes, unresolved volumes and excluded pods.", []string{FnListPods}, []string{User}},
		{PodShow, "Show one pod, by resource id or \"namespace:name\".", []string{User}, []string{FnListPods}},
		{PodShown, "One pod with its Cinder volumes, or found=false.", []string{FnListPods}, []string{User}},
	}
	sort.Slice(c, func(i, j int) bool { return c[i].Name < c[j].Name })
	return c
}

// SchemaURL is the dataschema of an event type.
func SchemaURL(eventType string) string {
	return schemaBase + eventType + ".json"
}

const schemaBase = "https://podguard.dev/schemas/"
