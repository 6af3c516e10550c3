package choreographer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// outOfScope checks a listing against the scope the checkpoint recorded: a pods.listed
// naming a pod outside it (another namespace, a pod not asked for) is not list-pods'
// answer, nor one naming a ConfigMap, Secret or ServiceAccount that no pod of its
// namespace references. A label selector cannot be checked without the cluster;
// namespaces and explicit pods can.
func outOfScope(s events.Scope, g *graph.Graph) error {
	referenced := map[string]string{} // object key -> namespace of a pod referencing it
	for _, n := range g.Nodes {
		if n.Type == graph.PodType {
			for _, c := range n.Children {
				referenced[c] = n.ExtraInfo[graph.InfoNamespace]
			}
		}
	}
	for i, n := range g.Nodes {
		if graph.IsDependency(n.Type) {
			ns, _, _ := graph.SplitPodName(n.Name)
			if pod, ok := referenced[n.Key()]; !ok || pod != ns || n.ExtraInfo[graph.InfoNamespace] != ns {
				return fmt.Errorf("/graph/nodes/%d: %s %s is not referenced by a pod of its namespace", i, graph.Kind(n.Type), n.Name)
			}
			continue
		}
		if n.Type != graph.PodType {
			continue
		}
		ns, _, _ := graph.SplitPodName(n.Name)
		switch {
		case s.AllNamespaces:
		case len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, ns):
			return fmt.Errorf("/graph/nodes/%d: pod %s is outside the checkpoint's namespaces %v", i, n.Name, s.Namespaces)
		case len(s.Pods) > 0 && !slices.Contains(s.Pods, n.Name) && !slices.Contains(s.Pods, n.ID):
			return fmt.Errorf("/graph/nodes/%d: pod %s is not among the checkpoint's pods", i, n.Name)
		}
	}
	return nil
}

// sameScope: the two scopes select the same pods, whatever the order of their
// namespaces and pods.
func sameScope(a, b events.Scope) bool {
	return a.AllNamespaces == b.AllNamespaces && a.LabelSelector == b.LabelSelector &&
		sameSet(a.Namespaces, b.Namespaces) && sameSet(a.Pods, b.Pods)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// describeScope is a scope in a reason.
func describeScope(s events.Scope) string {
	var parts []string
	if s.AllNamespaces {
		parts = append(parts, "allNamespaces")
	}
	if len(s.Namespaces) > 0 {
		parts = append(parts, fmt.Sprintf("namespaces %v", s.Namespaces))
	}
	if len(s.Pods) > 0 {
		parts = append(parts, fmt.Sprintf("pods %v", s.Pods))
	}
	if s.LabelSelector != "" {
		parts = append(parts, fmt.Sprintf("labelSelector %q", s.LabelSelector))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
