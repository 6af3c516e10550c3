package e2e

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"sync"
)

// delivery is one event as a function received it: the function, the request's headers
// (a binary-mode CloudEvent carries its attributes there) and its body.
type delivery struct {
	fn     string
	typ    string
	header http.Header
	body   []byte
}

// recorder keeps a copy of every delivery of chosen event types to the functions, so a
// test can deliver them all again later, late and in another order.
type recorder struct {
	types map[string]bool
	mu    sync.Mutex
	got   []delivery
}

func newRecorder(types ...string) *recorder {
	r := &recorder{types: map[string]bool{}}
	for _, t := range types {
		r.types[t] = true
	}
	return r
}

// around records the deliveries to a function, then hands them to next.
func (r *recorder) around(next func(string, http.Handler) http.Handler) func(string, http.Handler) http.Handler {
	return func(name string, h http.Handler) http.Handler {
		if next != nil {
			h = next(name, h)
		}
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if typ := req.Header.Get("ce-type"); r.types[typ] {
				body, _ := io.ReadAll(req.Body)
				req.Body = io.NopCloser(bytes.NewReader(body))
				r.mu.Lock()
				r.got = append(r.got, delivery{fn: name, typ: typ, header: req.Header.Clone(), body: body})
				r.mu.Unlock()
			}
			h.ServeHTTP(w, req)
		})
	}
}

// take returns the deliveries recorded so far and forgets them.
func (r *recorder) take() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// replayReversed delivers the recorded events again straight to their functions, last
// first, and fails unless each is accepted. It returns how many of each type it replayed.
func (e *env) replayReversed(ds []delivery) map[string]int {
	e.t.Helper()
	n := map[string]int{}
	for _, d := range slices.Backward(ds) {
		req, err := http.NewRequest(http.MethodPost, e.runner.Functions[d.fn], bytes.NewReader(d.body))
		if err != nil {
			e.t.Fatal(err)
		}
		req.Header = d.header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			e.t.Fatalf("replayed %s to %s: %d %s", d.typ, d.fn, resp.StatusCode, msg)
		}
		n[d.typ]++
	}
	return n
}
