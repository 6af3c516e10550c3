package choreographer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
)

func podGraph(pods ...[2]string) *graph.Graph {
	g := &graph.Graph{}
	for _, p := range pods {
		g.Nodes = append(g.Nodes, graph.Node{Resource: graph.PodResource(p[0], p[1])})
	}
	return g
}

func TestRestoreParameters(t *testing.T) {
	one := podGraph([2]string{"shop", "web"})
	two := podGraph([2]string{"shop", "web"}, [2]string{"shop", "db"})
	for _, c := range []struct {
		name  string
		p     events.RestoreParameters
		g     *graph.Graph
		names map[string]string
		err   string
	}{
		{name: "restore_name names the only pod", p: events.RestoreParameters{RestoreName: "web-again"}, g: one,
			names: map[string]string{"shop:web": "web-again"}},
		{name: "the mapping wins over restore_name", p: events.RestoreParameters{RestoreName: "x", Names: map[string]string{"shop:web": "w2"}}, g: one,
			names: map[string]string{"shop:web": "w2"}},
		{name: "restore_name of several pods names the restore only", p: events.RestoreParameters{RestoreName: "nightly"}, g: two},
		{name: "unknown pod", p: events.RestoreParameters{Names: map[string]string{"shop:cart": "c"}}, g: two, err: "/names/shop:cart: the checkpoint holds no pod shop:cart"},
		{name: "bad pod name", p: events.RestoreParameters{Names: map[string]string{"shop:web": "Web_1"}}, g: two, err: `/names/shop:web: "Web_1" is not a pod name`},
		{name: "two pods one name", p: events.RestoreParameters{Names: map[string]string{"shop:web": "a", "shop:db": "a"}}, g: two, err: "would both be restored as shop/a"},
		{name: "same name in another namespace", p: events.RestoreParameters{Namespace: "other", Names: map[string]string{"shop:web": "db"}}, g: two,
			names: map[string]string{"shop:web": "db"}},
		{name: "the mapped name clashes with another restored pod in the target", p: events.RestoreParameters{Namespace: "other", Names: map[string]string{"shop:web": "x", "shop:db": "x"}}, g: two, err: "other/x"},
		{name: "bad namespace", p: events.RestoreParameters{Namespace: "Other"}, g: two, err: `/namespace: "Other" is not a namespace name`},
		{name: "existing objects kept", p: events.RestoreParameters{ExistingResources: events.ExistingSkip}, g: two},
		{name: "existing objects fail", p: events.RestoreParameters{ExistingResources: events.ExistingFail}, g: two},
		{name: "existing objects overwritten", p: events.RestoreParameters{ExistingResources: "overwrite"}, g: two, err: `/existing_resources: "overwrite" is neither skip nor fail`},
		{name: "restore_name that is not a pod name", p: events.RestoreParameters{RestoreName: "Nightly Restore"}, g: one, err: "is not a pod name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := restoreParameters(c.p, c.g)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Names) != len(c.names) {
				t.Fatalf("names %v, want %v", got.Names, c.names)
			}
			for k, v := range c.names {
				if got.Names[k] != v {
					t.Fatalf("names %v, want %v", got.Names, c.names)
				}
			}
			if got.RestoreName != c.p.RestoreName {
				t.Fatalf("restore_name changed: %q", got.RestoreName)
			}
		})
	}
}

// A restore never lands in a protected namespace, named or the pods' own: refused with
// the reason, and no restore is created.
func TestRestoreIntoAProtectedNamespaceIsRefused(t *testing.T) {
	w := newWorld(t)
	w.cfg.ProtectedNamespaces = []string{"kube-system", "shop"}
	w.step = NewStep(w.bank, w.bank.Restores(), w.bank.Deletions(), w.out, w.cfg, w.now)
	id, _, _ := w.available() // a pod of shop
	for _, c := range []struct{ target, lands string }{{"kube-system", "kube-system"}, {"", "shop"}} {
		e := w.event(events.RestoreRequested, "", events.RestoreRequest{Checkpoint: id, Parameters: events.RestoreParameters{Namespace: c.target}})
		_, err := w.step.Handle(context.Background(), e)
		if function.StatusOf(err) != http.StatusBadRequest || !strings.Contains(fmt.Sprint(err), `never lands in namespace "`+c.lands+`"`) {
			t.Errorf("restore into %q: %v, want 400 naming %s", c.target, err, c.lands)
		}
		if _, err := w.bank.Restore(context.Background(), RestoreID(e)); !errors.Is(err, bank.ErrNotFound) {
			t.Errorf("a restore was created: %v", err)
		}
		if sent := w.out.take(); len(sent) != 0 {
			t.Errorf("sent %d events", len(sent))
		}
	}
}
