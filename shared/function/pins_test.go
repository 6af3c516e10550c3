package function

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestDependencyPins guards the versions that must work together: `go get @latest` and
// `go mod tidy` can silently move knative.dev/pkg to a 2023 pseudo-version.
func TestDependencyPins(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("no build info")
	}
	want := map[string]string{
		"knative.dev/pkg":                  "v0.0.0-20260727151759-521cb33b33dd", // what knative.dev/serving v0.50.0 requires
		"k8s.io/client-go":                 "v0.35.",
		"k8s.io/api":                       "v0.35.",
		"k8s.io/apimachinery":              "v0.35.",
		"github.com/cloudevents/sdk-go/v2": "v2.16.",
	}
	for _, d := range bi.Deps {
		if p, ok := want[d.Path]; ok {
			if !strings.HasPrefix(d.Version, p) {
				t.Errorf("%s is %s, want %s*", d.Path, d.Version, p)
			}
			delete(want, d.Path)
		}
	}
	for p := range want {
		t.Errorf("%s is not a dependency of this test binary", p)
	}
}
