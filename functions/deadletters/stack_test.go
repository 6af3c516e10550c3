package deadletters

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/stacktest"
)

// TestDeadLettersOnStack records, lists and replays dead letters in a bank on the local
// stack's Swift: duplicates (sequential and racing) are one record, a later failure of the
// same event is a second failure of that record, data that is not JSON comes back byte
// for byte, pages are newest first, and each replay is sent and recorded.
func TestDeadLettersOnStack(t *testing.T) {
	st := stacktest.Load(t)
	b, _ := st.TempBank(t, "keystone")
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	sk := &sink{}
	s := NewStep(b, sk, v, (&clock{t: time.Now().UTC().Add(-time.Hour)}).now)
	ctx := testContext(t)
	timed := func(what string, start time.Time) {
		t.Logf("%-40s %6.0f ms", what, float64(time.Since(start).Microseconds())/1000)
	}

	start := time.Now()
	backup := original("e-backup", events.VolumeBackup, `{"checkpoint":"c1"}`)
	binary := original("e-binary", events.PodShow, "")
	_ = binary.SetData("application/octet-stream", []byte{0, 1, 2, 0xff, '\n'})
	malformed := original("e-malformed", events.CheckpointsList, `{"limit":`)
	letters := []event.Event{
		deadLetter(backup, "http://back-up-volume", 503, "cinder is down", time.Now().UTC()),
		deadLetter(binary, "http://list-pods", 400, "datacontenttype", time.Now().UTC()),
		deadLetter(malformed, "http://checkpoints", 400, "data: not valid JSON", time.Now().UTC()),
	}
	for _, e := range letters {
		handle(t, s, e)
	}
	timed("record 3 dead letters", start)

	// Duplicates: still one record, one failure.
	start = time.Now()
	handle(t, s, letters[0])
	handle(t, s, letters[2])
	timed("record 2 duplicates", start)
	// The backup event failing again after a while: a second failure of its record.
	handle(t, s, deadLetter(backup, "http://back-up-volume", 500, "still down", time.Now().UTC().Add(time.Minute)))

	backupID := bank.DeadLetterID(backup.Source(), backup.ID(), "http://back-up-volume")
	d, err := b.DeadLetter(ctx, backupID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Code != 503 || d.Error != "cinder is down" || len(d.Failures) != 2 || d.Failures[0].Code != 503 || d.Failures[1].Code != 500 ||
		string(d.Event.Data()) != `{"checkpoint":"c1"}` || d.Event.Extensions()[events.ExtFlow] != events.FlowProtect {
		t.Fatalf("backup dead letter %+v", d)
	}
	d, err = b.DeadLetter(ctx, bank.DeadLetterID(binary.Source(), binary.ID(), "http://list-pods"))
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Event.Data()) != "\x00\x01\x02\xff\n" || d.Event.DataContentType() != "application/octet-stream" {
		t.Fatalf("binary data came back as %q (%s)", d.Event.Data(), d.Event.DataContentType())
	}
	d, err = b.DeadLetter(ctx, bank.DeadLetterID(malformed.Source(), malformed.ID(), "http://checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Event.Data()) != `{"limit":` || len(d.Failures) != 1 {
		t.Fatalf("malformed dead letter: data %q, failures %v", d.Event.Data(), d.Failures)
	}

	// Pages, newest first, and one type.
	start = time.Now()
	// (the front door lists them for users, from the bank as here)
	list := func(typ string, limit int, marker string) events.DeadLettersListedResult {
		t.Helper()
		l, next, err := bank.ListDeadLetterSummaries(ctx, b, typ, limit, marker)
		if err != nil {
			t.Fatal(err)
		}
		return events.DeadLettersListedResult{DeadLetters: l, Next: next}
	}
	first := list("", 2, "")
	second := list("", 2, first.Next)
	timed("list 2 pages", start)
	if got := append(listedIDs(first), listedIDs(second)...); !slices.Equal(got, []string{"e-malformed", "e-binary", "e-backup"}) || second.Next != "" {
		t.Fatalf("pages %v, then next %q", got, second.Next)
	}
	if s := second.DeadLetters[0]; s.Failures != 2 || s.Code != 503 || s.LastFailedAt.IsZero() {
		t.Fatalf("backup summary %+v", s)
	}
	if got := listedIDs(list(events.PodShow, 20, "")); !slices.Equal(got, []string{"e-binary"}) {
		t.Fatalf("dead letters of %s: %v", events.PodShow, got)
	}

	// Four racing first deliveries of one dead letter: one record with one failure, listed
	// once.
	race := deadLetter(original("e-race", "com.example.race", `{}`), "http://x", 500, "", time.Now().UTC())
	start = time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := s.Handle(ctx, race); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	timed("record 4 racing first deliveries", start)
	if got := listedIDs(list("com.example.race", 20, "")); !slices.Equal(got, []string{"e-race"}) {
		t.Fatalf("racing deliveries listed as %v", got)
	}
	d, err = b.DeadLetter(ctx, bank.DeadLetterID(race.Source(), race.ID(), "http://x"))
	if err != nil || len(d.Failures) != 1 {
		t.Fatalf("racing deliveries: %v, failures %v", err, d.Failures)
	}

	// Two replays: each sends the original event and is recorded.
	start = time.Now()
	for range 2 {
		handle(t, s, request(events.DeadLetterReplay, `{"deadletter":"`+backupID+`"}`))
	}
	timed("replay twice", start)
	if len(sk.sent) != 2 || sk.sent[1].ID() != backup.ID() || string(sk.sent[1].Data()) != `{"checkpoint":"c1"}` ||
		len(sk.sent[1].Extensions()) != 1 {
		t.Fatalf("sent %v", sk.sent)
	}
	d, err = b.DeadLetter(ctx, backupID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Replays) != 2 || !d.Replays[0].Before(d.Replays[1]) {
		t.Fatalf("replays %v", d.Replays)
	}
	// Replaying binary data sends the same bytes.
	handle(t, s, request(events.DeadLetterReplay, fmt.Sprintf(`{"deadletter":%q}`, bank.DeadLetterID(binary.Source(), binary.ID(), "http://list-pods"))))
	if got := sk.sent[2]; string(got.Data()) != "\x00\x01\x02\xff\n" || got.DataContentType() != "application/octet-stream" {
		t.Fatalf("replayed binary data %q (%s)", got.Data(), got.DataContentType())
	}

	_, err = s.Handle(ctx, request(events.DeadLetterReplay, `{"deadletter":"3f1a2b4c-0000-5000-8000-000000000000"}`))
	if function.StatusOf(err) != 400 {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := b.DeadLetter(context.Background(), "3f1a2b4c-0000-5000-8000-000000000000"); !errors.Is(err, bank.ErrNotFound) {
		t.Fatalf("unknown id in the bank: %v", err)
	}
}
