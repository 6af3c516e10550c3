package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// nonroot is the user (and group) the images run as, as in distroless.
	nonroot = 65532
	// caBundlePath is where Debian, and Go's crypto/x509 first, look for the CA bundle.
	caBundlePath = "/etc/ssl/certs/ca-certificates.crt"
)

// epoch is the time of every file and of the image config: the base image is a function
// of its inputs alone, so its digest names them.
var epoch = time.Unix(0, 0).UTC()

// BaseSpec is what the base image is made of.
type BaseSpec struct {
	// Platform of the image, e.g. linux/amd64.
	Platform v1.Platform
	// CABundle is the concatenated PEM certificates installed as caBundlePath.
	CABundle []byte
	// CASource says where the bundle comes from (e.g. "Debian ca-certificates 20230311").
	CASource string
}

// CABundle reads PEM certificate files, checks that each holds certificates that parse,
// and concatenates them in the order given. It returns the bundle and the number of
// certificates.
func CABundle(files []string) ([]byte, int, error) {
	if len(files) == 0 {
		return nil, 0, errors.New("no CA certificate files")
	}
	var out bytes.Buffer
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, fmt.Errorf("read CA certificate: %w", err)
		}
		n, err := countCertificates(b)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", f, err)
		}
		total += n
		out.Write(bytes.TrimSpace(b))
		out.WriteByte('\n')
	}
	return out.Bytes(), total, nil
}

// countCertificates parses every PEM block of b as an X.509 certificate.
func countCertificates(b []byte) (int, error) {
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return n, fmt.Errorf("PEM block %d is a %q, not a certificate", n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return n, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return 0, errors.New("no PEM certificate")
	}
	return n, nil
}

// baseFile is one entry of the base layer.
type baseFile struct {
	path string
	mode int64 // permission bits, plus tar's c_ISVTX for the sticky bit
	uid  int
	dir  bool
	data []byte
}

func baseFiles(caBundle []byte) []baseFile {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonroot)
	return []baseFile{
		{path: "etc", mode: 0o755, dir: true},
		{path: "etc/group", mode: 0o644, data: []byte(group)},
		{path: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{path: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "etc/ssl", mode: 0o755, dir: true},
		{path: "etc/ssl/certs", mode: 0o755, dir: true},
		{path: caBundlePath[1:], mode: 0o644, data: caBundle},
		{path: "home", mode: 0o755, dir: true},
		{path: "home/nonroot", mode: 0o700, uid: nonroot, dir: true},
		{path: "root", mode: 0o700, dir: true},
		{path: "tmp", mode: 0o1777, dir: true},
	}
}

// baseLayer is the base's only layer, byte for byte the same for the same bundle.
func baseLayer(caBundle []byte) (v1.Layer, error) {
	files := baseFiles(caBundle)
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name: f.path, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: epoch,
			Typeflag: tar.TypeReg, Size: int64(len(f.data)), Format: tar.FormatPAX,
		}
		if f.dir {
			h.Name += "/"
			h.Typeflag = tar.TypeDir
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("base layer: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("base layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// BaseImage builds the base image: the CA bundle, /etc/passwd and /etc/group with the
// nonroot user, /tmp, and a config that runs as that user. Nothing else: the functions
// are static Go binaries.
func BaseImage(s BaseSpec) (v1.Image, error) {
	if _, err := countCertificates(s.CABundle); err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	layer, err := baseLayer(s.CABundle)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "podguard-images base",
			Comment:   "CA certificates (" + s.CASource + "), /etc/passwd and /etc/group with nonroot (65532), /tmp",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = s.Platform.OS
	cf.Architecture = s.Platform.Architecture
	cf.Variant = s.Platform.Variant
	cf.Config.User = strconv.Itoa(nonroot)
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"SSL_CERT_FILE=" + caBundlePath}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "podguard base",
		"org.opencontainers.image.description": "CA certificates (" + s.CASource + ") and a nonroot user (65532) for static Go binaries",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	return img, nil
}
