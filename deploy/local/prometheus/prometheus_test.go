package prometheus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// requireBinary skips the test when Prometheus is not installed, unless
// PODGUARD_REQUIRE_STACK=1 (set by `make test`): then it fails.
func requireBinary(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultBinary); err != nil {
		if os.Getenv("PODGUARD_REQUIRE_STACK") == "1" {
			t.Fatalf("prometheus is required: %v (make stack-install installs it)", err)
		}
		t.Skipf("no prometheus (%v); make stack-install installs it", err)
	}
}

// exposition is a metrics endpoint with one counter the test moves and a gauge without a
// function label, in Prometheus's text format.
type exposition struct {
	handled atomic.Int64
}

func (e *exposition) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, `# HELP podguard_events_handled_total Events handled.
# TYPE podguard_events_handled_total counter
podguard_events_handled_total{function="choreographer",event_type="dev.podguard.tick",outcome="2xx"} %d
podguard_events_handled_total{function="choreographer",event_type="dev.podguard.tick",outcome="5xx"} 1
# HELP podguard_operations_in_flight Operations in flight.
# TYPE podguard_operations_in_flight gauge
podguard_operations_in_flight{kind="protect"} 2
`, e.handled.Load())
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	begin := time.Now()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prometheus pid %d on %s ready in %s", s.PID(), s.URL(), time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:\n%s", s.LogPath(), s.logTail())
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestScrapeAndQuery(t *testing.T) {
	requireBinary(t)
	exp := &exposition{}
	exp.handled.Store(3)
	target := httptest.NewServer(exp)
	defer target.Close()
	addr := strings.TrimPrefix(target.URL, "http://")

	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte(`groups:
  - name: test
    rules:
      - record: function:podguard_events_handled:sum
        expr: sum by (function) (podguard_events_handled_total)
`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Targets: map[string]string{"choreographer": addr}, RuleFiles: []string{rules}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t0 := time.Now()
	got, err := s.WaitFor(ctx, `podguard_events_handled_total{outcome="2xx"}`, func(s []Sample) bool { return len(s) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"__name__": "podguard_events_handled_total", "function": "choreographer",
		"event_type": "dev.podguard.tick", "outcome": "2xx", "job": Job, "instance": addr,
	}
	if labelString(got[0].Labels) != labelString(want) || got[0].Value != 3 {
		t.Errorf("got %s, want %s 3", Format(got), labelString(want))
	}
	if age := time.Since(got[0].Time); age < 0 || age > time.Minute {
		t.Errorf("sample time %s is not now", got[0].Time)
	}

	// A series without a function label gets the target's.
	got, err = s.Query(ctx, `podguard_operations_in_flight`)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Labels["function"] != "choreographer" || got[0].Labels["kind"] != "protect" || got[0].Value != 2 {
		t.Errorf("in flight: %s", Format(got))
	}
	if got, err := s.Query(ctx, `count({exported_function!=""})`); err != nil || len(got) != 0 {
		t.Errorf("series with exported_function: %s, %v", Format(got), err)
	}

	// The next scrapes see the counter move; the rule file is evaluated.
	t.Logf("first sample %s after Start returned", time.Since(t0).Round(time.Millisecond))
	exp.handled.Store(5)
	if _, err := s.WaitFor(ctx, `function:podguard_events_handled:sum{function="choreographer"} == 6`, func(s []Sample) bool { return len(s) == 1 }); err != nil {
		t.Fatal(err)
	}

	// A scalar is one sample without labels.
	got, err = s.Query(ctx, `scalar(podguard_operations_in_flight) * 2`)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Labels) != 0 || got[0].Value != 4 {
		t.Errorf("scalar: %s", Format(got))
	}

	// An expression that does not parse ends a wait at once, as an APIError.
	_, err = s.WaitFor(ctx, `sum(`, func([]Sample) bool { return true })
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Type != "bad_data" || apiErr.Status != http.StatusBadRequest {
		t.Errorf("bad expression: %v", err)
	}
	// A range vector is not an instant result.
	if _, err := s.Query(ctx, `podguard_operations_in_flight[10s]`); err == nil || !strings.Contains(err.Error(), "matrix") {
		t.Errorf("range vector: %v", err)
	}

	// A wait that does not come true ends with its context, saying what it saw last.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	_, err = s.WaitFor(short, `podguard_operations_in_flight`, func(s []Sample) bool { return s[0].Value > 2 })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `kind="protect"`) {
		t.Errorf("wait past its deadline: %v", err)
	}
}

func TestCloseStopsTheProcess(t *testing.T) {
	requireBinary(t)
	s := startServer(t, Config{})
	pid, dir := s.PID(), s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d after Close: %v", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("its directory %s after Close: %v", dir, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStartFailsWithTheServersOutput(t *testing.T) {
	requireBinary(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "bad.rules.yaml")
	if err := os.WriteFile(rules, []byte("groups:\n  - name: bad\n    rules:\n      - record: x\n        expr: sum(\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Dir: dir, RuleFiles: []string{rules}})
	if err == nil {
		s.Close()
		t.Fatal("started with a rule that does not parse")
	}
	if !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "bad.rules.yaml") {
		t.Errorf("error does not show why: %v", err)
	}
}

func TestStartWithoutTheBinary(t *testing.T) {
	_, err := Start(context.Background(), Config{Binary: filepath.Join(t.TempDir(), "prometheus")})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start without the binary: %v", err)
	}
}
