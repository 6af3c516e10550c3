package batch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/podguard/podguard/shared/graph"
)

func TestEachVisitsEveryItemAndReturnsAnError(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	err := Each(context.Background(), []int{1, 2, 3, 4, 5}, 2, func(_ context.Context, i int) error {
		n.Add(int64(i))
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n.Load() != 15 {
		t.Fatalf("err %v, sum %d", err, n.Load())
	}
	if err := Each(context.Background(), []int{}, 4, func(context.Context, int) error { return boom }); err != nil {
		t.Fatal(err)
	}
}

func TestSettleKeepsSettledOutcomesAndCountsTheRest(t *testing.T) {
	rs := []graph.Resource{{Type: graph.VolumeType, ID: "a"}, {Type: graph.VolumeType, ID: "b"}, {Type: graph.VolumeType, ID: "c"}}
	settled, inProgress, err := Settle(context.Background(), rs, 2, func(_ context.Context, r graph.Resource) (string, bool, error) {
		return "done-" + r.ID, r.ID != "b", nil
	})
	if err != nil || inProgress != 1 || len(settled) != 2 || settled[rs[0].Key()] != "done-a" || settled[rs[2].Key()] != "done-c" {
		t.Fatalf("settled %v, in progress %d, err %v", settled, inProgress, err)
	}
}
