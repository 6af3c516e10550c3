// Package graph holds podguard's protectable resources and their dependency graph, in
// Karbor's terms: a resource is (type, id, name, extra info); a pod depends on the Cinder
// volumes behind its persistent volume claims.
//
// Ids are Karbor's, so checkpoints and plans carry over from it:
//
//	graph.PodID("default", "busybox-test") // "c88b92a8-e8b4-504c-bad4-343d92061871"
package graph

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Resource types.
const (
	PodType    = "OS::Kubernetes::Pod"
	VolumeType = "OS::Cinder::Volume"
)

// Keys of Resource.ExtraInfo.
const (
	InfoNamespace = "namespace"
	InfoClaim     = "claim"            // PVC name, for a volume reached through a PVC
	InfoPV        = "persistentVolume" // PV name
	InfoSource    = "source"           // SourceCSI or SourceInTree
	InfoPhase     = "phase"            // pod phase when listed
	// InfoSizeBytes is a volume's size in bytes, in decimal, from its persistent
	// volume's capacity; absent when the listing could not know it (an in-tree cinder
	// volume written into the pod itself).
	InfoSizeBytes = "sizeBytes"
)

// Volume sources.
const (
	SourceCSI    = "csi"     // a PV of the cinder.csi.openstack.org driver
	SourceInTree = "in-tree" // a PV or pod volume with the legacy in-tree `cinder` source
)

// CinderCSIDriver is the CSI driver name of OpenStack Cinder.
const CinderCSIDriver = "cinder.csi.openstack.org"

// Resource is one protectable resource.
type Resource struct {
	Type      string            `json:"type"`
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	ExtraInfo map[string]string `json:"extra_info,omitempty"`
}

// Key is the resource's key in checkpoints and restores: "Type#id".
func (r Resource) Key() string { return r.Type + "#" + r.ID }

// SplitKey reads a key as Resource.Key wrote it ("Type#id"); false when it is not one
// (such as the key "checkpoint" of a failure of the whole operation).
func SplitKey(key string) (typ, id string, ok bool) {
	typ, id, ok = strings.Cut(key, "#")
	return typ, id, ok && typ != "" && id != ""
}

// SizeBytes is the size a volume's listing recorded (InfoSizeBytes); false when none was.
func (r Resource) SizeBytes() (int64, bool) {
	v, ok := r.ExtraInfo[InfoSizeBytes]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Node is a resource with the keys of the resources it depends on.
type Node struct {
	Resource
	Children []string `json:"children,omitempty"`
}

// Problem is a dependency that could not be resolved to a Cinder volume. It is reported,
// never silently dropped.
type Problem struct {
	Pod              string `json:"pod"`
	Volume           string `json:"volume,omitempty"`
	Claim            string `json:"claim,omitempty"`
	PersistentVolume string `json:"persistentVolume,omitempty"`
	Reason           string `json:"reason"`
}

// Key is the problem's key among a checkpoint's failures: the pod's name and, for a
// problem with one of its volumes, the volume's name in the pod ("shop:web/data"). The
// same problem of the same graph always has the same key, and each problem its own.
func (p Problem) Key() string {
	if p.Volume == "" {
		return p.Pod
	}
	return p.Pod + "/" + p.Volume
}

// Describe is the problem as a failure's reason: what could not be protected and why,
// with the claim and persistent volume it involves.
func (p Problem) Describe() string {
	what := "pod " + p.Pod
	if p.Volume != "" {
		what = "volume " + p.Volume + " of pod " + p.Pod
	}
	var via []string
	if p.Claim != "" {
		via = append(via, "claim "+p.Claim)
	}
	if p.PersistentVolume != "" {
		via = append(via, "persistent volume "+p.PersistentVolume)
	}
	if len(via) > 0 {
		what += " (" + strings.Join(via, ", ") + ")"
	}
	return what + " is not in the checkpoint: " + p.Reason
}

// Excluded is a pod that matched the scope but is not protectable.
type Excluded struct {
	Pod    string `json:"pod"`
	Phase  string `json:"phase,omitempty"`
	Reason string `json:"reason"`
}

// Graph is the dependency graph of a set of pods. Nodes lists each resource once: a pod is
// followed by the volumes it is the first to reference, so parents precede their children.
type Graph struct {
	Nodes    []Node     `json:"nodes"`
	Problems []Problem  `json:"problems,omitempty"`
	Excluded []Excluded `json:"excluded,omitempty"`
}

// Counts returns how many pods and volumes the graph holds.
func (g *Graph) Counts() (pods, volumes int) {
	for i := range g.Nodes {
		switch g.Nodes[i].Type {
		case PodType:
			pods++
		case VolumeType:
			volumes++
		}
	}
	return pods, volumes
}

// PodName is Karbor's name of a pod: "namespace:name".
func PodName(namespace, name string) string { return namespace + ":" + name }

// SplitPodName reads a pod's name as PodName wrote it; false when it is not
// "namespace:name" with both parts.
func SplitPodName(podName string) (namespace, name string, ok bool) {
	namespace, name, ok = strings.Cut(podName, ":")
	return namespace, name, ok && namespace != "" && name != ""
}

// PodID is Karbor's id of a pod: UUIDv5(NAMESPACE_OID, "namespace:name").
func PodID(namespace, name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(PodName(namespace, name))).String()
}

// PodResource builds the resource of a pod.
func PodResource(namespace, name string) Resource {
	return Resource{
		Type:      PodType,
		ID:        PodID(namespace, name),
		Name:      PodName(namespace, name),
		ExtraInfo: map[string]string{InfoNamespace: namespace},
	}
}

// Batch is a set of resources of one type handled by one step request.
type Batch struct {
	Name      string     `json:"name"`
	Type      string     `json:"type"`
	Resources []Resource `json:"resources"`
}

// Batches splits the graph's resources into batches of at most size resources of one
// type, in graph order: pods-0000, pods-0001, ..., volumes-0000, ... The split depends
// only on the graph and the size, so anyone holding both names the same batches.
func (g *Graph) Batches(size int) []Batch {
	if size <= 0 {
		size = 1
	}
	var out []Batch
	for _, kind := range []struct{ typ, prefix string }{{PodType, "pods"}, {VolumeType, "volumes"}} {
		var cur *Batch
		for _, n := range g.Nodes {
			if n.Type != kind.typ {
				continue
			}
			if cur == nil || len(cur.Resources) == size {
				out = append(out, Batch{Name: fmt.Sprintf("%s-%04d", kind.prefix, countOf(out, kind.typ)), Type: kind.typ})
				cur = &out[len(out)-1]
			}
			cur.Resources = append(cur.Resources, n.Resource)
		}
	}
	return out
}

func countOf(bs []Batch, typ string) int {
	n := 0
	for _, b := range bs {
		if b.Type == typ {
			n++
		}
	}
	return n
}

// BatchOf returns the name of the batch holding key.
func BatchOf(batches []Batch, key string) (string, bool) {
	for _, b := range batches {
		for _, r := range b.Resources {
			if r.Key() == key {
				return b.Name, true
			}
		}
	}
	return "", false
}
