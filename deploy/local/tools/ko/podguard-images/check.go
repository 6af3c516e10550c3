package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"sigs.k8s.io/yaml"
)

// CheckOptions configures Check.
type CheckOptions struct {
	// Platform the images must be for.
	Platform v1.Platform
	// Run starts each function's binary from the image's root filesystem (chroot, as
	// the image's user); it needs root.
	Run bool
	// Stack is the local stack's environment (its env file); with it, each function is
	// configured against the stack and must serve; without it, each must fail at start
	// with a configuration error and exit 1.
	Stack map[string]string
	// StartTimeout bounds a function's start.
	StartTimeout time.Duration
}

// Checked is what Check found out about one image.
type Checked struct {
	Name string
	// Certs is the number of CA certificates of the image's bundle.
	Certs int
	// BinaryBytes is the size of the function binary.
	BinaryBytes int64
	// Ran says how the binary behaved when started, empty when it was not.
	Ran string
	// Took is how long the run took, from start to exit.
	Took time.Duration
}

// Check checks every image (OCI layout) under dir: its config (entrypoint, user,
// platform, SSL_CERT_FILE), its files (a static binary of the platform, a CA bundle whose
// certificates all parse, the nonroot user, /tmp), and with o.Run, that the binary starts
// from the image's root filesystem.
func Check(ctx context.Context, dir string, o CheckOptions) ([]Checked, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && IsLayout(filepath.Join(dir, e.Name())) && !strings.Contains(e.Name(), ".tmp-") && !strings.Contains(e.Name(), ".old-") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("check: no image under %s", dir)
	}
	sort.Strings(names)
	var env *runEnv
	if o.Run {
		env, err = newRunEnv(o.Stack)
		if err != nil {
			return nil, err
		}
		defer env.close(ctx)
	}
	var out []Checked
	var errs []error
	for _, n := range names {
		c, err := checkImage(ctx, n, filepath.Join(dir, n), o, env)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", n, err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func checkImage(ctx context.Context, name, dir string, o CheckOptions, env *runEnv) (Checked, error) {
	c := Checked{Name: name}
	img, err := ReadLayout(dir)
	if err != nil {
		return c, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	entry := "/ko-app/" + name
	var problems []string
	if cf.OS != o.Platform.OS || cf.Architecture != o.Platform.Architecture {
		problems = append(problems, fmt.Sprintf("platform %s/%s, want %s", cf.OS, cf.Architecture, o.Platform))
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{entry}) || len(cf.Config.Cmd) != 0 {
		problems = append(problems, fmt.Sprintf("entrypoint %q cmd %q, want [%s]", cf.Config.Entrypoint, cf.Config.Cmd, entry))
	}
	if cf.Config.User != strconv.Itoa(nonroot) {
		problems = append(problems, fmt.Sprintf("user %q, want %d", cf.Config.User, nonroot))
	}
	if !slices.Contains(cf.Config.Env, "SSL_CERT_FILE="+caBundlePath) {
		problems = append(problems, "no SSL_CERT_FILE="+caBundlePath+" in the environment")
	}
	if len(problems) > 0 {
		return c, errors.New(strings.Join(problems, "; "))
	}

	root, err := os.MkdirTemp("", "podguard-image-"+name+"-")
	if err != nil {
		return c, fmt.Errorf("unpack: %w", err)
	}
	defer os.RemoveAll(root)
	if err := Unpack(img, root); err != nil {
		return c, err
	}
	if c.BinaryBytes, err = checkBinary(filepath.Join(root, entry), o.Platform); err != nil {
		return c, err
	}
	if c.Certs, err = checkCABundle(filepath.Join(root, caBundlePath)); err != nil {
		return c, err
	}
	if err := checkUsers(root); err != nil {
		return c, err
	}
	if !o.Run {
		return c, nil
	}
	start := time.Now()
	c.Ran, err = env.run(ctx, name, root, cf.Config.Env, entry, o.StartTimeout)
	c.Took = time.Since(start)
	return c, err
}

// checkBinary checks that the file is an executable, statically linked ELF binary for
// the platform, and returns its size.
func checkBinary(file string, p v1.Platform) (int64, error) {
	fi, err := os.Lstat(file)
	if err != nil {
		return 0, fmt.Errorf("binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 != 0o111 {
		return 0, fmt.Errorf("binary %s: mode %s, want an executable file", file, fi.Mode())
	}
	f, err := elf.Open(file)
	if err != nil {
		return 0, fmt.Errorf("binary: %w", err)
	}
	defer f.Close()
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	if want, ok := machines[p.Architecture]; !ok || f.Machine != want {
		return 0, fmt.Errorf("binary: machine %s, want one for %s", f.Machine, p.Architecture)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			return 0, errors.New("binary: dynamically linked, want a static binary (CGO_ENABLED=0)")
		}
	}
	return fi.Size(), nil
}

// checkCABundle parses every certificate of the bundle and returns how many there are.
func checkCABundle(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("CA bundle: %w", err)
	}
	n, err := countCertificates(b)
	if err != nil {
		return 0, fmt.Errorf("CA bundle %s: %w", caBundlePath, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return 0, fmt.Errorf("CA bundle %s: no certificate for a pool", caBundlePath)
	}
	return n, nil
}

// checkUsers checks the nonroot user and group and a world-writable, sticky /tmp.
func checkUsers(root string) error {
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if !slices.Contains(strings.Split(string(passwd), "\n"), fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin", nonroot, nonroot)) {
		return fmt.Errorf("/etc/passwd has no nonroot user %d", nonroot)
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if !slices.Contains(strings.Split(string(group), "\n"), fmt.Sprintf("nonroot:x:%d:", nonroot)) {
		return fmt.Errorf("/etc/group has no nonroot group %d", nonroot)
	}
	fi, err := os.Stat(filepath.Join(root, "tmp"))
	if err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o777 || fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("/tmp: mode %s, want drwxrwxrwt", fi.Mode())
	}
	return nil
}

// Unpack writes the image's flattened filesystem under root, with modes and owners
// (owners only when run as root). Only directories and regular files are expected.
func Unpack(img v1.Image, root string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	asRoot := os.Geteuid() == 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		p := filepath.Join(root, filepath.FromSlash(path.Clean("/"+h.Name)))
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return fmt.Errorf("unpack: %w", err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("unpack: %w", err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("unpack: %w", err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("unpack: %s is a %q entry; only directories and regular files are expected", h.Name, h.Typeflag)
		}
		if asRoot {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("unpack: %w", err)
			}
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
	}
}

// runEnv is what every run shares: the configuration against the local stack (when
// there is one), a bank container of its own and a sink for emitted events.
type runEnv struct {
	stack     map[string]string
	container string
	sink      *httptest.Server
	mu        sync.Mutex
	events    int
}

func newRunEnv(stack map[string]string) (*runEnv, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("running the binaries from the images needs root (chroot); use -run=false to skip it")
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	e := &runEnv{stack: stack, container: "podguard-image-check-" + hex.EncodeToString(b)}
	e.sink = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		e.events++
		e.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	return e, nil
}

// close stops the sink and deletes the bank container the functions created, through
// the stack's Swift proxy without auth.
func (e *runEnv) close(ctx context.Context) {
	e.sink.Close()
	if e.stack == nil {
		return
	}
	noauth, err := url.Parse(e.stack["PODGUARD_SWIFT_NOAUTH_URL"])
	if err != nil || noauth.Host == "" {
		return
	}
	account := path.Base(e.stack["PODGUARD_SWIFT_URL"]) // AUTH_<project id>, the OS_* user's
	noauth.Path = path.Join(path.Dir(noauth.Path), account, e.container)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, noauth.String(), nil)
	if err != nil {
		return
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotFound {
			fmt.Fprintf(os.Stderr, "check: deleting bank container %s: %s\n", e.container, resp.Status)
		}
	}
}

// servingRe finds the address in the runtime's "serving CloudEvents" log line.
var servingRe = regexp.MustCompile(`serving CloudEvents.*"addr":"([^"]+)"`)

// startErrRe matches what a function prints when it cannot start: "<function>: <error>".
var startErrRe = regexp.MustCompile(`^[a-z][a-z0-9-]*: (configuration|start): .`)

// run starts entry from root (chroot, as the nonroot user) with the image's environment.
// With the stack, it must serve: /healthz and /readyz answer 200, a request that is not
// a CloudEvent answers 400, and SIGTERM ends it with status 0. Without the stack it must exit 1 with a message.
func (e *runEnv) run(ctx context.Context, name, root string, imageEnv []string, entry string, timeout time.Duration) (string, error) {
	if err := os.Chmod(root, 0o755); err != nil {
		return "", fmt.Errorf("run: %w", err)
	}
	env := append(slices.Clone(imageEnv),
		"PORT=0", "BIND_HOST=127.0.0.1", "METRICS_ENDPOINT=127.0.0.1:0", "HOME=/home/nonroot", "DRAIN_TIMEOUT=5s", "K_SINK="+e.sink.URL)
	if e.stack != nil {
		stackEnv, err := e.stackEnv(root)
		if err != nil {
			return "", err
		}
		env = append(env, stackEnv...)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, entry)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: nonroot, Gid: nonroot},
		Setpgid:    true,
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("run: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return "", fmt.Errorf("run %s chrooted: %w", entry, err)
	}
	pw.Close()
	var out lines
	addrc := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			out.add(sc.Text())
			if m := servingRe.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-readDone
		exited <- cmd.Wait()
	}()

	if e.stack == nil {
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				return "", fmt.Errorf("without configuration: exit %v, want status 1; output:\n%s", err, out.tail())
			}
			last := out.last()
			if !startErrRe.MatchString(last) {
				return "", fmt.Errorf("without configuration: no configuration or start error; output:\n%s", out.tail())
			}
			return "exit 1 without configuration: " + last, nil
		case <-time.After(timeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return "", fmt.Errorf("without configuration: still running after %s; output:\n%s", timeout, out.tail())
		}
	}

	var addr string
	select {
	case addr = <-addrc:
	case err := <-exited:
		return "", fmt.Errorf("exited before serving (%v); output:\n%s", err, out.tail())
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return "", fmt.Errorf("not serving after %s; output:\n%s", timeout, out.tail())
	}
	refusal, probeErr := probe(ctx, "http://"+addr, name)
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		exitErr = errors.New("still running 15s after SIGTERM")
	}
	if probeErr != nil {
		return "", fmt.Errorf("%w; output:\n%s", probeErr, out.tail())
	}
	if exitErr != nil {
		return "", fmt.Errorf("after SIGTERM: %v, want status 0; output:\n%s", exitErr, out.tail())
	}
	return "served on " + addr + ": /healthz, /readyz 200, " + refusal + "; SIGTERM: exit 0", nil
}

// gated is the function that establishes its caller before it reads a request.
const gated = "front-door"

// probe checks the probes and the CloudEvents endpoint of a serving function, and says
// how it refused a malformed request.
func probe(ctx context.Context, base, name string) (string, error) {
	for _, p := range []string{"/healthz", "/readyz"} {
		code, _, err := do(ctx, http.MethodGet, base+p, nil, nil)
		if err != nil {
			return "", err
		}
		if code != http.StatusOK {
			return "", fmt.Errorf("GET %s: %d, want 200", p, code)
		}
	}
	// A request that is not a CloudEvent (no id): every function, including one that
	// takes events of any type, answers 400 without doing anything; the front door,
	// which asks who sends before it reads, answers a request without a token 401.
	h := http.Header{
		"Ce-Specversion": {"1.0"}, "Ce-Type": {"dev.podguard.image.check"}, "Ce-Source": {"podguard-images"},
		"Content-Type": {"application/json"},
	}
	code, body, err := do(ctx, http.MethodPost, base+"/", h, []byte(`{}`))
	if err != nil {
		return "", err
	}
	if name == gated {
		if code != http.StatusUnauthorized {
			return "", fmt.Errorf("a request without a token: %d %q, want 401 from %s", code, strings.TrimSpace(body), name)
		}
		return "a request without a token 401", nil
	}
	if code != http.StatusBadRequest {
		return "", fmt.Errorf("a request that is not a CloudEvent: %d %q, want 400 from %s", code, strings.TrimSpace(body), name)
	}
	return "malformed CloudEvent 400", nil
}

func do(ctx context.Context, method, u string, h http.Header, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}

// kubeconfigPath is where a run finds the stack's kubeconfig inside the image's root.
const kubeconfigPath = "/home/nonroot/.kube/config"

// stackEnv is the configuration of a function against the local stack: its Keystone
// credentials (the OS_* variables; no clouds.yaml), its kubeconfig with the files it
// names inlined, written to the nonroot user's home under root, the check's own bank
// container, and a keyring for the functions that seal.
func (e *runEnv) stackEnv(root string) ([]string, error) {
	var env []string
	for k, v := range e.stack {
		if strings.HasPrefix(k, "OS_") && k != "OS_CLOUD" && k != "OS_CLIENT_CONFIG_FILE" {
			env = append(env, k+"="+v)
		}
	}
	sort.Strings(env)
	env = append(env, "BANK_CONTAINER="+e.container)
	if kc := e.stack["KUBECONFIG"]; kc != "" {
		b, err := inlineKubeconfig(kc)
		if err != nil {
			return nil, err
		}
		if err := writeAsNonroot(root, kubeconfigPath, b); err != nil {
			return nil, err
		}
		env = append(env, "KUBECONFIG="+kubeconfigPath)
	}
	// snapshot-metadata and recreate-pod seal what they save: a keyring of one random key,
	// laid out as the mounted podguard-bank-keys Secret is (one file per key id).
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := writeAsNonroot(root, bankKeysDir+"/image-check", key); err != nil {
		return nil, err
	}
	return append(env, "BANK_KEYS_DIR="+bankKeysDir), nil
}

// bankKeysDir is where a run finds its keyring (BANK_KEYS_DIR).
const bankKeysDir = "/home/nonroot/bank-keys"

// inlineKubeconfig returns the kubeconfig with the files it names (CA, client
// certificate and key, token file) replaced by their contents.
func inlineKubeconfig(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc map[string]any
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", file, err)
	}
	read := func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(file), p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", file, err)
		}
		return b, nil
	}
	inline := func(list, item string, keys map[string]string) error {
		entries, _ := kc[list].([]any)
		for _, en := range entries {
			m, _ := en.(map[string]any)
			inner, _ := m[item].(map[string]any)
			for from, to := range keys {
				p, ok := inner[from].(string)
				if !ok || p == "" {
					continue
				}
				data, err := read(p)
				if err != nil {
					return err
				}
				delete(inner, from)
				if to == "token" {
					inner[to] = strings.TrimSpace(string(data))
				} else {
					inner[to] = base64.StdEncoding.EncodeToString(data)
				}
			}
		}
		return nil
	}
	if err := inline("clusters", "cluster", map[string]string{"certificate-authority": "certificate-authority-data"}); err != nil {
		return nil, err
	}
	if err := inline("users", "user", map[string]string{
		"client-certificate": "client-certificate-data", "client-key": "client-key-data", "tokenFile": "token",
	}); err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(kc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", file, err)
	}
	return out, nil
}

// writeAsNonroot writes data to name under root, readable by the nonroot user alone,
// creating its parent folder for that user when missing.
func writeAsNonroot(root, name string, data []byte) error {
	dst := filepath.Join(root, filepath.Clean(name))
	dir := filepath.Dir(dst)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := os.Chown(dir, nonroot, nonroot); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Chown(dst, nonroot, nonroot); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// lines keeps a process's output.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, s)
}

func (l *lines) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.l) == 0 {
		return ""
	}
	return l.l[len(l.l)-1]
}

func (l *lines) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := max(0, len(l.l)-20)
	return strings.Join(l.l[n:], "\n")
}
