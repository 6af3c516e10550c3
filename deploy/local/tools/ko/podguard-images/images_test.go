package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"sigs.k8s.io/yaml"
)

var testPlatform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}

// testCA is a certificate authority that can sign a server certificate for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// tlsServer serves 200 over HTTPS on 127.0.0.1 with a certificate the CA signed.
func (ca *testCA) tlsServer(t *testing.T) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "keystone.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func testBase(t *testing.T, ca *testCA) v1.Image {
	t.Helper()
	f := writeFile(t, filepath.Join(t.TempDir(), "ca.crt"), ca.pem)
	bundle, n, err := CABundle([]string{f})
	if err != nil || n != 1 {
		t.Fatalf("CABundle: %d certificates, %v", n, err)
	}
	img, err := BaseImage(BaseSpec{Platform: testPlatform, CABundle: bundle, CASource: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestBaseImage(t *testing.T) {
	ca := newTestCA(t, "test CA")
	a, b := testBase(t, ca), testBase(t, ca)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("same inputs, digests %s and %s: want the same image", da, db)
	}
	if other, _ := testBase(t, newTestCA(t, "other CA")).Digest(); other == da {
		t.Errorf("another CA bundle gave the same digest %s", da)
	}
	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532" || cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("config: user %q, platform %s/%s", cf.Config.User, cf.OS, cf.Architecture)
	}
	if m, _ := a.MediaType(); m != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type %s, want an OCI manifest", m)
	}
	root := t.TempDir()
	if err := Unpack(a, root); err != nil {
		t.Fatal(err)
	}
	if n, err := checkCABundle(filepath.Join(root, caBundlePath)); err != nil || n != 1 {
		t.Errorf("CA bundle: %d certificates, %v", n, err)
	}
	if err := checkUsers(root); err != nil {
		t.Error(err)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(root, "home/nonroot"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nonroot || fi.Mode().Perm() != 0o700 {
			t.Errorf("/home/nonroot: uid %d mode %s, want 65532 drwx------", st.Uid, fi.Mode())
		}
	}
}

func TestCABundleRejectsWhatIsNotACertificate(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"empty.crt": "",
		"key.crt":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"junk.crt":  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if _, _, err := CABundle([]string{writeFile(t, filepath.Join(dir, name), []byte(data))}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestWriteLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	a := testBase(t, newTestCA(t, "a"))
	b := testBase(t, newTestCA(t, "b"))
	for i, step := range []struct {
		img   v1.Image
		write bool
	}{{a, true}, {a, false}, {b, true}} {
		written, err := WriteLayout(dir, step.img, "x")
		if err != nil {
			t.Fatal(err)
		}
		if written != step.write {
			t.Errorf("step %d: written %v, want %v", i, written, step.write)
		}
		got, err := ReadLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		gd, _ := got.Digest()
		wd, _ := step.img.Digest()
		if gd != wd {
			t.Errorf("step %d: layout holds %s, want %s", i, gd, wd)
		}
	}
	if m, _ := filepath.Glob(dir + ".*"); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}

func TestInlineKubeconfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pki/ca.crt"), []byte("CA"))
	writeFile(t, filepath.Join(dir, "token"), []byte("s3cret\n"))
	kc := writeFile(t, filepath.Join(dir, "kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: pki/ca.crt}
users:
- name: u
  user: {tokenFile: `+filepath.Join(dir, "token")+`}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`))
	b, err := inlineKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Clusters []struct {
			Cluster map[string]string `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User map[string]string `json:"user"`
		} `json:"users"`
		Current string `json:"current-context"`
	}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	c, u := got.Clusters[0].Cluster, got.Users[0].User
	if c["certificate-authority-data"] != base64.StdEncoding.EncodeToString([]byte("CA")) || c["certificate-authority"] != "" ||
		u["token"] != "s3cret" || u["tokenFile"] != "" || c["server"] != "https://127.0.0.1:6443" || got.Current != "x" {
		t.Errorf("inlined kubeconfig:\n%s", b)
	}
}

// helloMain fetches $URL with Go's default HTTP client, so with the image's CA bundle.
const helloMain = `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Getenv("URL"))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok", resp.StatusCode)
}
`

// TestBuildCheckAndRun builds a module's functions/*/cmd/* with ko onto a base holding a
// test CA, checks the image, and runs its binary from the image's root filesystem: it
// reaches an HTTPS server signed by that CA, and not one signed by another.
func TestBuildCheckAndRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go binary")
	}
	repo := t.TempDir()
	writeFile(t, filepath.Join(repo, "go.mod"), []byte("module example.com/fns\n\ngo 1.26\n"))
	writeFile(t, filepath.Join(repo, "functions/hello/cmd/hello/main.go"), []byte(helloMain))
	writeFile(t, filepath.Join(repo, "functions/hello/hello.go"), []byte("package hello\n"))
	writeFile(t, filepath.Join(repo, "functions/hello/cmd/README.md"), []byte("not a package\n"))
	writeFile(t, filepath.Join(repo, "functions/tools/gen/main.go"), []byte("package main\n\nfunc main() {}\n"))
	ctx := context.Background()
	fns, err := Functions(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 || fns[0].Name != "hello" || fns[0].ImportPath != "example.com/fns/functions/hello/cmd/hello" {
		t.Fatalf("functions: %+v, want hello alone", fns)
	}

	ca := newTestCA(t, "keystone CA")
	t.Setenv("KOCACHE", "")
	out := filepath.Join(t.TempDir(), "images")
	built, err := Build(ctx, fns, BuildOptions{Repo: repo, Base: testBase(t, ca), BaseName: "podguard.local/base", Platform: testPlatform, Out: out, Jobs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || !built[0].Written || built[0].Sizes.Compressed <= 0 || built[0].Sizes.Uncompressed <= built[0].Sizes.Compressed {
		t.Fatalf("built: %+v", built)
	}
	checked, err := Check(ctx, out, CheckOptions{Platform: testPlatform})
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) != 1 || checked[0].Certs != 1 {
		t.Fatalf("checked: %+v", checked)
	}

	if os.Geteuid() != 0 {
		t.Skip("running the binary from the image needs root (chroot)")
	}
	img, err := ReadLayout(filepath.Join(out, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := Unpack(img, root); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(url string) (string, error) {
		cmd := exec.Command(cf.Config.Entrypoint[0])
		cmd.Env = append(cf.Config.Env, "URL="+url)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: nonroot, Gid: nonroot}}
		b, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	if got, err := run(ca.tlsServer(t).URL); err != nil || got != "ok 200" {
		t.Errorf("HTTPS to a server the image's CA signed: %q, %v; want ok 200", got, err)
	}
	other := newTestCA(t, "private CA")
	otherURL := other.tlsServer(t).URL
	if got, err := run(otherURL); err == nil || !strings.Contains(got, "certificate signed by unknown authority") {
		t.Errorf("HTTPS to a server another CA signed: %q, %v; want unknown authority", got, err)
	}
	// A private CA mounted as a file into /etc/ssl/certs is trusted too: Go reads that
	// folder besides SSL_CERT_FILE.
	writeFile(t, filepath.Join(root, "etc/ssl/certs/private-ca.crt"), other.pem)
	if got, err := run(otherURL); err != nil || got != "ok 200" {
		t.Errorf("HTTPS with the private CA in /etc/ssl/certs: %q, %v; want ok 200", got, err)
	}
	fi, err := os.Stat(filepath.Join(root, "tmp"))
	if err != nil || fi.Mode()&fs.ModeSticky == 0 {
		t.Errorf("/tmp: %v %v", fi, err)
	}
}
