package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestMalformedRequestsAre400AndCreateNothing: through the broker, a request that
// violates the schema is answered 400 by the choreographer, never retried, and
// dead-lettered with the reason; posted directly, the reason names the field. No
// checkpoint is created.
func TestMalformedRequestsAre400AndCreateNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	bad := newEvent(events.ProtectRequested, map[string]any{"plan": map[string]any{"scope": map[string]any{"namespaces": []string{"Not_A_Namespace"}}}})
	e.send(bad)
	dl := e.await(time.Minute, "dead letter", func(ev event.Event) bool {
		return ev.ID() == bad.ID() && ev.Extensions()["knativeerrorcode"] != nil
	})
	if code := dl.Extensions()["knativeerrorcode"]; code != "400" && code != int32(400) {
		t.Fatalf("dead letter code %v", code)
	}
	data, _ := dl.Extensions()["knativeerrordata"].(string)
	reason, _ := base64.StdEncoding.DecodeString(data)
	if !strings.Contains(string(reason), "/plan/scope/namespaces/0") {
		t.Fatalf("dead letter reason %q", reason)
	}

	for _, body := range []string{
		`{"plan":{"scope":{"allNamespaces":true,"pods":["a:b"]}}}`,                                                     // exclusive scope
		`{"plan":{"scope":{"allNamespaces":true},"parameters":{"OS::Cinder::Volume":{"backup_mode":"differential"}}}}`, // options schema
		`{"plan":{"scope":{"allNamespaces":true}},"unexpected":1}`,
	} {
		req, _ := http.NewRequest(http.MethodPost, e.runner.Functions[events.FnChoreographer], strings.NewReader(body))
		for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "m1", "ce-source": "t", "ce-type": events.ProtectRequested, "content-type": "application/json",
			"Authorization": "Bearer " + e.deliveryToken(events.FnChoreographer, events.ProtectRequested)} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || len(msg) == 0 {
			t.Fatalf("%s: %d %q", body, resp.StatusCode, msg)
		}
		t.Logf("400: %s", strings.TrimSpace(string(msg)))
	}
	ids, _, err := e.readBank().ListCheckpoints(context.Background(), "", 10, "")
	if err != nil || len(ids) != 0 {
		t.Fatalf("checkpoints after bad requests: %v %v", ids, err)
	}
}

// holdBack answers 503 to the first deliveries of one event type to one function, so
// the broker's retries deliver it late; released closes when it is finally accepted.
type holdBack struct {
	fn, typ string
	until   func() bool
	once    sync.Once
	passed  chan struct{}
}

func (h *holdBack) wrap(name string, next http.Handler) http.Handler {
	if name != h.fn {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-type") == h.typ {
			if !h.until() {
				http.Error(w, "held back by the test", http.StatusServiceUnavailable)
				return
			}
			defer h.once.Do(func() { close(h.passed) })
		}
		next.ServeHTTP(w, r)
	})
}

// TestLateAndOutOfOrderResults: the backups' result is held back until after the
// checkpoint's deadline; the tick fails the unfinished volumes and finishes the
// checkpoint in error. The late result, and a stale copy of the listing replayed after
// the end, change nothing. (Volumes are backed up by the instant Cinder double here: the
// subject is ordering.)
func TestLateAndOutOfOrderResults(t *testing.T) {
	var finished atomic.Bool
	h := &holdBack{fn: events.FnChoreographer, typ: events.VolumeBackedUp, until: finished.Load, passed: make(chan struct{})}
	var listed atomic.Pointer[[]byte]
	var listedHeader http.Header
	capture := func(name string, next http.Handler) http.Handler {
		next = h.wrap(name, next)
		if name != events.FnChoreographer {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("ce-type") == events.PodsListed && listed.Load() == nil {
				b, _ := io.ReadAll(r.Body)
				listed.Store(&b)
				listedHeader = r.Header.Clone()
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			next.ServeHTTP(w, r)
		})
	}
	e := newEnv(t, envOptions{wrap: capture, cinder: backupvolume.NewInstantCinder(), extra: map[string]string{"PROTECT_TIMEOUT": "4s"}})
	ns := e.st.Namespace(t, e.kube, "late")
	for _, name := range []string{"a", "b"} {
		e.podWithVolume(ns, name, &volumes.Volume{ID: "late-" + ns + "-" + name}, true)
	}
	req := events.ProtectRequest{Plan: events.Plan{ID: "late", Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	res := e.finished(id, 2*time.Minute)
	finished.Store(true)
	if res.Status != events.StatusError || len(res.Failed) != 2 {
		t.Fatalf("finished %+v", res)
	}
	for _, f := range res.Failed {
		if !strings.Contains(f.Reason, "deadline") {
			t.Fatalf("failure %+v", f)
		}
	}
	// The held-back result is retried by the broker and now accepted: nothing changes.
	select {
	case <-h.passed:
	case <-time.After(time.Minute):
		t.Fatal("the late result was never delivered")
	}
	// A stale duplicate of the listing, delivered after the end.
	b := *listed.Load()
	post, _ := http.NewRequest(http.MethodPost, e.runner.Functions[events.FnChoreographer], bytes.NewReader(b))
	post.Header = listedHeader
	resp, err := http.DefaultClient.Do(post)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("replayed listing: %d", resp.StatusCode)
	}
	v := e.show(id)
	if v.Status != events.StatusError || len(v.History) != 2 {
		t.Fatalf("after late events: status %s, history %+v", v.Status, v.History)
	}
	for _, r := range v.Resources {
		if r.Type == "OS::Cinder::Volume" && (r.Status != events.StatusError || !strings.Contains(r.Reason, "deadline")) {
			t.Fatalf("volume %s: %s %s", r.Name, r.Status, r.Reason)
		}
	}
}

// flakyProxy sits in front of Swift's tempauth proxy and answers 503 while down is set.
type flakyProxy struct {
	down     atomic.Bool
	refused  atomic.Int64
	url      string
	shutdown func()
}

func newFlakyProxy(t *testing.T, st *stacktest.Stack) *flakyProxy {
	target, _ := url.Parse(strings.TrimSuffix(st.Env["ST_AUTH"], "/auth/v1.0"))
	rp := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() && !strings.HasPrefix(r.URL.Path, "/auth/") {
			p.refused.Add(1)
			http.Error(w, "Swift is down (test)", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return p
}

// TestSwiftUnavailableForAWhile: Swift answers 503 for a few seconds right after a
// protect starts. The steps answer 5xx, the broker retries with backoff, the tick
// re-drives, and the checkpoint ends available with one backup per volume.
func TestSwiftUnavailableForAWhile(t *testing.T) {
	st := stacktest.Load(t)
	p := newFlakyProxy(t, st)
	e := newEnv(t, envOptions{bankAuth: "tempauth", extra: map[string]string{"ST_AUTH": p.url + "/auth/v1.0"}})
	ns := e.st.Namespace(t, e.kube, "swiftdown")
	var vols []string
	for _, name := range []string{"a", "b"} {
		v := e.cinderVolume(ns+"-"+name, []byte(name))
		e.podWithVolume(ns, name, v, true)
		vols = append(vols, v.ID)
	}
	req := events.ProtectRequest{Plan: events.Plan{ID: "swiftdown", Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	p.down.Store(true)
	up := time.AfterFunc(4*time.Second, func() { p.down.Store(false) })
	defer up.Stop()
	e.send(ev)
	res := e.finished(id, 4*time.Minute)
	t.Logf("Swift refused %d requests while down", p.refused.Load())
	if p.refused.Load() == 0 {
		t.Fatal("Swift was never asked while down: the test proves nothing")
	}
	if res.Status != events.StatusAvailable || res.Resources != 4 {
		t.Fatalf("finished %+v", res)
	}
	for _, v := range vols {
		if bs := e.liveBackups(v); len(bs) != 1 {
			t.Fatalf("volume %s has %d backups", v, len(bs))
		}
	}
}
