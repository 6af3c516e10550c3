package listpods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/kube"
)

type fakeResolver struct {
	g     *graph.Graph
	found bool
	err   error
	got   kube.Selection
}

func (f *fakeResolver) Resolve(_ context.Context, sel kube.Selection) (*graph.Graph, error) {
	f.got = sel
	return f.g, f.err
}
func (f *fakeResolver) Show(_ context.Context, ref string) (*graph.Graph, bool, error) {
	return f.g, f.found, f.err
}

type memStore struct{ objects map[string][]byte }

func (m *memStore) PutListing(_ context.Context, key string, data []byte) (events.ObjectRef, error) {
	m.objects[key] = data
	return events.ObjectRef{Container: "bank", Object: "listings/" + key + ".json", Bytes: int64(len(data)), SHA256: strings.Repeat("0", 64)}, nil
}

func graphOf(n int) *graph.Graph {
	g := &graph.Graph{}
	for i := 0; i < n; i++ {
		p := graph.PodResource("ns", fmt.Sprintf("pod-%d", i))
		v := graph.Resource{Type: graph.VolumeType, ID: fmt.Sprintf("vol-%d", i), Name: "ns/c"}
		g.Nodes = append(g.Nodes, graph.Node{Resource: p, Children: []string{v.Key()}}, graph.Node{Resource: v})
	}
	return g
}

func request(t *testing.T, typ, data string) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("req-1")
	e.SetSource("test")
	e.SetType(typ)
	if err := e.SetData(event.ApplicationJSON, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestListInlineAndByReference(t *testing.T) {
	for _, tt := range []struct {
		pods    int
		wantRef bool
	}{{2, false}, {400, true}} {
		t.Run(fmt.Sprintf("%d pods", tt.pods), func(t *testing.T) {
			store := &memStore{objects: map[string][]byte{}}
			r := &fakeResolver{g: graphOf(tt.pods)}
			s := NewStep(r, store, 48<<10)
			out, err := s.Handle(context.Background(), request(t, events.PodsList, `{"scope":{"namespaces":["ns"],"labelSelector":"app=x"}}`))
			if err != nil {
				t.Fatal(err)
			}
			if r.got.LabelSelector != "app=x" || len(r.got.Namespaces) != 1 {
				t.Fatalf("selection %+v", r.got)
			}
			var res events.PodsListedResult
			if err := out.DataAs(&res); err != nil {
				t.Fatal(err)
			}
			if res.Pods != tt.pods || res.Volumes != tt.pods {
				t.Fatalf("counts %d %d", res.Pods, res.Volumes)
			}
			if tt.wantRef {
				if res.Graph != nil || res.GraphRef == nil || len(store.objects) != 1 {
					t.Fatalf("want a reference, got %+v", res)
				}
				if len(out.Data()) > 8<<10 {
					t.Fatalf("event data %d bytes: the graph must not be inline", len(out.Data()))
				}
				var stored graph.Graph
				for _, b := range store.objects {
					if err := json.Unmarshal(b, &stored); err != nil || len(stored.Nodes) != 2*tt.pods {
						t.Fatalf("stored graph: %v, %d nodes", err, len(stored.Nodes))
					}
				}
			} else if res.Graph == nil || res.GraphRef != nil {
				t.Fatalf("want the graph inline, got %+v", res)
			}
		})
	}
}

func TestListRedeliveryWritesTheSameObject(t *testing.T) {
	store := &memStore{objects: map[string][]byte{}}
	s := NewStep(&fakeResolver{g: graphOf(400)}, store, 1024)
	for i := 0; i < 2; i++ {
		if _, err := s.Handle(context.Background(), request(t, events.PodsList, `{"scope":{"allNamespaces":true}}`)); err != nil {
			t.Fatal(err)
		}
	}
	if len(store.objects) != 1 {
		t.Fatalf("%d objects for one request delivered twice", len(store.objects))
	}
}

func TestShow(t *testing.T) {
	ctx := context.Background()
	g := graphOf(1)
	s := NewStep(&fakeResolver{g: g, found: true}, nil, 1024)
	out, err := s.Handle(ctx, request(t, events.PodShow, `{"pod":"ns:pod-0"}`))
	if err != nil {
		t.Fatal(err)
	}
	var res events.PodShownResult
	_ = out.DataAs(&res)
	if !res.Found || !res.Protectable || len(res.Graph.Nodes) != 2 {
		t.Fatalf("%+v", res)
	}

	s = NewStep(&fakeResolver{found: false}, nil, 1024)
	out, err = s.Handle(ctx, request(t, events.PodShow, `{"pod":"ns:nope"}`))
	if err != nil {
		t.Fatal(err)
	}
	res = events.PodShownResult{}
	_ = out.DataAs(&res)
	if res.Found || res.Reason != "pod ns:nope not found" {
		t.Fatalf("%+v", res)
	}
}

// listEverything delivers a binary-mode pods.list of every namespace to the step's server.
func listEverything(s *Step) *httptest.ResponseRecorder {
	v, _ := events.NewValidator()
	srv := function.NewServer(events.FnListPods, Accepts, s, v, function.ServerOptions{})
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"scope":{"allNamespaces":true}}`))
	r.Header.Set("Content-Type", "application/json")
	for k, val := range map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": events.PodsList} {
		r.Header.Set(k, val)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w
}

func TestBackendFailureIsRetried(t *testing.T) {
	w := listEverything(NewStep(&fakeResolver{err: fmt.Errorf("list pods: %w", context.DeadlineExceeded)}, nil, 1024))
	if w.Code < 500 {
		t.Fatalf("status %d, want 5xx", w.Code)
	}
}

func TestExclusiveScopeIs400(t *testing.T) {
	v, _ := events.NewValidator()
	srv := function.NewServer(events.FnListPods, Accepts, NewStep(&fakeResolver{g: graphOf(1)}, nil, 1024), v, function.ServerOptions{})
	body := `{"specversion":"1.0","id":"1","source":"s","type":"` + events.PodsList + `","datacontenttype":"application/json","data":{"scope":{"allNamespaces":true,"pods":["a:b"]}}}`
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/cloudevents+json")
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "exclusive") {
		t.Fatalf("status %d body %q", w.Code, w.Body.String())
	}
}

func TestForbiddenScopeIs400(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "system:serviceaccount:podguard:podguard-list-pods" cannot list resource "pods" at the cluster scope`))
	w := listEverything(NewStep(&fakeResolver{err: fmt.Errorf("list pods of every namespace: %w", forbidden)}, nil, 1024))
	if w.Code != 400 || !strings.Contains(w.Body.String(), "beyond what podguard may read") {
		t.Fatalf("status %d body %q, want 400 with the reason", w.Code, w.Body.String())
	}
}
