// Package graph holds podguard's protectable resources and their dependency graph, in
// Karbor's terms: a resource is (type, id, name, extra info); a pod depends on the Cinder
// volumes behind its persistent volume claims, and on the ConfigMaps, Secrets and
// ServiceAccount of its namespace that it references.
//
// Ids are Karbor's, so checkpoints and plans carry over from it:
//
//	graph.PodID("default", "busybox-test") // "c88b92a8-e8b4-504c-bad4-343d92061871"
//	graph.ObjectID(graph.ConfigMapType, "default", "busybox-test") // another id: the kind is part of its input
package graph

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Resource types.
const (
	PodType    = "OS::Kubernetes::Pod"
	VolumeType = "OS::Cinder::Volume"
	// The objects of a pod's namespace that a pod references and cannot start without:
	// its pod's dependencies. Each is one node, however many pods reference it.
	ConfigMapType      = "OS::Kubernetes::ConfigMap"
	SecretType         = "OS::Kubernetes::Secret"
	ServiceAccountType = "OS::Kubernetes::ServiceAccount"
)

// kinds are the resource types in the order Batches cuts them, with the prefix of their
// batches' names and, for the objects of a namespace, their Kubernetes kind.
func kinds() [5]struct{ typ, prefix, kind string } {
	return [...]struct{ typ, prefix, kind string }{
		{PodType, "pods", "Pod"},
		{VolumeType, "volumes", ""},
		{ConfigMapType, "configmaps", "ConfigMap"},
		{SecretType, "secrets", "Secret"},
		{ServiceAccountType, "serviceaccounts", "ServiceAccount"},
	}
}

// DependencyTypes are the types of the objects a pod references (ConfigMaps, Secrets,
// ServiceAccounts), in batch order.
func DependencyTypes() []string { return []string{ConfigMapType, SecretType, ServiceAccountType} }

// IsDependency reports whether typ is the type of an object a pod references.
func IsDependency(typ string) bool {
	return typ == ConfigMapType || typ == SecretType || typ == ServiceAccountType
}

// Kind is the Kubernetes kind of a resource type of a namespace's objects ("ConfigMap");
// "" for a type that is not one (a Cinder volume).
func Kind(typ string) string {
	for _, k := range kinds() {
		if k.typ == typ {
			return k.kind
		}
	}
	return ""
}

// BatchPrefix is the start of the names of the batches of a resource type, dash
// included ("configmaps-"); false for a type the graph does not hold.
func BatchPrefix(typ string) (string, bool) {
	for _, k := range kinds() {
		if k.typ == typ {
			return k.prefix + "-", true
		}
	}
	return "", false
}

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

// Problem is a dependency that could not be resolved: a volume that does not lead to a
// Cinder volume, or an object the pod references that does not exist. It is reported,
// never silently dropped.
type Problem struct {
	Pod              string `json:"pod"`
	Volume           string `json:"volume,omitempty"`
	Claim            string `json:"claim,omitempty"`
	PersistentVolume string `json:"persistentVolume,omitempty"`
	// Object is the referenced object of the pod's namespace that is missing, as
	// ObjectRef writes it ("Secret/db-creds").
	Object string `json:"object,omitempty"`
	Reason string `json:"reason"`
}

// ObjectRef names an object of a pod's namespace in a problem: "<Kind>/<name>".
func ObjectRef(kind, name string) string { return kind + "/" + name }

// Key is the problem's key among a checkpoint's failures: the pod's name and, for a
// problem with one of its volumes, the volume's name in the pod ("shop:web/data"), for a
// missing object, the object ("shop:web/Secret/db-creds"). The same problem of the same
// graph always has the same key, and each problem its own (a volume's name has no "/").
func (p Problem) Key() string {
	switch {
	case p.Object != "":
		return p.Pod + "/" + p.Object
	case p.Volume != "":
		return p.Pod + "/" + p.Volume
	}
	return p.Pod
}

// Describe is the problem as a failure's reason: what could not be protected and why,
// with the claim and persistent volume, or the object, it involves.
func (p Problem) Describe() string {
	what := "pod " + p.Pod
	switch {
	case p.Object != "":
		kind, name, _ := strings.Cut(p.Object, "/")
		what = kind + " " + name + " of pod " + p.Pod
	case p.Volume != "":
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
// followed by the volumes, then the ConfigMaps, Secrets and ServiceAccount, it is the
// first to reference, so parents precede their children.
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

// PodNamespaces are the namespaces of the graph's pods, sorted, each once.
func (g *Graph) PodNamespaces() []string {
	var ns []string
	for i := range g.Nodes {
		if g.Nodes[i].Type != PodType {
			continue
		}
		if namespace, _, ok := SplitPodName(g.Nodes[i].Name); ok {
			ns = append(ns, namespace)
		}
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

// PodName is Karbor's name of a pod: "namespace:name". The objects a pod references are
// named the same way.
func PodName(namespace, name string) string { return namespace + ":" + name }

// SplitPodName reads a pod's (or a pod's dependency's) name as PodName wrote it; false
// when it is not "namespace:name" with both parts.
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

// ObjectID is the id of an object of a pod's namespace of resource type typ, derived as
// a pod's is: UUIDv5(NAMESPACE_OID, "<Kind>:namespace:name") ("ConfigMap:shop:web"), so
// that a ConfigMap, a Secret and a pod of the same name each have their own id.
func ObjectID(typ, namespace, name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(Kind(typ)+":"+PodName(namespace, name))).String()
}

// ObjectResource builds the resource of an object of a pod's namespace (a ConfigMap,
// Secret or ServiceAccount), named "namespace:name" like a pod.
func ObjectResource(typ, namespace, name string) Resource {
	return Resource{
		Type:      typ,
		ID:        ObjectID(typ, namespace, name),
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
// type, in graph order: pods-0000, pods-0001, ..., volumes-0000, ..., then configmaps-,
// secrets- and serviceaccounts-0000, ... The split depends only on the graph and the
// size, so anyone holding both names the same batches.
func (g *Graph) Batches(size int) []Batch {
	if size <= 0 {
		size = 1
	}
	var out []Batch
	for _, kind := range kinds() {
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
