package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/openstack/backups"
	"github.com/podguard/podguard/shared/stacktest"
)

// BenchmarkProtect protects N kwok pods, each with one PVC/PV, with the podguard-local
// runner as its own process: real kube-apiserver, real Swift (every bank request counted
// by a proxy in front of it), and the volume step on an instant in-process Cinder double.
// It reports the wall time from the request to the checkpoint's terminal status, events
// routed, Swift requests per pod and the runner's peak RSS.
func BenchmarkProtect(b *testing.B) {
	st := stacktest.Load(b)
	bin := buildLocal(b)
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			ns := fmt.Sprintf("bench-protect-%d", n)
			stacktest.BulkPods(b, st.Kube(b), ns, n)
			for i := 0; i < b.N; i++ {
				r := protectOnce(b, st, bin, ns, n)
				b.ReportMetric(r.wall.Seconds(), "s/protect")
				b.ReportMetric(float64(r.swift)/float64(n), "swift-req/pod")
				if r.events > 0 { // the embedded broker counts them; Knative's does not say
					b.ReportMetric(float64(r.events), "events")
				}
				b.ReportMetric(float64(r.peakRSS)/(1<<20), "runner-peak-MiB")
				b.Logf("N=%d: %s, %d Swift requests (%.1f per pod), %d events routed, runner peak RSS %.0f MiB",
					n, r.wall.Round(10*time.Millisecond), r.swift, float64(r.swift)/float64(n), r.events, float64(r.peakRSS)/(1<<20))
			}
		})
	}
}

type protectRun struct {
	wall    time.Duration
	swift   int64
	events  int64
	peakRSS int64
}

// local is a podguard-local process whose bank requests go through a counting proxy in
// front of Swift's tempauth proxy (tempauth names the storage URL after the Host it was
// asked on, so every bank request comes through it).
type local struct {
	ingress string
	// frontDoor is where requests go, with token (podguard-local-admin's).
	frontDoor, token string
	swift            atomic.Int64
	reader           *bank.Bank
	cmd              *exec.Cmd
	srv              *http.Server
	events           atomic.Pointer[string]
}

// buildLocal builds the podguard-local command once for a test or benchmark.
func buildLocal(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "podguard-local")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/podguard/podguard/deploy/local/runner/cmd/podguard-local").CombinedOutput(); err != nil {
		tb.Fatalf("build podguard-local: %v\n%s", err, out)
	}
	return bin
}

// startLocal starts podguard-local with its volume steps on the instant in-process Cinder
// doubles.
func startLocal(b testing.TB, st *stacktest.Stack, bin, container string, env ...string) *local {
	b.Helper()
	return launchLocal(b, st, bin, container, []string{"-instant-cinder"}, env...)
}

// launchLocal starts podguard-local with extra flags (none: the stack's real Cinder) and
// extra environment, on the bank container given, reached through the counting proxy.
func launchLocal(b testing.TB, st *stacktest.Stack, bin, container string, flags []string, env ...string) *local {
	b.Helper()
	l := &local{}
	target, _ := url.Parse(strings.TrimSuffix(st.Env["ST_AUTH"], "/auth/v1.0"))
	rp := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	l.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.swift.Add(1)
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = l.srv.Serve(ln) }()
	l.ingress = "http://" + freeAddr(b)
	if onKnative() {
		// Behind Knative's broker, in a namespace per bank container (a restarted process
		// takes over the same Broker); podguard-local installs the overlay there.
		ns := "local-" + container
		flags = append(flags, "-broker", "knative", "-namespace", ns,
			"-overlay", filepath.Join(stacktest.RepoRoot(b), "deploy", "overlays", "local-eventing"), "-kubectl", st.Env["PODGUARD_KUBECTL"])
		b.Cleanup(func() { _ = st.Kube(b).CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	l.cmd = exec.Command(bin, append([]string{"-addr", strings.TrimPrefix(l.ingress, "http://"), "-tick", "1s", "-log-level", "warn",
		"-triggers", filepath.Join(stacktest.RepoRoot(b), "deploy", "base")}, flags...)...)
	// The bank container's own keyring unless env names one: every process on the same
	// bank (a restart, the restores after a protect) opens what the ones before sealed.
	keys := filepath.Join(os.TempDir(), "podguard-bank-keys-"+container)
	b.Cleanup(func() { _ = os.RemoveAll(keys) })
	l.cmd.Env = append(append(os.Environ(), "KUBE_API_QPS=2000", "KUBE_API_BURST=4000", "BANK_AUTH=tempauth", "ST_AUTH=http://"+ln.Addr().String()+"/auth/v1.0",
		"BANK_CONTAINER="+container, "REDRIVE_AFTER=60s", "LOG_LEVEL=warn", "BANK_KEYS_DIR="+keys), env...)
	stdout, _ := l.cmd.StdoutPipe()
	l.cmd.Stderr = os.Stderr
	if err := l.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { // a test that failed half-way leaves no process behind
		if l.cmd.ProcessState == nil {
			_ = l.cmd.Process.Kill()
			_ = l.cmd.Wait()
		}
		l.srv.Close()
	})
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() { // "broker ingress <url>" once it serves
		b.Fatal("podguard-local did not start")
	}
	if u, ok := strings.CutPrefix(lines.Text(), "broker ingress "); ok {
		l.ingress = u
	}
	for l.frontDoor == "" && lines.Scan() {
		if f := strings.Fields(lines.Text()); len(f) > 2 && f[0] == "front" && f[1] == "door:" {
			l.frontDoor = f[2]
		}
	}
	if l.frontDoor == "" {
		b.Fatal("podguard-local did not say where its front door is")
	}
	tr, err := st.Kube(b).CoreV1().ServiceAccounts("podguard").CreateToken(context.Background(), "podguard-local-admin",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"podguard"}}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	l.token = tr.Status.Token
	go func() {
		for lines.Scan() {
			if line := lines.Text(); strings.HasPrefix(line, "events ") {
				l.events.Store(&line)
			}
		}
	}()
	// Progress is read from Swift directly (not counted).
	if l.reader, err = bank.Open(context.Background(), st.Bank("tempauth", container), st.OpenStack()); err != nil {
		b.Fatal(err)
	}
	return l
}

// send sends a request to the front door, as podguard-local's admin.
func (l *local) send(b testing.TB, ev cloudevents.Event) {
	b.Helper()
	c, _ := cloudevents.NewClientHTTP(cehttp.WithHeader("Authorization", "Bearer "+l.token))
	if res := c.Send(cloudevents.ContextWithTarget(context.Background(), l.frontDoor), ev); !cloudevents.IsACK(res) {
		b.Fatal(res)
	}
}

// wait polls an operation's status until it is one of done, and returns the time since
// start.
func (l *local) wait(b testing.TB, start time.Time, status func() (string, error), done ...string) (time.Duration, string) {
	b.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Minute)
	for {
		select {
		case <-tick.C:
			s, err := status()
			if err != nil && !errors.Is(err, bank.ErrNotFound) {
				b.Fatal(err)
			}
			for _, d := range done {
				if s == d {
					return time.Since(start), s
				}
			}
		case <-deadline:
			b.Fatal("not finished within 10 minutes")
		}
	}
}

// stop ends the process and returns its peak RSS and the events its broker took in
// (requests, replies and ticks).
func (l *local) stop(b testing.TB) (peak, routed int64) {
	b.Helper()
	peak = peakRSS(b, l.cmd.Process.Pid)
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	_ = l.cmd.Wait()
	l.srv.Close()
	if line := l.events.Load(); line != nil {
		for _, f := range strings.Fields(*line) {
			if v, ok := strings.CutPrefix(f, "ingested="); ok {
				routed, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return peak, routed
}

// kill ends the process at once (SIGKILL), as a crash would: the events its broker held
// and the requests its functions were handling are lost.
func (l *local) kill(tb testing.TB) {
	tb.Helper()
	if err := l.cmd.Process.Kill(); err != nil {
		tb.Fatalf("kill podguard-local: %v", err)
	}
	_ = l.cmd.Wait()
	l.srv.Close()
}

func protectRequest(ns string) (cloudevents.Event, string) {
	req := events.ProtectRequest{Plan: events.Plan{ID: "bench", Scope: events.Scope{Namespaces: []string{ns}}}}
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource("bench")
	ev.SetType(events.ProtectRequested)
	ev.SetTime(time.Now().UTC())
	_ = ev.SetData(cloudevents.ApplicationJSON, req)
	return ev, choreographer.CheckpointID(req, ev)
}

func protectOnce(b *testing.B, st *stacktest.Stack, bin, ns string, n int) protectRun {
	b.Helper()
	l := startLocal(b, st, bin, fmt.Sprintf("bench-%d-%d", n, time.Now().UnixNano()%1e9))
	ev, id := protectRequest(ns)
	l.swift.Store(0)
	start := time.Now()
	l.send(b, ev)
	wall, s := l.wait(b, start, func() (string, error) { return l.reader.Status(context.Background(), id) }, events.StatusAvailable, events.StatusError)
	if s != events.StatusAvailable {
		b.Fatalf("checkpoint ended %s", s)
	}
	swift := l.swift.Load()
	if g, err := l.reader.Graph(context.Background(), id); err != nil {
		b.Fatal(err)
	} else if pods, vols := g.Counts(); pods != n || vols != n {
		b.Fatalf("the checkpoint holds %d pods and %d volumes, want %d of each", pods, vols, n)
	}
	peak, routed := l.stop(b)
	return protectRun{wall: wall, swift: swift, events: routed, peakRSS: peak}
}

func peakRSS(b testing.TB, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freeAddr(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// BenchmarkProtectRealVolumes protects 3 pods with real 1 GiB Cinder volumes on the local
// stack and compares the time with the Cinder backups alone: one after the other (their
// sum) and the slowest of them (the best a parallel protect can do).
func BenchmarkProtectRealVolumes(b *testing.B) {
	e := newEnv(b, envOptions{extra: map[string]string{"REDRIVE_AFTER": "1s"}})
	ns := e.st.Namespace(b, e.kube, "bench-real")
	var vols []string
	for _, name := range []string{"a", "b", "c"} {
		v := e.cinderVolume(ns+"-"+name, []byte("podguard benchmark "+name))
		e.podWithVolume(ns, name, v, true)
		vols = append(vols, v.ID)
	}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		var sum, slowest time.Duration
		for _, v := range vols {
			start := time.Now()
			bk, err := e.backups.Create(ctx, backups.CreateOpts{VolumeID: v, Name: "alone", Force: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.backups.WaitForStatus(ctx, bk.ID, backups.StatusAvailable); err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			sum += d
			slowest = max(slowest, d)
			if err := e.backups.Delete(ctx, bk.ID); err != nil {
				b.Fatal(err)
			}
			if err := e.backups.WaitForDeleted(ctx, bk.ID); err != nil {
				b.Fatal(err)
			}
		}
		req := events.ProtectRequest{Plan: events.Plan{ID: "bench-real", Scope: events.Scope{Namespaces: []string{ns}},
			Parameters: events.Parameters{Volume: events.VolumeParameters{Force: true}}}}
		ev := newEvent(events.ProtectRequested, req)
		start := time.Now()
		e.send(ev)
		if res := e.finished(choreographer.CheckpointID(req, ev), 5*time.Minute); res.Status != events.StatusAvailable {
			b.Fatalf("finished %+v", res)
		}
		wall := time.Since(start)
		b.ReportMetric(wall.Seconds(), "s/protect")
		b.ReportMetric(sum.Seconds(), "s-backups-sum")
		b.ReportMetric(slowest.Seconds(), "s-backup-max")
		b.Logf("3 pods with 1 GiB volumes: protect %s; backups alone: sum %s, slowest %s", wall.Round(100*time.Millisecond), sum.Round(100*time.Millisecond), slowest.Round(100*time.Millisecond))
	}
}
