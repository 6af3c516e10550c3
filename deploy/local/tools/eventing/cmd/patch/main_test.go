package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPatchesApply applies every patch to the module's sources in the module cache (what
// `go mod vendor` copies) and checks that nothing listens on all interfaces any more.
func TestPatchesApply(t *testing.T) {
	dirs := map[string]string{}
	for _, m := range []string{"knative.dev/eventing", "knative.dev/pkg"} {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", m).Output()
		if err != nil || strings.TrimSpace(string(out)) == "" {
			t.Skipf("module %s is not downloaded: %v", m, err)
		}
		dirs[m] = strings.TrimSpace(string(out))
	}
	for _, p := range patches {
		var src string
		for m, dir := range dirs {
			if rel, ok := strings.CutPrefix(p.file, m+"/"); ok {
				src = filepath.Join(dir, rel)
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("%s: %v", p.file, err)
		}
		got, err := p.apply(string(b))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.subs {
			if !strings.Contains(got, s.new) {
				t.Errorf("%s: %q not in the patched file", p.file, s.new)
			}
		}
		if strings.Contains(got, `":" +`) || strings.Contains(got, `Sprintf(":%d"`) || strings.Contains(got, `Sprint(":"`) {
			t.Errorf("%s still binds all interfaces", p.file)
		}
		// Applying twice fails: the anchors are gone.
		if _, err := p.apply(got); err == nil && len(p.subs) > 0 {
			t.Errorf("%s: a patched file patched again did not fail", p.file)
		}
	}
}

func TestMissingAnchorFails(t *testing.T) {
	p := patch{file: "x.go", subs: []substitution{{"Listen(\":80\")", "Listen(\"127.0.0.1:80\")"}}}
	if _, err := p.apply("package x\n"); err == nil || !strings.Contains(err.Error(), "occurs 0 times") {
		t.Fatalf("err %v", err)
	}
}
