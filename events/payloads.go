package events

import (
	"fmt"
	"strings"

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
