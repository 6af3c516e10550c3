// Package cindertest is the fake Cinder endpoint the volume and backup clients' tests
// share: the Block Storage v3 API's token and microversion checks, its JSON and fault
// bodies, and its paged lists. Each test package routes the requests of its resource.
//
//	srv := cindertest.New(t, volumes.Microversion, f.route)
//	c := volumes.New(srv.ServiceClient())
package cindertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

// Project is the project of the fake endpoint; Token the token it accepts.
const (
	Project = "p0"
	Token   = "token"
)

// Server is a fake Block Storage v3 endpoint.
type Server struct {
	srv *httptest.Server
}

// New starts a fake endpoint, closed when the test ends. Each request with the token
// and the microversion is handed to route with its path after /v3/<project>/ (such as
// "volumes/detail"); others are answered 401 or 406, as Cinder does.
func New(t testing.TB, microversion string, route func(w http.ResponseWriter, r *http.Request, path string)) *Server {
	s := &Server{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("OpenStack-API-Version"); got != "volume "+microversion {
			Fault(w, http.StatusNotAcceptable, fmt.Sprintf("expected microversion header volume %s, got %q", microversion, got))
			return
		}
		if r.Header.Get("X-Auth-Token") != Token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		path, ok := strings.CutPrefix(r.URL.Path, "/v3/"+Project+"/")
		if !ok {
			Fault(w, http.StatusNotFound, "no such resource "+r.URL.Path)
			return
		}
		route(w, r, path)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// ServiceClient is what openstack.Config.BlockStorage returns, aimed at the fake.
func (s *Server) ServiceClient() *gophercloud.ServiceClient {
	return &gophercloud.ServiceClient{
		ProviderClient: &gophercloud.ProviderClient{TokenID: Token},
		Endpoint:       s.srv.URL + "/v3/" + Project + "/",
		Type:           "block-storage",
	}
}

// JSON writes a JSON body with a status code.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Fault writes Cinder's error body for a status code.
func Fault(w http.ResponseWriter, code int, msg string) {
	kind := map[int]string{400: "badRequest", 404: "itemNotFound", 406: "computeFault"}[code]
	JSON(w, code, map[string]any{kind: map[string]any{"code": code, "message": msg}})
}

// Page answers a list of resource ("volumes", "backups") with items, in the order given
// (Cinder's default: newest first): those after the marker, up to pageSize or the
// request's smaller limit, and a "<resource>_links" next link carrying the query when
// more remain.
func Page[T any](s *Server, w http.ResponseWriter, q url.Values, resource string, pageSize int, items []T, id func(T) string, view func(T) any) {
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(items, func(x T) bool { return id(x) == m })
		if i < 0 {
			Fault(w, http.StatusBadRequest, "marker not found")
			return
		}
		items = items[i+1:]
	}
	limit := pageSize
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 && l < limit {
		limit = l
	}
	body := map[string]any{}
	if len(items) > limit {
		items = items[:limit]
		next := url.Values{}
		for k := range q {
			next.Set(k, q.Get(k))
		}
		next.Set("marker", id(items[len(items)-1]))
		body[resource+"_links"] = []any{map[string]any{"rel": "next",
			"href": s.srv.URL + "/v3/" + Project + "/" + resource + "/detail?" + next.Encode()}}
	}
	views := []any{}
	for _, x := range items {
		views = append(views, view(x))
	}
	body[resource] = views
	JSON(w, http.StatusOK, body)
}
