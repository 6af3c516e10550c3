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

func TestObjectIDs(t *testing.T) {
	ids := map[string]string{PodID("shop", "web"): PodType}
	for _, typ := range DependencyTypes() {
		r := ObjectResource(typ, "shop", "web")
		if r.Name != "shop:web" || r.ExtraInfo[InfoNamespace] != "shop" || r.Type != typ {
			t.Fatalf("resource %+v", r)
		}
		if other, dup := ids[r.ID]; dup {
			t.Fatalf("%s and %s named shop:web share id %s", typ, other, r.ID)
		}
		ids[r.ID] = typ
		if ObjectID(typ, "shop", "web") != r.ID || ObjectID(typ, "shop", "db") == r.ID || ObjectID(typ, "other", "web") == r.ID {
			t.Fatalf("%s id is not derived from namespace and name alone", typ)
		}
	}
	// The id is UUIDv5(NAMESPACE_OID, "<Kind>:namespace:name"), as a pod's is of
	// "namespace:name": Python's uuid.uuid5(uuid.NAMESPACE_OID, "ConfigMap:default:busybox-test").
	if got, want := ObjectID(ConfigMapType, "default", "busybox-test"), "bc2ac010-b1ad-539b-9181-e574b01942f5"; got != want {
		t.Fatalf("ObjectID = %s, want %s", got, want)
	}
}

func TestBatchesOfDependencies(t *testing.T) {
	cm := ObjectResource(ConfigMapType, "ns", "cfg")
	sa := ObjectResource(ServiceAccountType, "ns", "app")
	g := Graph{}
	for _, name := range []string{"a", "b", "c"} {
		p := PodResource("ns", name)
		sec := ObjectResource(SecretType, "ns", "s-"+name)
		children := []string{sec.Key()}
		if name == "a" {
			children = append([]string{cm.Key()}, append(children, sa.Key())...)
		}
		g.Nodes = append(g.Nodes, Node{Resource: p, Children: children})
		if name == "a" {
			g.Nodes = append(g.Nodes, Node{Resource: cm})
		}
		g.Nodes = append(g.Nodes, Node{Resource: sec})
		if name == "a" {
			g.Nodes = append(g.Nodes, Node{Resource: sa})
		}
	}
	var got []string
	for _, b := range g.Batches(2) {
		got = append(got, b.Name+":"+b.Type+":"+string(rune('0'+len(b.Resources))))
	}
	want := []string{"pods-0000:" + PodType + ":2", "pods-0001:" + PodType + ":1", "configmaps-0000:" + ConfigMapType + ":1",
		"secrets-0000:" + SecretType + ":2", "secrets-0001:" + SecretType + ":1", "serviceaccounts-0000:" + ServiceAccountType + ":1"}
	if len(got) != len(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
	for i, b := range g.Batches(2) {
		if again := g.Batches(2)[i]; again.Name != b.Name || len(again.Resources) != len(b.Resources) || again.Resources[0].Key() != b.Resources[0].Key() {
			t.Fatalf("batch %d differs between two cuts: %+v, %+v", i, b, again)
		}
		prefix, ok := BatchPrefix(b.Type)
		if !ok || b.Name[:len(prefix)] != prefix {
			t.Fatalf("batch %s of %s: prefix %q %v", b.Name, b.Type, prefix, ok)
		}
	}
	if _, ok := BatchPrefix("OS::Nova::Server"); ok {
		t.Fatal("a prefix for a type the graph does not hold")
	}
	for typ, kind := range map[string]string{ConfigMapType: "ConfigMap", SecretType: "Secret", ServiceAccountType: "ServiceAccount", VolumeType: ""} {
		if Kind(typ) != kind || IsDependency(typ) != (kind != "") {
			t.Errorf("Kind(%s) = %q, IsDependency %v", typ, Kind(typ), IsDependency(typ))
		}
	}
}

func TestProblemOfAMissingObject(t *testing.T) {
	p := Problem{Pod: "shop:web", Object: ObjectRef("Secret", "db-creds"), Reason: "not found; referenced by env DB_PASSWORD of container app"}
	if got, want := p.Key(), "shop:web/Secret/db-creds"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	if got, want := p.Describe(), "Secret db-creds of pod shop:web is not in the checkpoint: not found; referenced by env DB_PASSWORD of container app"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}
