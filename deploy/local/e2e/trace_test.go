package e2e

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it keeps every span it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []span
	got   chan struct{}
}

type span struct {
	service, name, trace string
}

func newOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	r := &otlpReceiver{got: make(chan struct{}, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg collector.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.ResourceSpans {
			service := ""
			for _, a := range rs.Resource.GetAttributes() {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, span{service: service, name: s.Name, trace: hex.EncodeToString(s.TraceId)})
				}
			}
		}
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL + "/v1/traces"
}

func (r *otlpReceiver) all() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// TestTraceOfAProtect protects a pod with its Cinder volume with tracing exported over
// OTLP to a receiver of the test's: the operation's span, each step's delivery and the
// Swift, Cinder and Kubernetes calls of the steps are in one trace.
func TestTraceOfAProtect(t *testing.T) {
	recv, endpoint := newOTLPReceiver(t)
	e := newEnv(t, envOptions{extra: map[string]string{"TRACING_PROTOCOL": "http/protobuf", "TRACING_ENDPOINT": endpoint}})
	ns := e.st.Namespace(t, e.kube, "trace")
	e.podWithVolume(ns, "web", e.cinderVolume(ns+"-web", []byte("traced data")), true)
	req := events.ProtectRequest{Plan: events.Plan{ID: "plan-" + ns, Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}}
	ev := newEvent(events.ProtectRequested, req)
	id := choreographer.CheckpointID(req, ev)
	e.send(ev)
	if res := e.finished(id, 4*time.Minute); res.Status != events.StatusAvailable {
		t.Fatalf("finished %+v", res)
	}

	// Every span the protect must have, as service/name (the delivery spans are named by
	// event type, client spans by peer and method).
	want := []string{
		"choreographer/podguard.protect", // the root: the request's delivery is linked to it
		"list-pods/" + events.PodsList,
		"list-pods/kubernetes GET",
		"choreographer/" + events.PodsListed,
		"snapshot-metadata/" + events.MetadataSnapshot,
		"snapshot-metadata/swift PUT",
		"back-up-volume/" + events.VolumeBackup,
		"back-up-volume/cinder POST",
		"choreographer/" + events.VolumeBackedUp,
		"choreographer/" + events.MetadataSnapshotted,
	}
	deadline := time.After(time.Minute)
	for {
		spans := recv.all()
		trace := ""
		for _, s := range spans {
			if s.service == "choreographer" && s.name == "podguard.protect" {
				trace = s.trace
			}
		}
		in := map[string]bool{}
		for _, s := range spans {
			if s.trace == trace {
				in[s.service+"/"+s.name] = true
			}
		}
		var missing []string
		for _, w := range want {
			if !in[w] {
				missing = append(missing, w)
			}
		}
		if trace != "" && len(missing) == 0 {
			var names []string
			for n := range in {
				names = append(names, n)
			}
			sort.Strings(names)
			t.Logf("trace %s: %d spans of %d kinds: %s", trace, countIn(spans, trace), len(names), strings.Join(names, ", "))
			return
		}
		select {
		case <-recv.got:
		case <-deadline:
			t.Fatalf("trace %q lacks %v; spans received: %d", trace, missing, len(spans))
		}
	}
}

func countIn(spans []span, trace string) int {
	n := 0
	for _, s := range spans {
		if s.trace == trace {
			n++
		}
	}
	return n
}
