package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// refNameAnnotation names an image inside an OCI layout.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// ReadLayout returns the one image of the OCI layout at dir.
func ReadLayout(dir string) (v1.Image, error) {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("read OCI layout %s: %w", dir, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read OCI layout %s: %w", dir, err)
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("OCI layout %s holds %d manifests, want 1", dir, len(im.Manifests))
	}
	img, err := ii.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("read OCI layout %s: %w", dir, err)
	}
	return img, nil
}

// IsLayout says whether dir holds an OCI layout.
func IsLayout(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "oci-layout"))
	return err == nil
}

// WriteLayout makes dir an OCI layout holding img alone, named ref. It leaves dir as it
// is when it already holds img (same digest), and says whether it wrote.
func WriteLayout(dir string, img v1.Image, ref string) (bool, error) {
	want, err := img.Digest()
	if err != nil {
		return false, fmt.Errorf("digest: %w", err)
	}
	if old, err := ReadLayout(dir); err == nil {
		if d, err := old.Digest(); err == nil && d == want && complete(dir, old) {
			return false, nil
		}
	}
	tmp := dir + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.RemoveAll(tmp); err != nil {
		return false, fmt.Errorf("write OCI layout: %w", err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return false, fmt.Errorf("write OCI layout %s: %w", tmp, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: ref})); err != nil {
		return false, fmt.Errorf("write OCI layout %s: %w", tmp, err)
	}
	old := dir + ".old-" + strconv.Itoa(os.Getpid())
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("replace OCI layout: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return false, fmt.Errorf("replace OCI layout: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		return true, fmt.Errorf("replace OCI layout: %w", err)
	}
	return true, nil
}

// complete says whether every blob of img is in the layout at dir (an interrupted write
// leaves none half-written: layouts are written aside and renamed into place, but a
// blob may have been deleted by hand).
func complete(dir string, img v1.Image) bool {
	m, err := img.Manifest()
	if err != nil {
		return false
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	for _, d := range blobs {
		fi, err := os.Stat(filepath.Join(dir, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		if err != nil || fi.Size() != d.Size {
			return false
		}
	}
	return true
}

// Sizes is the size of an image: its compressed layers (what a pull transfers, with
// the config) and its unpacked layers.
type Sizes struct {
	Compressed   int64
	Uncompressed int64
}

// ImageSizes measures img; the uncompressed size is counted by reading every layer.
func ImageSizes(img v1.Image) (Sizes, error) {
	var s Sizes
	m, err := img.Manifest()
	if err != nil {
		return s, fmt.Errorf("manifest: %w", err)
	}
	s.Compressed = m.Config.Size
	layers, err := img.Layers()
	if err != nil {
		return s, fmt.Errorf("layers: %w", err)
	}
	for i, l := range layers {
		s.Compressed += m.Layers[i].Size
		rc, err := l.Uncompressed()
		if err != nil {
			return s, fmt.Errorf("layer %d: %w", i, err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return s, fmt.Errorf("layer %d: %w", i, err)
		}
		s.Uncompressed += n
	}
	return s, nil
}
