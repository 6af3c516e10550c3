package bank_test

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/bank/banktest"
)

// restoring is a bank on sw with a restore in progress, created at t0.
func restoring(t *testing.T, sw *banktest.Swift, t0 time.Time) (*bank.Bank, string) {
	t.Helper()
	b := banktest.NewOn(t, sw, time.Now)
	r, err := b.CreateRestore(context.Background(), bank.Restore{ID: "r1", Checkpoint: "c1", CreatedAt: t0, Deadline: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return b, r.ID
}

func end(t *testing.T, b *bank.Bank, id string) bank.Ending {
	t.Helper()
	e, err := b.Restores().End(context.Background(), id, events.RestoreInProgress, events.RestoreSuccess, events.RestoreFail)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Racing last results of one restore in one process: one of them is told First.
func TestEndRacingInOneProcessIsFirstOnce(t *testing.T) {
	b, id := restoring(t, banktest.NewSwift(time.Now), time.Now().UTC())
	const racers = 16
	var wg sync.WaitGroup
	ends := make([]bank.Ending, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ends[i], errs[i] = b.Restores().End(context.Background(), id, events.RestoreInProgress, events.RestoreSuccess, events.RestoreFail)
		}()
	}
	wg.Wait()
	first := 0
	for i, e := range ends {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if e.Status != events.RestoreSuccess {
			t.Errorf("racer %d: status %q", i, e.Status)
		}
		if e.First {
			first++
		}
	}
	if first != 1 {
		t.Fatalf("%d racers were told First, want 1", first)
	}
}

// Another process recorded the attempt's end but had not written its status yet: this
// caller is not First and takes the recorded status, which it also writes.
func TestEndAfterAnotherProcessRecordedItTakesItsStatus(t *testing.T) {
	sw := banktest.NewSwift(time.Now)
	t0 := time.Now().UTC()
	b, id := restoring(t, sw, t0)
	var won bytes.Buffer
	if err := json.NewEncoder(&won).Encode(bank.StatusChange{Status: events.RestoreFail, At: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := sw.ObjectPut(context.Background(), "bank", bank.Layout{}.Ended(bank.RestoreOp(id), t0), &won, false, "", "", nil); err != nil {
		t.Fatal(err)
	}
	e := end(t, b, id)
	if e.First || e.Status != events.RestoreFail {
		t.Fatalf("end = %+v, want the other's fail, not first", e)
	}
	if status, err := b.Restores().Status(context.Background(), id); err != nil || status != events.RestoreFail {
		t.Fatalf("status = %q, %v; want %s", status, err, events.RestoreFail)
	}
	if e := end(t, b, id); e.First || e.Status != events.RestoreFail {
		t.Fatalf("a later duplicate: %+v", e)
	}
}

// A deletion attempted again ends again: each attempt's end is counted once.
func TestEndOfEachAttemptIsFirstOnce(t *testing.T) {
	b := banktest.New(t, nil)
	ctx := context.Background()
	d := b.Deletions()
	endDeletion := func() bank.Ending {
		t.Helper()
		e, err := d.End(ctx, "c1", events.StatusDeleting, events.StatusDeleted, events.StatusErrorDeleting)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	t0 := time.Now().UTC()
	if err := d.SetStatusAt(ctx, "c1", events.StatusDeleting, t0); err != nil {
		t.Fatal(err)
	}
	if e := endDeletion(); !e.First || e.Status != events.StatusDeleted {
		t.Fatalf("first attempt's end: %+v", e)
	}
	if err := d.SetStatusAt(ctx, "c1", events.StatusDeleting, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if e := endDeletion(); !e.First || e.Status != events.StatusDeleted {
		t.Fatalf("second attempt's end: %+v", e)
	}
	if e := endDeletion(); e.First {
		t.Fatalf("its duplicate: %+v", e)
	}
}
