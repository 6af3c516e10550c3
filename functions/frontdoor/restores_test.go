package frontdoor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access/accesstest"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/stacktest"
)

// restoresFixture is a bank on the local stack's Swift holding a checkpoint and three
// restores in every state a view shows.
type restoresFixture struct {
	b *bank.Bank
	// cp is the checkpoint; first, second and orphan are restores, oldest first
	// (orphan restores a checkpoint that no longer exists).
	cp, first, second, orphan string
	pods                      [3]graph.Resource
	vols                      [3]graph.Resource
	data                      map[string]json.RawMessage // what first recorded, by key
}

func newRestoresFixture(t *testing.T) *restoresFixture {
	t.Helper()
	st := stacktest.Load(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	container := "podguard-test-restores-" + uuid.NewString()[:8]
	b, err := bank.Open(ctx, st.Bank("keystone", container), st.OpenStack())
	if err != nil {
		t.Fatal(err)
	}
	st.RemoveContainerAtEnd(t, "keystone", container)
	f := &restoresFixture{b: b, cp: uuid.NewString(), first: uuid.NewString(), second: uuid.NewString(), orphan: uuid.NewString(),
		data: map[string]json.RawMessage{}}
	for i, name := range []string{"db", "web", "job"} {
		f.pods[i] = graph.PodResource("shop", name)
		f.vols[i] = graph.Resource{Type: graph.VolumeType, ID: uuid.NewString(), Name: fmt.Sprintf("shop/data-%d", i)}
		if i < 2 { // volume 2 was listed without a size
			f.vols[i].ExtraInfo = map[string]string{graph.InfoSizeBytes: fmt.Sprint((i + 1) << 30)}
		}
	}
	// pod db -> volumes 0 and 1, pod web -> volume 2, pod job has none. With batches of
	// two: pods-0000 = db, web; pods-0001 = job; volumes-0000 = 0, 1; volumes-0001 = 2.
	g := &graph.Graph{Nodes: []graph.Node{
		{Resource: f.pods[0], Children: []string{f.vols[0].Key(), f.vols[1].Key()}},
		{Resource: f.vols[0]}, {Resource: f.vols[1]},
		{Resource: f.pods[1], Children: []string{f.vols[2].Key()}},
		{Resource: f.vols[2]},
		{Resource: f.pods[2]},
	}}
	created := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = b.CreateCheckpoint(ctx, bank.Checkpoint{ID: f.cp, Plan: bank.PlanRef{ID: "shop"}, Provider: checkpoint.ProviderID,
		CreatedAt: created, Deadline: created.Add(24 * time.Hour), BatchSize: 2})
	must(err)
	must(b.PutGraph(ctx, f.cp, g))

	// first: volume 0 restored, volume 1 failed (its record and a failure with another
	// reason), volumes-0001 pending, pod web failed without a record, pod job restored,
	// and a failure that is no resource of the checkpoint. It ended in fail.
	_, err = b.CreateRestore(ctx, bank.Restore{ID: f.first, Checkpoint: f.cp, CreatedAt: created.Add(time.Minute), Deadline: created.Add(2 * time.Hour),
		Parameters: events.RestoreParameters{RestoreName: "first", Namespace: "shop-restored"}})
	must(err)
	ops := b.Restores()
	rec := func(key string, v any) json.RawMessage {
		data, err := json.Marshal(v)
		must(err)
		f.data[key] = data
		return data
	}
	must(ops.PutRecord(ctx, f.first, bank.Record{Batch: "volumes-0000", UpdatedAt: created, Resources: map[string]bank.ResourceRecord{
		f.vols[0].Key(): {Status: events.StatusAvailable, Data: rec(f.vols[0].Key(), checkpoint.RestoredVolume{OriginalID: f.vols[0].ID, VolumeID: "new-0", BackupID: "b0", Name: f.cp + "@" + f.vols[0].ID})},
		f.vols[1].Key(): {Status: events.StatusError, Reason: "Cinder could not restore backup b1 into volume new-1 (status error)",
			Data: rec(f.vols[1].Key(), checkpoint.RestoredVolume{OriginalID: f.vols[1].ID, VolumeID: "new-1", BackupID: "b1"})},
	}}))
	must(ops.PutRecord(ctx, f.first, bank.Record{Batch: "pods-0001", UpdatedAt: created, Resources: map[string]bank.ResourceRecord{
		f.pods[2].Key(): {Status: events.StatusAvailable, Data: rec(f.pods[2].Key(), checkpoint.RestoredPod{Original: "shop:job", Namespace: "shop-restored", Name: "job", Phase: "Running"})},
	}}))
	must(ops.Fail(ctx, f.first, f.vols[1].Key(), "volume 1 failed first"))
	must(ops.Fail(ctx, f.first, f.vols[1].Key(), "a second reason is not kept"))
	must(ops.Fail(ctx, f.first, f.pods[1].Key(), "a volume of shop:web could not be restored"))
	must(ops.Fail(ctx, f.first, "restore", "the restore's deadline passed"))
	must(ops.AddPending(ctx, f.first, []string{"volumes-0001", "pods-0000"}))
	must(ops.SetStatus(ctx, f.first, events.RestoreFail))

	// second: just started.
	_, err = b.CreateRestore(ctx, bank.Restore{ID: f.second, Checkpoint: f.cp, CreatedAt: created.Add(2 * time.Minute), Deadline: created.Add(3 * time.Hour)})
	must(err)

	// orphan: its checkpoint is gone; it recorded one volume.
	_, err = b.CreateRestore(ctx, bank.Restore{ID: f.orphan, Checkpoint: uuid.NewString(), CreatedAt: created.Add(3 * time.Minute), Deadline: created.Add(4 * time.Hour),
		Parameters: events.RestoreParameters{RestoreName: "orphan"}})
	must(err)
	must(ops.PutRecord(ctx, f.orphan, bank.Record{Batch: "volumes-0000", UpdatedAt: created, Resources: map[string]bank.ResourceRecord{
		graph.VolumeType + "#gone": {Status: events.StatusAvailable, Data: json.RawMessage(`{"original_volume_id":"gone","volume_id":"new-gone","backup_id":"bg"}`)},
	}}))
	must(ops.SetStatus(ctx, f.orphan, events.RestoreSuccess))
	return f
}

// want is the view of restore first.
func (f *restoresFixture) wantFirst() []checkpoint.RestoreResourceView {
	rv := func(r graph.Resource, status, reason string) checkpoint.RestoreResourceView {
		return checkpoint.RestoreResourceView{Resource: r, Status: status, Reason: reason, Restored: f.data[r.Key()]}
	}
	return []checkpoint.RestoreResourceView{
		rv(f.pods[0], events.StatusRestoring, ""),
		rv(f.vols[0], events.StatusAvailable, ""),
		rv(f.vols[1], events.StatusError, "volume 1 failed first"),
		rv(f.pods[1], events.StatusError, "a volume of shop:web could not be restored"),
		rv(f.vols[2], events.StatusRestoring, ""),
		rv(f.pods[2], events.StatusAvailable, ""),
	}
}

func TestRestoreViews(t *testing.T) {
	f := newRestoresFixture(t)
	ctx := context.Background()
	r := checkpoint.BankRestores(f.b)

	v, err := checkpoint.LoadRestore(ctx, r, f.first)
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != f.first || v.Checkpoint != f.cp || v.Status != events.RestoreFail || v.Parameters.RestoreName != "first" || v.Parameters.Namespace != "shop-restored" {
		t.Errorf("view = %+v", v)
	}
	if got := statuses(v.History); !slices.Equal(got, []string{events.RestoreInProgress, events.RestoreFail}) {
		t.Errorf("history = %v", got)
	}
	checkResources(t, v.Resources, f.wantFirst())
	if len(v.Failed) != 1 || v.Failed[0].Key != "restore" || v.Failed[0].Reason != "the restore's deadline passed" {
		t.Errorf("failed = %+v, want only the failure that is no resource", v.Failed)
	}
	// Progress: pod db pending, web failed, job done; volume 0 done, 1 failed, 2 pending
	// (and of no known size); ended, so elapsed runs to the end and nothing is estimated.
	p := v.Progress
	if got, want := p.Resources[graph.PodType], (events.Count{Done: 1, Failed: 1, Total: 3}); got != want {
		t.Errorf("pods %+v, want %+v", got, want)
	}
	if got, want := p.Resources[graph.VolumeType], (events.Count{Done: 1, Failed: 1, Total: 3}); got != want {
		t.Errorf("volumes %+v, want %+v", got, want)
	}
	if want := (events.Bytes{Done: 1 << 30, Failed: 2 << 30, Total: 3 << 30, Unsized: 1}); p.Bytes != want {
		t.Errorf("bytes %+v, want %+v", p.Bytes, want)
	}
	if end := v.History[len(v.History)-1].At.Sub(v.CreatedAt).Seconds(); p.ElapsedSeconds < end-0.01 || p.ElapsedSeconds > end+0.01 || p.RemainingSeconds != nil {
		t.Errorf("elapsed %v remaining %v, want %v up to the end and no estimate", p.ElapsedSeconds, p.RemainingSeconds, end)
	}

	v, err = checkpoint.LoadRestore(ctx, r, f.second)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != events.RestoreInProgress || len(v.Resources) != 6 || len(v.Failed) != 0 {
		t.Fatalf("second = %+v", v)
	}
	for _, res := range v.Resources {
		if res.Status != events.StatusRestoring || res.Reason != "" || res.Restored != nil {
			t.Errorf("resource of a restore just started = %+v, want restoring", res)
		}
	}
	if p := v.Progress; p.Finished() != 0 || p.Resources[graph.PodType].Total != 3 || p.Bytes.Total != 3<<30 || p.RemainingSeconds != nil || p.ElapsedSeconds < 3400 {
		t.Errorf("progress of a restore just started = %+v, want nothing finished, no estimate, elapsed since its request", p)
	}

	v, err = checkpoint.LoadRestore(ctx, r, f.orphan)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != events.RestoreSuccess || len(v.Resources) != 1 || v.Resources[0].Key() != graph.VolumeType+"#gone" ||
		v.Resources[0].Status != events.StatusAvailable || !bytes.Contains(v.Resources[0].Restored, []byte("new-gone")) {
		t.Fatalf("restore of a removed checkpoint = %+v, want the volume it recorded", v)
	}

	if _, err := checkpoint.LoadRestore(ctx, r, uuid.NewString()); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("unknown restore: err = %v, want bank.ErrNotFound", err)
	}

	// Lists: newest first, in pages.
	page, next, err := checkpoint.ListRestores(ctx, r, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(page), []string{f.orphan, f.second}) || next == "" {
		t.Fatalf("first page = %+v, next %q", page, next)
	}
	if page[0].RestoreName != "orphan" || page[0].Status != events.RestoreSuccess || page[1].Status != events.RestoreInProgress || page[1].Checkpoint != f.cp {
		t.Errorf("first page = %+v", page)
	}
	page, next, err = checkpoint.ListRestores(ctx, r, 2, next)
	if err != nil {
		t.Fatal(err)
	}
	want := checkpoint.RestoreSummary{ID: f.first, Checkpoint: f.cp, Status: events.RestoreFail, CreatedAt: page[0].CreatedAt, RestoreName: "first", Namespace: "shop-restored"}
	if len(page) != 1 || page[0] != want || next != "" {
		t.Fatalf("second page = %+v, next %q; want %+v", page, next, want)
	}
}

func statuses(h []bank.StatusChange) []string {
	out := make([]string, 0, len(h))
	for _, c := range h {
		out = append(out, c.Status)
	}
	return out
}

func ids(s []checkpoint.RestoreSummary) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		out = append(out, x.ID)
	}
	return out
}

func checkResources(t *testing.T, got, want []checkpoint.RestoreResourceView) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d resources, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if !reflect.DeepEqual(g.Resource, w.Resource) || g.Status != w.Status || g.Reason != w.Reason || !jsonEqual(g.Restored, w.Restored) {
			t.Errorf("resource %d = %+v %s %q restored %s\nwant %+v %s %q restored %s", i, g.Resource, g.Status, g.Reason, g.Restored, w.Resource, w.Status, w.Reason, w.Restored)
		}
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func TestRestoresAsEvents(t *testing.T) {
	f := newRestoresFixture(t)
	st := stacktest.Load(t)
	s, err := New(context.Background(), &Config{Bank: bankConfig(t, f.b), OpenStack: st.OpenStack(), Kube: st.KubeConfig(), Audience: "podguard"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What the bank answers is the point here; who may ask is TestFrontDoor's.
	s.authz = accesstest.AllowAll(admin.Username)
	for _, typ := range []string{events.RestoreShow, events.RestoresList} {
		if !slices.Contains(Accepts, typ) {
			t.Errorf("Accepts lacks %s", typ)
		}
	}

	var shown struct {
		Restore string                  `json:"restore"`
		Found   bool                    `json:"found"`
		View    *checkpoint.RestoreView `json:"view"`
	}
	ask(t, s, events.RestoreShow, map[string]any{"restore": f.first}, events.RestoreShown, &shown)
	if shown.Restore != f.first || !shown.Found || shown.View == nil || shown.View.Status != events.RestoreFail {
		t.Fatalf("shown = %+v", shown)
	}
	checkResources(t, shown.View.Resources, f.wantFirst())

	unknown := uuid.NewString()
	shown.View = nil
	ask(t, s, events.RestoreShow, map[string]any{"restore": unknown}, events.RestoreShown, &shown)
	if shown.Restore != unknown || shown.Found || shown.View != nil {
		t.Fatalf("unknown restore shown = %+v, want found=false", shown)
	}

	var listed struct {
		Restores []checkpoint.RestoreSummary `json:"restores"`
		Next     string                      `json:"next"`
	}
	ask(t, s, events.RestoresList, map[string]any{"limit": 2}, events.RestoresListed, &listed)
	if !slices.Equal(ids(listed.Restores), []string{f.orphan, f.second}) || listed.Next == "" {
		t.Fatalf("listed = %+v", listed)
	}
	ask(t, s, events.RestoresList, map[string]any{"limit": 2, "marker": listed.Next}, events.RestoresListed, &listed)
	if !slices.Equal(ids(listed.Restores), []string{f.first}) || listed.Next != "" {
		t.Fatalf("second page = %+v", listed)
	}
	ask(t, s, events.RestoresList, map[string]any{}, events.RestoresListed, &listed)
	if !slices.Equal(ids(listed.Restores), []string{f.orphan, f.second, f.first}) {
		t.Fatalf("default page = %+v", listed)
	}
}

func TestRestoresOverHTTP(t *testing.T) {
	f := newRestoresFixture(t)
	s := newTestStep(t, f.b, checkpoint.BankRestores(f.b))
	srv := httptest.NewServer(s.ReadAPI())
	defer srv.Close()

	var v checkpoint.RestoreView
	if code := get(t, srv.URL+"/api/restores/"+f.first, &v); code != http.StatusOK {
		t.Fatalf("GET restore: %d", code)
	}
	if v.ID != f.first || v.Status != events.RestoreFail || len(v.Failed) != 1 {
		t.Errorf("view = %+v", v)
	}
	checkResources(t, v.Resources, f.wantFirst())
	if code := get(t, srv.URL+"/api/restores/"+uuid.NewString(), nil); code != http.StatusNotFound {
		t.Errorf("GET unknown restore: %d, want 404", code)
	}

	var listed struct {
		Restores []checkpoint.RestoreSummary `json:"restores"`
		Next     string                      `json:"next"`
	}
	if code := get(t, srv.URL+"/api/restores?limit=2", &listed); code != http.StatusOK || !slices.Equal(ids(listed.Restores), []string{f.orphan, f.second}) || listed.Next == "" {
		t.Fatalf("GET restores?limit=2: %d %+v", code, listed)
	}
	if code := get(t, srv.URL+"/api/restores?limit=2&marker="+url.QueryEscape(listed.Next), &listed); code != http.StatusOK || !slices.Equal(ids(listed.Restores), []string{f.first}) || listed.Next != "" {
		t.Fatalf("GET second page: %d %+v", code, listed)
	}
	for _, bad := range []string{"0", "1001", "x"} {
		if code := get(t, srv.URL+"/api/restores?limit="+bad, nil); code != http.StatusBadRequest {
			t.Errorf("GET restores?limit=%s: %d, want 400", bad, code)
		}
	}
	// Checkpoints are still answered beside restores.
	var cp checkpoint.View
	if code := get(t, srv.URL+"/api/checkpoints/"+f.cp, &cp); code != http.StatusOK || cp.ID != f.cp || len(cp.Resources) != 6 {
		t.Fatalf("GET checkpoint: %d %+v", code, cp)
	}
	// Protecting, its graph listed but not fanned out: nothing is done yet.
	if p := cp.Progress; p.Finished() != 0 || p.Resources[graph.VolumeType].Total != 3 || cp.Resources[0].Status != events.StatusProtecting {
		t.Errorf("checkpoint before its fan-out: progress %+v, first resource %s", p, cp.Resources[0].Status)
	}
}

// ask sends a request event to the step, checks both events against their schemas and
// decodes the reply.
func ask(t *testing.T, s *Step, typ string, data any, replyType string, out any) {
	t.Helper()
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource("test")
	e.SetType(typ)
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	validate(t, e)
	reply, err := s.Handle(asAdmin(context.Background()), e)
	if err != nil || reply == nil {
		t.Fatalf("%s: %v, %v", typ, reply, err)
	}
	if reply.Type() != replyType {
		t.Fatalf("%s answered %s, want %s", typ, reply.Type(), replyType)
	}
	validate(t, *reply)
	if err := reply.DataAs(out); err != nil {
		t.Fatal(err)
	}
}

// validate checks an event's data against its type's schema: through the catalog's
// validator when the type is in the catalog, else against the schema file itself.
func validate(t *testing.T, e event.Event) {
	t.Helper()
	if slices.ContainsFunc(events.Catalog(), func(ty events.Type) bool { return ty.Name == e.Type() }) {
		v, err := events.NewValidator()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); err != nil {
			t.Fatalf("%s: %v", e.Type(), err)
		}
		return
	}
	c := jsonschema.NewCompiler()
	for _, name := range []string{"common", e.Type()} {
		b, err := events.Schema(name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(events.SchemaURL(name), doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Compile(events.SchemaURL(e.Type()))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Data()))
	if err != nil {
		t.Fatalf("%s data: %v", e.Type(), err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("%s data does not match its schema: %v\n%s", e.Type(), err, e.Data())
	}
}

// get reads a JSON answer into out (when not nil) and returns the status code.
func get(t *testing.T, u string, out any) int {
	t.Helper()
	resp, err := getAsAdmin(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// bankConfig is the configuration of the fixture's bank, as the function reads it.
func bankConfig(t *testing.T, b *bank.Bank) bank.Config {
	return stacktest.Load(t).Bank("keystone", b.Container())
}
