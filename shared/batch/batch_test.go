package batch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
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
