package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/ko/pkg/build"
	"golang.org/x/sync/errgroup"
)

// Function is one function's main package: functions/<step>/cmd/<name>.
type Function struct {
	// Name is the main package's directory name: the binary, /ko-app/<name>, and the
	// image's name.
	Name       string
	ImportPath string
	// Rel is the package's directory relative to the repository.
	Rel string
}

// functionPattern is where the functions' main packages are, relative to the repository.
const functionPattern = "functions/*/cmd/*"

// Functions lists every main package matching functions/*/cmd/* in the module at repo,
// by name.
func Functions(ctx context.Context, repo string) ([]Function, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-f", "{{.Name}}\t{{.ImportPath}}\t{{.Dir}}", "./functions/...")
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list ./functions/... in %s: %w: %s", repo, err, strings.TrimSpace(stderr.String()))
	}
	abs, err := filepath.Abs(repo)
	if err != nil {
		return nil, fmt.Errorf("functions: %w", err)
	}
	var fns []Function
	seen := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 || f[0] != "main" {
			continue
		}
		rel, err := filepath.Rel(abs, f[2])
		if err != nil {
			continue
		}
		rel = filepath.ToSlash(rel)
		if ok, _ := filepath.Match(functionPattern, rel); !ok {
			continue
		}
		fn := Function{Name: filepath.Base(rel), ImportPath: f[1], Rel: rel}
		if other, dup := seen[fn.Name]; dup {
			return nil, fmt.Errorf("two functions build a binary named %s: %s and %s", fn.Name, other, rel)
		}
		seen[fn.Name] = rel
		fns = append(fns, fn)
	}
	if len(fns) == 0 {
		return nil, fmt.Errorf("no main package matches %s in %s", functionPattern, repo)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
	return fns, nil
}

// BuildOptions configures Build.
type BuildOptions struct {
	// Repo is the module to build from.
	Repo string
	// Base is the base image and BaseName its name, recorded in each image's
	// org.opencontainers.image.base.name annotation.
	Base     v1.Image
	BaseName string
	// Platform of the images; it must be the base's.
	Platform v1.Platform
	// Out is the folder of the images: one OCI layout per function, named after it.
	Out string
	// Jobs bounds concurrent go builds.
	Jobs int
}

// Built is one function's image.
type Built struct {
	Function
	Dir     string
	Digest  v1.Hash
	Written bool // false: the layout already held this image
	Sizes   Sizes
}

// Build builds every function's image with ko's builder (go build with CGO_ENABLED=0,
// -trimpath, -ldflags=-s -w, for the platform, onto the base) and writes each as an OCI
// layout under o.Out, replacing the previous image. Layouts of functions that are gone
// are removed. Nothing is pulled or pushed.
func Build(ctx context.Context, fns []Function, o BuildOptions) ([]Built, error) {
	baseDigest, err := o.Base.Digest()
	if err != nil {
		return nil, fmt.Errorf("base digest: %w", err)
	}
	baseRef, err := name.NewDigest(o.BaseName + "@" + baseDigest.String())
	if err != nil {
		return nil, fmt.Errorf("base name %q: %w", o.BaseName, err)
	}
	getBase := func(context.Context, string) (name.Reference, build.Result, error) {
		return baseRef, o.Base, nil
	}
	env := []string{"CGO_ENABLED=0", "GOOS=" + o.Platform.OS, "GOARCH=" + o.Platform.Architecture}
	b, err := build.NewGo(ctx, o.Repo,
		build.WithBaseImages(getBase),
		build.WithPlatforms(o.Platform.String()),
		build.WithDefaultEnv(env),
		build.WithDefaultLdflags([]string{"-s", "-w"}),
		build.WithTrimpath(true),
		build.WithDisabledSBOM(),
		build.WithJobs(o.Jobs),
	)
	if err != nil {
		return nil, fmt.Errorf("ko builder: %w", err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("images folder: %w", err)
	}
	out := make([]Built, len(fns))
	g, gctx := errgroup.WithContext(ctx)
	for i, fn := range fns {
		g.Go(func() error {
			res, err := b.Build(gctx, build.StrictScheme+fn.ImportPath)
			if err != nil {
				return fmt.Errorf("build %s: %w", fn.Rel, err)
			}
			img, ok := res.(v1.Image)
			if !ok {
				return fmt.Errorf("build %s: got a %T, want one image", fn.Rel, res)
			}
			dir := filepath.Join(o.Out, fn.Name)
			written, err := WriteLayout(dir, img, fn.Name)
			if err != nil {
				return fmt.Errorf("%s: %w", fn.Name, err)
			}
			saved, err := ReadLayout(dir)
			if err != nil {
				return err
			}
			d, err := saved.Digest()
			if err != nil {
				return fmt.Errorf("%s: %w", fn.Name, err)
			}
			sizes, err := ImageSizes(saved)
			if err != nil {
				return fmt.Errorf("%s: %w", fn.Name, err)
			}
			out[i] = Built{Function: fn, Dir: dir, Digest: d, Written: written, Sizes: sizes}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := prune(o.Out, fns); err != nil {
		return out, err
	}
	return out, nil
}

// prune removes the layouts under out of functions that no longer exist.
func prune(out string, fns []Function) error {
	keep := map[string]bool{}
	for _, fn := range fns {
		keep[fn.Name] = true
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(out, e.Name())
		aside := strings.Contains(e.Name(), ".tmp-") || strings.Contains(e.Name(), ".old-") // being written
		if e.IsDir() && !keep[e.Name()] && !aside && IsLayout(dir) {
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("prune: %w", err)
			}
		}
	}
	return nil
}
