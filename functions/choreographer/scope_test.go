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

// A listing may name the objects its pods reference, in their namespaces; not a Secret
// no pod references, nor one of another namespace.
func TestOutOfScopeObjects(t *testing.T) {
	web := graph.PodResource("shop", "web")
	cfg := graph.ObjectResource(graph.ConfigMapType, "shop", "cfg")
	stray := graph.ObjectResource(graph.SecretType, "shop", "admin")
	elsewhere := graph.ObjectResource(graph.SecretType, "kube-system", "admin")
	scope := events.Scope{Namespaces: []string{"shop"}}
	for name, tc := range map[string]struct {
		g   *graph.Graph
		bad bool
	}{
		"referenced":           {&graph.Graph{Nodes: []graph.Node{{Resource: web, Children: []string{cfg.Key()}}, {Resource: cfg}}}, false},
		"referenced by no pod": {&graph.Graph{Nodes: []graph.Node{{Resource: web, Children: []string{cfg.Key()}}, {Resource: cfg}, {Resource: stray}}}, true},
		"of another namespace": {&graph.Graph{Nodes: []graph.Node{{Resource: web, Children: []string{elsewhere.Key()}}, {Resource: elsewhere}}}, true},
	} {
		if err := outOfScope(scope, tc.g); (err != nil) != tc.bad {
			t.Errorf("%s: %v, want out of scope %t", name, err, tc.bad)
		}
	}
}
