package frontdoor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
)

// deadLetterShelf is a bank.DeadLetterReader over a few records, newest last.
type deadLetterShelf []bank.DeadLetterRecord

func (s deadLetterShelf) ListDeadLetters(_ context.Context, typ string, limit int, marker string) ([]string, string, error) {
	var ids []string
	for i := len(s) - 1; i >= 0; i-- {
		if typ == "" || s[i].Event.Type() == typ {
			ids = append(ids, s[i].ID)
		}
	}
	if marker != "" {
		ids = ids[slices.Index(ids, marker)+1:]
	}
	if len(ids) > limit {
		return ids[:limit], ids[limit-1], nil
	}
	return ids, "", nil
}

func (s deadLetterShelf) DeadLetter(_ context.Context, id string) (*bank.DeadLetterRecord, error) {
	for i := range s {
		if s[i].ID == id {
			return &s[i], nil
		}
	}
	return nil, fmt.Errorf("get deadletters/%s/letter.json: %w", id, bank.ErrNotFound)
}

func TestDeadLettersOverHTTP(t *testing.T) {
	var shelf deadLetterShelf
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, typ := range []string{events.VolumeBackup, events.MetadataSnapshot, events.VolumeBackup} {
		e := event.New()
		e.SetID(fmt.Sprint("e", i))
		e.SetSource("podguard.dev/choreographer")
		e.SetType(typ)
		_ = e.SetData(event.ApplicationJSON, map[string]int{"n": i})
		id := bank.DeadLetterID(e.Source(), e.ID(), "http://x")
		shelf = append(shelf, bank.DeadLetterRecord{
			DeadLetter: bank.DeadLetter{ID: id, RecordedAt: t0.Add(time.Duration(i) * time.Minute), Code: 500, Destination: "http://x", Error: "down", Event: e},
			Failures:   []bank.DeadLetterFailure{{At: t0, Code: 500}}, Replays: []time.Time{}})
	}
	s := newTestStep(t, nil, nil)
	srv := httptest.NewServer(s.ReadAPI())
	defer srv.Close()
	get := func(path string, want int) []byte {
		t.Helper()
		resp, err := getAsAdmin(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
		return b
	}
	get("/api/deadletters", http.StatusNotFound) // not configured
	s.deadLetters = shelf

	var page events.DeadLettersListedResult
	if err := json.Unmarshal(get("/api/deadletters?limit=2", 200), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.DeadLetters) != 2 || page.DeadLetters[0].Event.ID != "e2" || page.DeadLetters[1].Event.ID != "e1" || page.Next == "" ||
		page.DeadLetters[0].Failures != 1 || page.DeadLetters[0].Code != 500 {
		t.Fatalf("first page %+v", page)
	}
	if err := json.Unmarshal(get("/api/deadletters?limit=2&marker="+page.Next, 200), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.DeadLetters) != 1 || page.DeadLetters[0].Event.ID != "e0" || page.Next != "" {
		t.Fatalf("second page %+v", page)
	}
	if err := json.Unmarshal(get("/api/deadletters?type="+events.MetadataSnapshot, 200), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.DeadLetters) != 1 || page.DeadLetters[0].Event.ID != "e1" {
		t.Fatalf("of one type: %+v", page)
	}
	var one bank.DeadLetterRecord
	if err := json.Unmarshal(get("/api/deadletters/"+shelf[0].ID, 200), &one); err != nil {
		t.Fatal(err)
	}
	if one.ID != shelf[0].ID || one.Error != "down" || one.Event.ID() != "e0" || !strings.Contains(string(one.Event.Data()), `"n": 0`) ||
		len(one.Failures) != 1 {
		t.Fatalf("one dead letter: %+v", one)
	}
	get("/api/deadletters/3f1a2b4c-0000-5000-8000-000000000000", http.StatusNotFound)
	get("/api/deadletters?limit=0", http.StatusBadRequest)
}
