package prometheus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultBinary is where Debian's prometheus package installs the server.
const DefaultBinary = "/usr/bin/prometheus"

// Config says what a server scrapes and evaluates. The zero value of every field but
// Targets has a default.
type Config struct {
	// Binary is the prometheus executable (default DefaultBinary).
	Binary string
	// Targets maps the name of a function to the host:port of its metrics endpoint,
	// scraped at /metrics with the label function=<name>; http://host:port/metrics is
	// taken too (the local runner's Metrics lists them so).
	Targets map[string]string
	// RuleFiles are Prometheus rule files (recording and alerting rules) to load.
	RuleFiles []string
	// ScrapeInterval (default 1s) is also the scrape timeout.
	ScrapeInterval time.Duration
	// EvaluationInterval is how often rules are evaluated (default 1s).
	EvaluationInterval time.Duration
	// Dir holds prometheus.yml, the TSDB (data/) and the server's output
	// (prometheus.log), and is left in place. Default: a new temporary directory that
	// Close removes.
	Dir string
	// StopTimeout is how long Close waits for the server to exit after SIGTERM before it
	// kills it (default 10s).
	StopTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.ScrapeInterval <= 0 {
		c.ScrapeInterval = time.Second
	}
	if c.EvaluationInterval <= 0 {
		c.EvaluationInterval = time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	return c
}

// Server is a running Prometheus, a child process of this one.
type Server struct {
	url     string
	dir     string
	ownDir  bool
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process is waited for; then waitErr is set
	waitErr error
	stop    time.Duration
	client  *http.Client

	closeOnce sync.Once
	closeErr  error
}

// startAttempts bounds the retries when the free port Start picked is taken before the
// server binds it.
const startAttempts = 3

// Start writes the configuration into cfg.Dir, starts the server on a free port of
// 127.0.0.1 and waits until it answers /-/ready, or ctx ends (then it stops the server).
// The server lives until Close, whatever becomes of ctx.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("prometheus (the local stack installs it: make stack-install): %w", err)
	}
	conf, err := configFile(cfg)
	if err != nil {
		return nil, err
	}
	dir, ownDir := cfg.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "podguard-prometheus-"); err != nil {
			return nil, fmt.Errorf("prometheus directory: %w", err)
		}
		ownDir = true
	}
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		return nil, errors.Join(fmt.Errorf("write prometheus configuration: %w", err), removeOwn(dir, ownDir))
	}
	for attempt := 1; ; attempt++ {
		s, err := start(ctx, cfg, dir, ownDir, confPath)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == startAttempts {
			if err != nil {
				err = errors.Join(err, removeOwn(dir, ownDir))
			}
			return s, err
		}
	}
}

func removeOwn(dir string, own bool) error {
	if !own {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove prometheus directory: %w", err)
	}
	return nil
}

// errPortTaken: the server exited because its port was taken meanwhile.
var errPortTaken = errors.New("port taken")

func start(ctx context.Context, cfg Config, dir string, ownDir bool, confPath string) (*Server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("prometheus log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(cfg.Binary,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Binary, err)
	}
	s := &Server{
		url: "http://" + addr, dir: dir, ownDir: ownDir, logPath: logPath, cmd: cmd,
		exited: make(chan struct{}), stop: cfg.StopTimeout,
		client: &http.Client{Timeout: 30 * time.Second},
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		return nil, errors.Join(err, s.terminate())
	}
	return s, nil
}

// freeAddr picks a free port of 127.0.0.1. Another process may take it before the server
// binds it; Start then tries again.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port for prometheus: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("free port for prometheus: %w", err)
	}
	return addr, nil
}

// readyPoll is how often Start asks /-/ready.
const readyPoll = 50 * time.Millisecond

func (s *Server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/-/ready", nil)
		if err != nil {
			return fmt.Errorf("prometheus readiness: %w", err)
		}
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready answered %s", resp.Status)
		}
		last = err
		select {
		case <-s.exited:
			tail := s.logTail()
			if bytes.Contains(tail, []byte("address already in use")) {
				return fmt.Errorf("prometheus on %s: %w", s.url, errPortTaken)
			}
			return fmt.Errorf("prometheus exited before it was ready (%v); %s ends:\n%s", s.waitErr, s.logPath, tail)
		case <-ctx.Done():
			return fmt.Errorf("prometheus on %s not ready (last: %v): %w", s.url, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// logTail is the end of the server's output, for errors.
func (s *Server) logTail() []byte {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return []byte(err.Error())
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return b
}

// URL is the server's address, http://127.0.0.1:<port>: its web UI and HTTP API.
func (s *Server) URL() string { return s.url }

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Dir is the directory of the server's configuration, TSDB and output.
func (s *Server) Dir() string { return s.dir }

// LogPath is the file the server writes its output to.
func (s *Server) LogPath() string { return s.logPath }

// Close stops the server (SIGTERM to its PID, SIGKILL after Config.StopTimeout), waits for
// it to exit and removes its directory when Start made it. It is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.terminate(), removeOwn(s.dir, s.ownDir))
	})
	return s.closeErr
}

func (s *Server) terminate() error {
	select {
	case <-s.exited:
		return nil // it ended on its own; Start reports why
	default:
	}
	pid := s.cmd.Process.Pid
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop prometheus (pid %d): %w", pid, err)
	}
	timer := time.NewTimer(s.stop)
	defer timer.Stop()
	select {
	case <-s.exited:
		return nil
	case <-timer.C:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill prometheus (pid %d): %w", pid, err)
	}
	<-s.exited
	return fmt.Errorf("prometheus (pid %d) did not stop within %s of SIGTERM: killed", pid, s.stop)
}
