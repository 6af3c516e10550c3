package bank_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
	"github.com/podguard/podguard/shared/graph"
)

// The keys a checkpoint's envelopes use are listed by checkpoint and by key, noting them
// again changes nothing, and removing the checkpoint leaves nothing of them.
func TestKeysOfCheckpoints(t *testing.T) {
	ctx := context.Background()
	sw := banktest.NewSwift(time.Now)
	b := banktest.NewOn(t, sw, time.Now)
	g := &graph.Graph{Nodes: []graph.Node{{Resource: graph.PodResource("ns", "web")}}}
	for _, id := range []string{"c1", "c2"} {
		banktest.Protecting(t, b, bank.Checkpoint{ID: id}, g)
	}
	for _, note := range []struct {
		checkpoint string
		keys       []string
	}{{"c1", []string{"2025-01"}}, {"c1", []string{"2025-06", "2025-01"}}, {"c2", []string{"2025-06"}}, {"c2", nil}} {
		if err := b.NoteKeys(ctx, note.checkpoint, note.keys); err != nil {
			t.Fatal(err)
		}
	}
	list := func(what string, fn func(context.Context, string) ([]string, error), arg string, want ...string) {
		t.Helper()
		got, err := fn(ctx, arg)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s %s: %v %v, want %v", what, arg, got, err, want)
		}
	}
	list("keys of", b.CheckpointKeys, "c1", "2025-01", "2025-06")
	list("keys of", b.CheckpointKeys, "c2", "2025-06")
	list("sealed with", b.SealedWith, "2025-01", "c1")
	list("sealed with", b.SealedWith, "2025-06", "c1", "c2")

	if err := b.RemoveCheckpoint(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	list("sealed with", b.SealedWith, "2025-01")
	list("sealed with", b.SealedWith, "2025-06", "c2")
	list("keys of", b.CheckpointKeys, "c1")
	for _, name := range sw.Names(b.Container()) {
		if strings.Contains(name, "c1") {
			t.Errorf("%s left after the checkpoint was removed", name)
		}
	}
}
