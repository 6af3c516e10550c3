package choreographer

import (
	"testing"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

func TestOutOfScope(t *testing.T) {
	web := graph.PodResource("shop", "web")
	g := &graph.Graph{Nodes: []graph.Node{{Resource: web}, {Resource: graph.PodResource("kube-system", "etcd")}}}
	for name, tc := range map[string]struct {
		scope events.Scope
		bad   bool
	}{
		"all namespaces":      {events.Scope{AllNamespaces: true}, false},
		"both namespaces":     {events.Scope{Namespaces: []string{"shop", "kube-system"}}, false},
		"one namespace":       {events.Scope{Namespaces: []string{"shop"}}, true},
		"pods by name and id": {events.Scope{Pods: []string{web.ID, "kube-system:etcd"}}, false},
		"one pod":             {events.Scope{Pods: []string{"shop:web"}}, true},
	} {
		if err := outOfScope(tc.scope, g); (err != nil) != tc.bad {
			t.Errorf("%s: %v, want out of scope %t", name, err, tc.bad)
		}
	}
}
