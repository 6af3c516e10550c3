package backups_test

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

	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/openstack/cindertest"
)

// fakeCinder answers the backup endpoints of the Block Storage v3 API the way Cinder
// does: microversion header, 202s, 404s, the 400s of delete and incremental create,
// and lists paged with backups_links.
type fakeCinder struct {
	t   *testing.T
	srv *cindertest.Server

	mu       sync.Mutex
	backups  []*fakeBackup // in creation order
	clock    time.Time
	pageSize int
	// noMetadata answers as an endpoint that ignores the microversion.
	noMetadata bool
	// onGet runs, under mu, before a GET of one backup is answered.
	onGet func(b *fakeBackup)
	// lists counts the list requests (pages).
	lists int
	// lastCreate is the body of the last create request.
	lastCreate map[string]any
}

type fakeBackup struct {
	ID, VolumeID, Name, Description, Container string
	Status, FailReason                         string
	Parent                                     string
	Incremental                                bool
	Metadata                                   map[string]string
	Created                                    time.Time
	Gets                                       int
}

func newFakeCinder(t *testing.T) *fakeCinder {
	f := &fakeCinder{t: t, pageSize: 2, clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	f.srv = cindertest.New(t, backups.Microversion, f.serve)
	return f
}

func (f *fakeCinder) client() *backups.Client {
	c := backups.New(f.srv.ServiceClient())
	c.PollInterval = time.Millisecond
	return c
}

// add stores a backup directly, as if created earlier.
func (f *fakeCinder) add(b fakeBackup) *fakeBackup {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(b)
}

func (f *fakeCinder) addLocked(b fakeBackup) *fakeBackup {
	f.clock = f.clock.Add(time.Second)
	if b.ID == "" {
		b.ID = fmt.Sprintf("b%02d", len(f.backups)+1)
	}
	if b.Created.IsZero() {
		b.Created = f.clock
	}
	if b.Metadata == nil {
		b.Metadata = map[string]string{}
	}
	f.backups = append(f.backups, &b)
	return &b
}

func (f *fakeCinder) find(id string) *fakeBackup {
	for _, b := range f.backups {
		if b.ID == id {
			return b
		}
	}
	return nil
}

func (f *fakeCinder) dependents(id string) bool {
	return slices.ContainsFunc(f.backups, func(b *fakeBackup) bool { return b.Parent == id })
}

func (f *fakeCinder) view(b *fakeBackup) map[string]any {
	v := map[string]any{
		"id": b.ID, "volume_id": b.VolumeID, "name": b.Name, "description": b.Description,
		"status": b.Status, "fail_reason": nil, "size": 1, "object_count": 0,
		"container": b.Container, "is_incremental": b.Incremental,
		"has_dependent_backups": f.dependents(b.ID), "snapshot_id": nil,
		"created_at":        b.Created.Format("2006-01-02T15:04:05.000000"),
		"updated_at":        b.Created.Format("2006-01-02T15:04:05.000000"),
		"data_timestamp":    b.Created.Format("2006-01-02T15:04:05.000000"),
		"availability_zone": nil,
		"links":             []any{},
	}
	if b.FailReason != "" {
		v["fail_reason"] = b.FailReason
	}
	if !f.noMetadata {
		v["metadata"] = b.Metadata
	}
	return v
}

func (f *fakeCinder) serve(w http.ResponseWriter, r *http.Request, path string) {
	rest, ok := strings.CutPrefix(path, "backups")
	if !ok {
		cindertest.Fault(w, http.StatusNotFound, "no such resource "+r.URL.Path)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && rest == "/detail":
		f.list(w, r.URL.Query())
	case r.Method == http.MethodPost && rest == "":
		f.create(w, r)
	case r.Method == http.MethodGet && strings.Count(rest, "/") == 1:
		b := f.find(rest[1:])
		if b == nil {
			cindertest.Fault(w, http.StatusNotFound, "Backup "+rest[1:]+" could not be found.")
			return
		}
		b.Gets++
		if f.onGet != nil {
			f.onGet(b)
		}
		if b.Status == backups.StatusDeleted {
			f.backups = slices.DeleteFunc(f.backups, func(x *fakeBackup) bool { return x == b })
			cindertest.Fault(w, http.StatusNotFound, "Backup "+b.ID+" could not be found.")
			return
		}
		cindertest.JSON(w, http.StatusOK, map[string]any{"backup": f.view(b)})
	case r.Method == http.MethodDelete && strings.Count(rest, "/") == 1:
		f.delete(w, rest[1:])
	default:
		cindertest.Fault(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}

func (f *fakeCinder) list(w http.ResponseWriter, q url.Values) {
	f.lists++
	for k := range q {
		if k != "volume_id" && k != "limit" && k != "marker" {
			cindertest.Fault(w, http.StatusBadRequest, "Invalid filter keys: "+k)
			return
		}
	}
	var sel []*fakeBackup
	for _, b := range slices.Backward(f.backups) { // newest first, as Cinder sorts by default
		if v := q.Get("volume_id"); b.Status != backups.StatusDeleted && (v == "" || b.VolumeID == v) {
			sel = append(sel, b)
		}
	}
	cindertest.Page(f.srv, w, q, "backups", f.pageSize, sel, func(b *fakeBackup) string { return b.ID }, func(b *fakeBackup) any { return f.view(b) })
}

func (f *fakeCinder) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Backup map[string]any `json:"backup"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Backup == nil {
		cindertest.Fault(w, http.StatusBadRequest, "malformed request body")
		return
	}
	f.lastCreate = req.Backup
	str := func(k string) string { s, _ := req.Backup[k].(string); return s }
	b := fakeBackup{VolumeID: str("volume_id"), Name: str("name"), Description: str("description"),
		Container: str("container"), Status: backups.StatusCreating, Metadata: map[string]string{}}
	if b.VolumeID == "" {
		cindertest.Fault(w, http.StatusBadRequest, "volume_id is required")
		return
	}
	if m, ok := req.Backup["metadata"].(map[string]any); ok {
		for k, v := range m {
			b.Metadata[k], _ = v.(string)
		}
	}
	if inc, _ := req.Backup["incremental"].(bool); inc {
		var latest *fakeBackup
		for _, x := range f.backups {
			if x.VolumeID == b.VolumeID && (latest == nil || x.Created.After(latest.Created)) {
				latest = x
			}
		}
		switch {
		case latest == nil:
			cindertest.Fault(w, http.StatusBadRequest, "Invalid backup: No backups available to do an incremental backup.")
			return
		case latest.Status != backups.StatusAvailable:
			cindertest.Fault(w, http.StatusBadRequest, "Invalid backup: The parent backup must be available for incremental backup.")
			return
		}
		b.Incremental, b.Parent = true, latest.ID
	}
	nb := f.addLocked(b)
	cindertest.JSON(w, http.StatusAccepted, map[string]any{"backup": map[string]any{"id": nb.ID, "name": nb.Name, "links": []any{}}})
}

func (f *fakeCinder) delete(w http.ResponseWriter, id string) {
	b := f.find(id)
	switch {
	case b == nil:
		cindertest.Fault(w, http.StatusNotFound, "Backup "+id+" could not be found.")
	case b.Status != backups.StatusAvailable && b.Status != backups.StatusError:
		cindertest.Fault(w, http.StatusBadRequest, "Invalid backup: Backup status must be available or error")
	case f.dependents(id):
		cindertest.Fault(w, http.StatusBadRequest, "Invalid backup: Incremental backups exist for this backup.")
	default:
		// The next read finds it gone.
		b.Status = backups.StatusDeleting
		f.onGetDeleting(b)
		w.WriteHeader(http.StatusAccepted)
	}
}

// onGetDeleting makes a backup being deleted vanish on its second read; until then it
// still counts as a dependent of its parent, as in Cinder.
func (f *fakeCinder) onGetDeleting(b *fakeBackup) {
	b.Gets = 0
	prev := f.onGet
	f.onGet = func(x *fakeBackup) {
		if x == b && x.Status == backups.StatusDeleting && x.Gets >= 2 {
			x.Status = backups.StatusDeleted
			x.Parent = ""
		}
		if prev != nil {
			prev(x)
		}
	}
}
