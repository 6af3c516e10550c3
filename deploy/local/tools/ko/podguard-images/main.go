// Command podguard-images builds podguard's function images offline with ko's build
// library, and checks them. No registry is needed: the base image is built here and
// written as an OCI layout, and every image is written as an OCI layout of its own.
//
//	podguard-images base  -out DIR [-platform linux/amd64] [-ca-source TEXT] CERT.crt...
//	podguard-images build -repo DIR -base DIR -out DIR [-platform linux/amd64] [-jobs N] [-v]
//	podguard-images check -dir DIR [-platform linux/amd64] [-stack-env FILE] [-run]
//
// base writes the base image: the given CA certificates as /etc/ssl/certs/ca-certificates.crt,
// /etc/passwd and /etc/group with the nonroot user 65532, /tmp; it runs as 65532 and sets
// SSL_CERT_FILE. The same certificates give the same image (same digest).
//
// build builds one image per main package functions/*/cmd/<name> of the module at -repo:
// ko's go build (CGO_ENABLED=0, -trimpath, -ldflags=-s -w) onto the base, entrypoint
// /ko-app/<name>, written to <out>/<name>; it prints each image's digest and sizes.
// Set KOCACHE to let ko reuse layers of unchanged binaries.
//
// check checks every image under -dir (see Check), and with -run starts each function's
// binary from the image's root filesystem (needs root).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("ko: ") // ko's builder logs what it builds through the log package
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "podguard-images:", err)
		os.Exit(1)
	}
}

const usage = "usage: podguard-images base|build|check [flags] (-h for the flags of each)"

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	platform := fs.String("platform", "linux/"+runtime.GOARCH, "platform of the images (os/arch)")
	switch args[0] {
	case "base":
		out := fs.String("out", "", "OCI layout to write the base image to")
		source := fs.String("ca-source", "", "where the certificates come from, recorded in the image")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		p, err := parsePlatform(*platform)
		if err != nil {
			return err
		}
		if *out == "" {
			return errors.New("base: -out is required")
		}
		return runBase(*out, p, *source, fs.Args(), stdout)
	case "build":
		repo := fs.String("repo", ".", "the podguard module")
		base := fs.String("base", "", "OCI layout of the base image (podguard-images base)")
		baseName := fs.String("base-name", "podguard.local/base", "name of the base recorded in the images (org.opencontainers.image.base.name)")
		out := fs.String("out", "", "folder of the images, one OCI layout per function")
		jobs := fs.Int("jobs", runtime.GOMAXPROCS(0), "concurrent go builds")
		verbose := fs.Bool("v", false, "show ko's build log")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if !*verbose {
			log.SetOutput(io.Discard) // ko's progress lines and git notes; failures come back as errors
		}
		p, err := parsePlatform(*platform)
		if err != nil {
			return err
		}
		if *base == "" || *out == "" {
			return errors.New("build: -base and -out are required")
		}
		return runBuild(ctx, BuildOptions{Repo: *repo, BaseName: *baseName, Platform: p, Out: *out, Jobs: *jobs}, *base, stdout)
	case "check":
		dir := fs.String("dir", "", "folder of the images (build's -out)")
		stackEnv := fs.String("stack-env", "", "the local stack's env file; when it exists, the functions run against the stack")
		runBins := fs.Bool("run", false, "start each function's binary from its image's root filesystem (chroot; needs root)")
		timeout := fs.Duration("start-timeout", 30*time.Second, "how long a function may take to start serving or to fail")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		p, err := parsePlatform(*platform)
		if err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("check: -dir is required")
		}
		o := CheckOptions{Platform: p, Run: *runBins, StartTimeout: *timeout}
		if *runBins && *stackEnv != "" {
			if _, err := os.Stat(*stackEnv); err == nil {
				if o.Stack, err = readEnvFile(*stackEnv); err != nil {
					return err
				}
			}
		}
		return runCheck(ctx, *dir, o, stdout)
	default:
		return errors.New(usage)
	}
}

func parsePlatform(s string) (v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("platform %q: %w", s, err)
	}
	if p.OS != "linux" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want linux/<arch>", s)
	}
	return *p, nil
}

func runBase(out string, p v1.Platform, source string, certs []string, stdout io.Writer) error {
	bundle, n, err := CABundle(certs)
	if err != nil {
		return err
	}
	img, err := BaseImage(BaseSpec{Platform: p, CABundle: bundle, CASource: source})
	if err != nil {
		return err
	}
	written, err := WriteLayout(out, img, "base")
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	state := "unchanged"
	if written {
		state = "written"
	}
	fmt.Fprintf(stdout, "base %s (%s): %d CA certificates, %s\n", d, state, n, out)
	return nil
}

func runBuild(ctx context.Context, o BuildOptions, baseDir string, stdout io.Writer) error {
	base, err := ReadLayout(baseDir)
	if err != nil {
		return err
	}
	o.Base = base
	fns, err := Functions(ctx, o.Repo)
	if err != nil {
		return err
	}
	start := time.Now()
	built, err := Build(ctx, fns, o)
	if err != nil {
		return err
	}
	baseSizes, err := ImageSizes(base)
	if err != nil {
		return err
	}
	baseDigest, err := base.Digest()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "function\tdigest\tcompressed\tuncompressed\t\t")
	for _, b := range built {
		state := "unchanged"
		if b.Written {
			state = "built"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", b.Name, b.Digest, mib(b.Sizes.Compressed), mib(b.Sizes.Uncompressed), state)
	}
	fmt.Fprintf(tw, "(base)\t%s\t%s\t%s\t\t\n", baseDigest, mib(baseSizes.Compressed), mib(baseSizes.Uncompressed))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d images in %s (%s, %s)\n", len(built), o.Out, o.Platform, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func runCheck(ctx context.Context, dir string, o CheckOptions, stdout io.Writer) error {
	checked, err := Check(ctx, dir, o)
	for _, c := range checked {
		line := fmt.Sprintf("ok %s: entrypoint /ko-app/%s, user %d, static %s binary (%s), %d CA certificates parse",
			c.Name, c.Name, nonroot, o.Platform.Architecture, mib(c.BinaryBytes), c.Certs)
		if c.Ran != "" {
			line += fmt.Sprintf("; chrooted run (%s): %s", c.Took.Round(10*time.Millisecond), c.Ran)
		}
		fmt.Fprintln(stdout, line)
	}
	return err
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// readEnvFile reads the stack's env file as a shell sourcing it would.
func readEnvFile(file string) (map[string]string, error) {
	cmd := exec.Command("bash", "-c", `set -a; . "$1" >/dev/null; env -0`, "bash", file)
	cmd.Env = []string{"HOME=" + os.Getenv("HOME"), "PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "_" || k == "SHLVL" || k == "PWD" || kv == cmd.Env[0] || kv == cmd.Env[1] {
			continue
		}
		env[k] = v
	}
	return env, nil
}
