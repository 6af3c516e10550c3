package volumes_test

import (
	"context"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/openstack/volumes"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestVolumesOnStack creates, finds and deletes volumes on the local stack's Cinder,
// with metadata values that need quoting in Cinder's metadata filter.
func TestVolumesOnStack(t *testing.T) {
	st := stacktest.Load(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sc, err := st.OpenStack().BlockStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := volumes.New(sc)
	c.PollInterval = 200 * time.Millisecond
	run := "it-" + uuid.NewString()[:8]

	tagA := map[string]string{"podguard-restore": run, "podguard-resource": `OS::Cinder::Volume#a'b"c\d`}
	tagB := map[string]string{"podguard-restore": run, "podguard-resource": "OS::Cinder::Volume#b"}
	var ids []string
	for _, tag := range []map[string]string{tagA, tagB} {
		start := time.Now()
		v, err := c.Create(ctx, run, 1, tag)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, _ = c.WaitForStatus(ctx, v.ID, volumes.StatusAvailable, volumes.StatusError)
			if err := c.Delete(ctx, v.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if v, err = c.WaitForStatus(ctx, v.ID, volumes.StatusAvailable); err != nil {
			t.Fatal(err)
		}
		t.Logf("create 1 GiB volume: %.1fs", time.Since(start).Seconds())
		if v.Size != 1 || v.Name != run || !maps.Equal(v.Metadata, tag) || v.BackupID != "" || v.CreatedAt.IsZero() {
			t.Errorf("volume = %+v", v)
		}
	}

	for i, tag := range []map[string]string{tagA, tagB} {
		v, err := c.FindByMetadata(ctx, tag)
		if err != nil || v == nil || v.ID != ids[i] {
			t.Fatalf("FindByMetadata(%v) = %+v, %v; want %s", tag, v, err, ids[i])
		}
	}
	// One volume per page: both are listed over two pages; which one is the newest is not
	// certain, Cinder's timestamps have whole seconds.
	paged := volumes.New(sc)
	paged.PageSize = 1
	if v, err := paged.FindByMetadata(ctx, map[string]string{"podguard-restore": run}); err != nil || v == nil || (v.ID != ids[0] && v.ID != ids[1]) {
		t.Fatalf("FindByMetadata of both = %+v, %v; want one of %v", v, err, ids)
	}
	if v, err := c.FindByMetadata(ctx, map[string]string{"podguard-restore": run + "-none"}); err != nil || v != nil {
		t.Fatalf("FindByMetadata with no match = %+v, %v", v, err)
	}

	start := time.Now()
	if err := c.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, ids[0]); err != nil {
		t.Fatalf("deleting a volume being deleted: %v", err)
	}
	if v, err := c.FindByMetadata(ctx, tagA); err != nil || v != nil {
		t.Fatalf("FindByMetadata of a volume being deleted = %+v, %v; want nil", v, err)
	}
	if err := c.WaitForDeleted(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete volume: %.1fs", time.Since(start).Seconds())
	if err := c.Delete(ctx, ids[0]); err != nil {
		t.Fatalf("deleting a deleted volume: %v", err)
	}
	if _, err := c.Get(ctx, ids[0]); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Fatalf("Get of a deleted volume: err = %v, want 404", err)
	}
}
