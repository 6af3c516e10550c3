package events

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeListsEveryEventType keeps the README's event table in step with the catalog.
func TestReadmeListsEveryEventType(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, ty := range Catalog() {
		if !strings.Contains(string(b), "| `"+ty.Name+"` |") {
			t.Errorf("README.md does not list %s", ty.Name)
		}
	}
}
