package volumes_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podguard/podguard/shared/openstack/cindertest"
	"github.com/podguard/podguard/shared/openstack/volumes"
)

// fakeCinder answers the volume (and message) endpoints of the Block Storage v3 API the
// way Cinder does: microversion header, 202s, 404s, the 400 of delete, the metadata
// filter read as a Python literal, and lists paged with volumes_links.
type fakeCinder struct {
	t   *testing.T
	srv *cindertest.Server

	mu       sync.Mutex
	volumes  []*fakeVolume // in creation order
	messages map[string][]map[string]any
	clock    time.Time
	pageSize int
	// onGet runs, under mu, before a GET of one volume is answered.
	onGet func(v *fakeVolume)
	// lists counts the list requests (pages); filters records their metadata filters.
	lists   int
	filters []map[string]string
	// lastCreate is the body of the last create request.
	lastCreate map[string]any
	// backedUp is the volume metadata each backup holds, restored with its data.
	backedUp map[string]map[string]string
}

type fakeVolume struct {
	ID, Name, Description, Status, BackupID string
	Size                                    int
	Metadata                                map[string]string
	Created                                 time.Time
	Gets                                    int
}

func newFakeCinder(t *testing.T) *fakeCinder {
	f := &fakeCinder{t: t, pageSize: 2, clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), messages: map[string][]map[string]any{}, backedUp: map[string]map[string]string{}}
	f.srv = cindertest.New(t, volumes.Microversion, f.serve)
	return f
}

func (f *fakeCinder) client() *volumes.Client {
	c := volumes.New(f.srv.ServiceClient())
	c.PollInterval = time.Millisecond
	return c
}

func (f *fakeCinder) add(v fakeVolume) *fakeVolume {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(v)
}

func (f *fakeCinder) addLocked(v fakeVolume) *fakeVolume {
	f.clock = f.clock.Add(time.Second)
	if v.ID == "" {
		v.ID = fmt.Sprintf("v%02d", len(f.volumes)+1)
	}
	if v.Created.IsZero() {
		v.Created = f.clock
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	if v.Size == 0 {
		v.Size = 1
	}
	f.volumes = append(f.volumes, &v)
	return &v
}

func (f *fakeCinder) find(id string) *fakeVolume {
	for _, v := range f.volumes {
		if v.ID == id {
			return v
		}
	}
	return nil
}

// view is Cinder Zed's detailed view: no backup_id, even at 3.47.
func view(v *fakeVolume) map[string]any {
	return map[string]any{
		"id": v.ID, "name": v.Name, "description": v.Description, "status": v.Status,
		"size": v.Size, "availability_zone": "nova", "volume_type": "__DEFAULT__",
		"metadata":    v.Metadata,
		"created_at":  v.Created.Format("2006-01-02T15:04:05.000000"),
		"updated_at":  v.Created.Format("2006-01-02T15:04:05.000000"),
		"attachments": []any{}, "links": []any{}, "bootable": "false", "encrypted": false,
		"snapshot_id": nil, "source_volid": nil, "multiattach": false,
	}
}

func (f *fakeCinder) serve(w http.ResponseWriter, r *http.Request, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if path == "messages" && r.Method == http.MethodGet {
		ms := f.messages[r.URL.Query().Get("resource_uuid")]
		cindertest.JSON(w, http.StatusOK, map[string]any{"messages": append([]map[string]any{}, ms...)})
		return
	}
	rest, ok := strings.CutPrefix(path, "volumes")
	if !ok {
		cindertest.Fault(w, http.StatusNotFound, "no such resource "+r.URL.Path)
		return
	}
	switch {
	case r.Method == http.MethodGet && rest == "/detail":
		f.list(w, r.URL.Query())
	case r.Method == http.MethodPost && rest == "":
		f.create(w, r)
	case r.Method == http.MethodGet && strings.Count(rest, "/") == 1:
		v := f.find(rest[1:])
		if v == nil {
			cindertest.Fault(w, http.StatusNotFound, "Volume "+rest[1:]+" could not be found.")
			return
		}
		v.Gets++
		if f.onGet != nil {
			f.onGet(v)
		}
		if v.Status == "deleted" {
			f.volumes = slices.DeleteFunc(f.volumes, func(x *fakeVolume) bool { return x == v })
			cindertest.Fault(w, http.StatusNotFound, "Volume "+v.ID+" could not be found.")
			return
		}
		cindertest.JSON(w, http.StatusOK, map[string]any{"volume": view(v)})
	case r.Method == http.MethodDelete && strings.Count(rest, "/") == 1:
		f.delete(w, rest[1:])
	case r.Method == http.MethodPost && strings.HasSuffix(rest, "/metadata") && strings.Count(rest, "/") == 2:
		f.setMetadata(w, r, strings.Split(rest, "/")[1])
	default:
		cindertest.Fault(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}

// pyDict reads the metadata filter as Cinder's ast.literal_eval would, for the two forms
// clients send: JSON, and gophercloud's {'k':'v', ...} with unescaped single quotes.
func pyDict(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal([]byte(s), &m); err == nil {
		return m, nil
	}
	body, ok := strings.CutPrefix(s, "{")
	if body, ok = strings.CutSuffix(body, "}"); !ok {
		return nil, fmt.Errorf("malformed node or string: %s", s)
	}
	for _, kv := range strings.Split(body, ", ") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.Count(k, "'") != 2 || strings.Count(v, "'") != 2 {
			return nil, fmt.Errorf("invalid syntax: %s", s)
		}
		m[strings.Trim(k, "'")] = strings.Trim(v, "'")
	}
	return m, nil
}

func (f *fakeCinder) list(w http.ResponseWriter, q url.Values) {
	f.lists++
	var filter map[string]string
	if s := q.Get("metadata"); s != "" {
		var err error
		if filter, err = pyDict(s); err != nil {
			cindertest.Fault(w, http.StatusBadRequest, "Invalid metadata filter: "+err.Error())
			return
		}
		f.filters = append(f.filters, filter)
	}
	var sel []*fakeVolume
	for _, v := range slices.Backward(f.volumes) {
		if v.Status == "deleted" {
			continue
		}
		match := q.Get("name") == "" || v.Name == q.Get("name")
		for k, want := range filter {
			if got, ok := v.Metadata[k]; !ok || got != want {
				match = false
			}
		}
		if match {
			sel = append(sel, v)
		}
	}
	cindertest.Page(f.srv, w, q, "volumes", f.pageSize, sel, func(v *fakeVolume) string { return v.ID }, func(v *fakeVolume) any { return view(v) })
}

func (f *fakeCinder) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Volume map[string]any `json:"volume"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Volume == nil {
		cindertest.Fault(w, http.StatusBadRequest, "malformed request body")
		return
	}
	f.lastCreate = req.Volume
	str := func(k string) string { s, _ := req.Volume[k].(string); return s }
	v := fakeVolume{Name: str("name"), Description: str("description"), BackupID: str("backup_id"),
		Status: volumes.StatusCreating, Metadata: map[string]string{}}
	if size, ok := req.Volume["size"].(float64); ok {
		v.Size = int(size)
	} else if v.BackupID == "" {
		cindertest.Fault(w, http.StatusBadRequest, "size is required")
		return
	}
	if m, ok := req.Volume["metadata"].(map[string]any); ok {
		for k, x := range m {
			v.Metadata[k], _ = x.(string)
		}
	}
	nv := f.addLocked(v)
	cindertest.JSON(w, http.StatusAccepted, map[string]any{"volume": view(nv)})
}

func (f *fakeCinder) delete(w http.ResponseWriter, id string) {
	v := f.find(id)
	switch {
	case v == nil:
		cindertest.Fault(w, http.StatusNotFound, "Volume "+id+" could not be found.")
	case !slices.Contains([]string{"available", "error", "error_restoring", "error_extending"}, v.Status):
		cindertest.Fault(w, http.StatusBadRequest, "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.")
	default:
		v.Status = volumes.StatusDeleting
		v.Gets = 0
		prev := f.onGet
		f.onGet = func(x *fakeVolume) {
			if x == v && x.Status == volumes.StatusDeleting && x.Gets >= 2 {
				x.Status = "deleted"
			}
			if prev != nil {
				prev(x)
			}
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// finishRestore completes the restore of a volume created from a backup as Cinder does:
// available, with the backed up volume's metadata in place of its own, plus src_backup_id.
func (f *fakeCinder) finishRestore(v *fakeVolume) {
	v.Status = volumes.StatusAvailable
	v.Metadata = map[string]string{volumes.MetadataSourceBackup: v.BackupID}
	for k, x := range f.backedUp[v.BackupID] {
		v.Metadata[k] = x
	}
}

func (f *fakeCinder) setMetadata(w http.ResponseWriter, r *http.Request, id string) {
	v := f.find(id)
	if v == nil {
		cindertest.Fault(w, http.StatusNotFound, "Volume "+id+" could not be found.")
		return
	}
	var req struct {
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Metadata == nil {
		cindertest.Fault(w, http.StatusBadRequest, "malformed request body")
		return
	}
	for k, x := range req.Metadata {
		v.Metadata[k] = x
	}
	cindertest.JSON(w, http.StatusOK, map[string]any{"metadata": v.Metadata})
}
