package graph

import "testing"

func TestPodIDMatchesKarbor(t *testing.T) {
	// Karbor's pod protectable plugin: uuid.uuid5(uuid.NAMESPACE_OID, "default:busybox-test").
	if got, want := PodID("default", "busybox-test"), "c88b92a8-e8b4-504c-bad4-343d92061871"; got != want {
		t.Fatalf("PodID = %s, want %s", got, want)
	}
}

func TestKeyAndCounts(t *testing.T) {
	p := PodResource("ns", "web")
	if p.Key() != PodType+"#"+p.ID || p.Name != "ns:web" || p.ExtraInfo[InfoNamespace] != "ns" {
		t.Fatalf("unexpected pod resource %+v", p)
	}
	g := Graph{Nodes: []Node{
		{Resource: p, Children: []string{VolumeType + "#v1"}},
		{Resource: Resource{Type: VolumeType, ID: "v1"}},
	}}
	if pods, vols := g.Counts(); pods != 1 || vols != 1 {
		t.Fatalf("Counts = %d, %d", pods, vols)
	}
}
