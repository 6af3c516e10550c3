package function

import (
	"os"
	"strings"
	"testing"
)

// TestDependencyPins guards the versions that must work together: `go get @latest` and
// `go mod tidy` can silently move knative.dev/pkg to a 2023 pseudo-version.
func TestDependencyPins(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			got[f[0]] = f[1]
		}
	}
	for path, prefix := range map[string]string{
		"knative.dev/pkg":                       "v0.0.0-20260727151759-521cb33b33dd", // what knative.dev/serving v0.50.0 requires
		"k8s.io/client-go":                      "v0.35.",
		"k8s.io/api":                            "v0.35.",
		"k8s.io/apimachinery":                   "v0.35.",
		"github.com/cloudevents/sdk-go/v2":      "v2.16.",
		"github.com/gophercloud/gophercloud/v2": "v2.",
		"github.com/ncw/swift/v2":               "v2.",
	} {
		if !strings.HasPrefix(got[path], prefix) {
			t.Errorf("go.mod requires %s %q, want %s*", path, got[path], prefix)
		}
	}
}
