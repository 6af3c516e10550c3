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

func TestBatches(t *testing.T) {
	g := Graph{}
	for _, name := range []string{"a", "b", "c"} {
		p := PodResource("ns", name)
		v := Resource{Type: VolumeType, ID: "v-" + name}
		g.Nodes = append(g.Nodes, Node{Resource: p, Children: []string{v.Key()}}, Node{Resource: v})
	}
	bs := g.Batches(2)
	var got []string
	for _, b := range bs {
		got = append(got, b.Name+":"+b.Type+":"+string(rune('0'+len(b.Resources))))
	}
	want := []string{"pods-0000:" + PodType + ":2", "pods-0001:" + PodType + ":1", "volumes-0000:" + VolumeType + ":2", "volumes-0001:" + VolumeType + ":1"}
	if len(got) != len(want) {
		t.Fatalf("batches %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
	if b, ok := BatchOf(bs, (Resource{Type: VolumeType, ID: "v-c"}).Key()); !ok || b != "volumes-0001" {
		t.Fatalf("BatchOf = %s %v", b, ok)
	}
}

func TestProblemKeyAndDescription(t *testing.T) {
	for _, c := range []struct {
		p         Problem
		key, desc string
	}{
		{Problem{Pod: "shop:web", Volume: "data", Claim: "web-data", Reason: "persistent volume claim is not bound (phase Pending)"},
			"shop:web/data", "volume data of pod shop:web (claim web-data) is not in the checkpoint: persistent volume claim is not bound (phase Pending)"},
		{Problem{Pod: "shop:web", Volume: "logs", Claim: "web-logs", PersistentVolume: "pv-1", Reason: "persistent volume not found"},
			"shop:web/logs", "volume logs of pod shop:web (claim web-logs, persistent volume pv-1) is not in the checkpoint: persistent volume not found"},
		{Problem{Pod: "shop:gone", Reason: "pod not found"}, "shop:gone", "pod shop:gone is not in the checkpoint: pod not found"},
	} {
		if got := c.p.Key(); got != c.key {
			t.Errorf("Key() = %q, want %q", got, c.key)
		}
		if got := c.p.Describe(); got != c.desc {
			t.Errorf("Describe() = %q, want %q", got, c.desc)
		}
	}
}

func TestSizeBytes(t *testing.T) {
	for _, tt := range []struct {
		info map[string]string
		want int64
		ok   bool
	}{
		{map[string]string{InfoSizeBytes: "1073741824"}, 1 << 30, true},
		{map[string]string{InfoSizeBytes: "0"}, 0, true},
		{nil, 0, false},
		{map[string]string{InfoSizeBytes: "1Gi"}, 0, false},
		{map[string]string{InfoSizeBytes: "-1"}, 0, false},
	} {
		got, ok := Resource{Type: VolumeType, ID: "v", ExtraInfo: tt.info}.SizeBytes()
		if got != tt.want || ok != tt.ok {
			t.Errorf("SizeBytes(%v) = %d, %v; want %d, %v", tt.info, got, ok, tt.want, tt.ok)
		}
	}
}
