package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// DeadLetter is an event whose delivery failed for good.
type DeadLetter struct {
	// Time is when the broker gave up.
	Time time.Time `json:"time"`
	// Trigger is the Trigger whose delivery failed.
	Trigger string `json:"trigger"`
	// Destination is the URL that failed.
	Destination string `json:"destination"`
	// Code is the last HTTP status (500 when there was no response).
	Code int `json:"code"`
	// Attempts is how many deliveries were made.
	Attempts int `json:"attempts"`
	// Response is the start of the last response body, or the dispatch error.
	Response string `json:"response,omitempty"`
	// Event is the event, with the knativeerror* extensions.
	Event event.Event `json:"event"`
}

// MaxKept bounds the dead letters a Recorder keeps in memory (the most recent ones);
// its file keeps them all.
const MaxKept = 10000

// Recorder keeps dead letters in memory and, when it has a file, appends each to it as
// a line of JSON, so that they can be found and replayed after a restart. The zero value
// keeps them in memory only.
type Recorder struct {
	mu   sync.Mutex
	kept []DeadLetter
	file *os.File
}

// NewRecorder records into memory and, unless path is empty, appends to the file at
// path (created if missing).
func NewRecorder(path string) (*Recorder, error) {
	r := &Recorder{}
	if path == "" {
		return r, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open dead-letter file: %w", err)
	}
	r.file = f
	return r, nil
}

// Record keeps d, and appends it to the file.
func (r *Recorder) Record(d DeadLetter) error {
	line, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode dead letter %s: %w", d.Event.ID(), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kept = append(r.kept, d)
	if len(r.kept) > MaxKept+MaxKept/4 {
		r.kept = slices.Clone(r.kept[len(r.kept)-MaxKept:])
	}
	if r.file == nil {
		return nil
	}
	if _, err := r.file.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("append dead letter %s to %s: %w", d.Event.ID(), r.file.Name(), err)
	}
	return nil
}

// DeadLetters returns the dead letters kept in memory, oldest first.
func (r *Recorder) DeadLetters() []DeadLetter {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.kept), MaxKept)
	out := make([]DeadLetter, n)
	copy(out, r.kept[len(r.kept)-n:])
	return out
}

// Close closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.file == nil {
		return nil
	}
	err := r.file.Close()
	r.file = nil
	if err != nil {
		return fmt.Errorf("close dead-letter file: %w", err)
	}
	return nil
}

// ReadDeadLetters reads the dead letters a Recorder appended to the file at path.
func ReadDeadLetters(path string) ([]DeadLetter, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	defer f.Close()
	var out []DeadLetter
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*MaxEventBytes)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var d DeadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return nil, fmt.Errorf("read dead letters: %s line %d: %w", path, n, err)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dead letters: %s: %w", path, err)
	}
	return out, nil
}

// Replay ingests the events of letters again, without their error extensions, as if
// they had just been sent: they go to every Trigger that matches them, so a subscriber
// that did receive one gets it again (deliveries are at-least-once anyway). A replay
// that fails again is dead-lettered again.
func (b *Broker) Replay(ctx context.Context, letters ...DeadLetter) error {
	var errs []error
	for _, d := range letters {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("replay: %w", err))...)
		}
		e := d.Event.Clone()
		for _, ext := range []string{ExtErrorDest, ExtErrorCode, ExtErrorData, ExtTTL, ExtArrivalTime} {
			e.SetExtension(ext, nil)
		}
		if err := e.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("replay %s %s: invalid CloudEvent: %w", e.Type(), e.ID(), err))
			continue
		}
		if err := b.ingest(e, fromOutside); err != nil {
			errs = append(errs, fmt.Errorf("replay %s %s: %w", e.Type(), e.ID(), err))
		}
	}
	return errors.Join(errs...)
}
