// Package checkpoints is the checkpoints function: it answers what is in the bank
// without anyone reading Swift by hand. As events: CheckpointShow, CheckpointsList,
// RestoreShow, RestoresList and ProviderShow, each answered with a reply event. As plain
// HTTP reads:
//
//	GET /api/checkpoints?plan=<id>&limit=20&marker=<next>   newest first
//	GET /api/checkpoints/<id>
//	GET /api/restores?limit=20&marker=<next>                newest first
//	GET /api/restores/<id>                                  per-resource status and what each was restored into
//	GET /api/schedules                                      every schedule, its last and next occurrences
//	GET /api/provider
//	GET /api/deadletters?type=<type>&limit=20&marker=<next> dead letters, newest first (recorded by dead-letters)
//	GET /api/deadletters/<id>                               one dead letter: the whole event, the error, failures and replays
package checkpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/openstack"
	"github.com/podguard/podguard/shared/schedule"
)

// Accepts are the event types the checkpoints function handles.
var Accepts = []string{events.CheckpointShow, events.CheckpointsList, events.RestoreShow, events.RestoresList, events.ProviderShow, events.SchedulesList}

// Config is the checkpoints function's configuration from the environment.
type Config struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *Config) Validate() error { return c.Bank.Validate() }

// Step is the checkpoints function.
type Step struct {
	bank     checkpoint.Reader
	restores checkpoint.RestoreReader
	// schedules is nil when the reader keeps no schedules (test doubles).
	schedules schedule.Reader
	now       func() time.Time
	provider  json.RawMessage
	// deadLetters, when set, serves the dead letters over HTTP.
	deadLetters bank.DeadLetterReader
}

// New builds the function from its configuration.
func New(ctx context.Context, cfg *Config) (*Step, error) {
	b, err := bank.Open(ctx, cfg.Bank, cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	s, err := NewStep(b, checkpoint.BankRestores(b))
	if err != nil {
		return nil, err
	}
	s.deadLetters = b
	return s, nil
}

// NewStep builds the function on readers of checkpoints and of restores.
func NewStep(r checkpoint.Reader, restores checkpoint.RestoreReader) (*Step, error) {
	p, err := Provider()
	if err != nil {
		return nil, err
	}
	sched, _ := r.(schedule.Reader)
	return &Step{bank: r, restores: restores, schedules: sched, now: time.Now, provider: p}, nil
}

const defaultLimit = 20

// Handle answers show, list and provider requests.
func (s *Step) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.CheckpointShow:
		var req struct {
			Checkpoint string `json:"checkpoint"`
		}
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		v, err := checkpoint.LoadAt(ctx, s.bank, req.Checkpoint, s.now())
		if errors.Is(err, bank.ErrNotFound) {
			return function.Reply(events.CheckpointShown, map[string]any{"checkpoint": req.Checkpoint, "found": false})
		}
		if err != nil {
			return nil, err
		}
		return function.Reply(events.CheckpointShown, map[string]any{"checkpoint": req.Checkpoint, "found": true, "view": v})
	case events.CheckpointsList:
		var req struct {
			Plan   string `json:"plan"`
			Limit  int    `json:"limit"`
			Marker string `json:"marker"`
		}
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		if req.Limit == 0 {
			req.Limit = defaultLimit
		}
		list, next, err := checkpoint.List(ctx, s.bank, req.Plan, req.Limit, req.Marker)
		if err != nil {
			return nil, err
		}
		return function.Reply(events.CheckpointsListed, map[string]any{"checkpoints": list, "next": next})
	case events.RestoreShow:
		var req struct {
			Restore string `json:"restore"`
		}
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		v, err := checkpoint.LoadRestoreAt(ctx, s.restores, req.Restore, s.now())
		if errors.Is(err, bank.ErrNotFound) {
			return function.Reply(events.RestoreShown, map[string]any{"restore": req.Restore, "found": false})
		}
		if err != nil {
			return nil, err
		}
		return function.Reply(events.RestoreShown, map[string]any{"restore": req.Restore, "found": true, "view": v})
	case events.RestoresList:
		var req struct {
			Limit  int    `json:"limit"`
			Marker string `json:"marker"`
		}
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		if req.Limit == 0 {
			req.Limit = defaultLimit
		}
		list, next, err := checkpoint.ListRestores(ctx, s.restores, req.Limit, req.Marker)
		if err != nil {
			return nil, err
		}
		return function.Reply(events.RestoresListed, map[string]any{"restores": list, "next": next})
	case events.ProviderShow:
		return function.Reply(events.ProviderShown, s.provider)
	case events.SchedulesList:
		list, err := s.listSchedules(ctx)
		if err != nil {
			return nil, err
		}
		return function.Reply(events.SchedulesListed, map[string]any{"schedules": list})
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not handled by checkpoints", e.Type()))
}

// ReadAPI serves the same answers over plain HTTP GET.
func (s *Step) ReadAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/provider", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.provider) })
	mux.HandleFunc("GET /api/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, ok := limitOf(w, q.Get("limit"))
		if !ok {
			return
		}
		list, next, err := checkpoint.List(r.Context(), s.bank, q.Get("plan"), limit, q.Get("marker"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"checkpoints": list, "next": next})
	})
	mux.HandleFunc("GET /api/checkpoints/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !validID(id) {
			http.Error(w, "bad checkpoint id", http.StatusBadRequest)
			return
		}
		v, err := checkpoint.LoadAt(r.Context(), s.bank, id, s.now())
		if errors.Is(err, bank.ErrNotFound) {
			http.Error(w, fmt.Sprintf("checkpoint %s not found", id), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /api/restores", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, ok := limitOf(w, q.Get("limit"))
		if !ok {
			return
		}
		list, next, err := checkpoint.ListRestores(r.Context(), s.restores, limit, q.Get("marker"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"restores": list, "next": next})
	})
	mux.HandleFunc("GET /api/schedules", func(w http.ResponseWriter, r *http.Request) {
		list, err := s.listSchedules(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"schedules": list})
	})
	mux.HandleFunc("GET /api/restores/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !validID(id) {
			http.Error(w, "bad restore id", http.StatusBadRequest)
			return
		}
		v, err := checkpoint.LoadRestoreAt(r.Context(), s.restores, id, s.now())
		if errors.Is(err, bank.ErrNotFound) {
			http.Error(w, fmt.Sprintf("restore %s not found", id), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /api/deadletters", func(w http.ResponseWriter, r *http.Request) {
		if s.deadLetters == nil {
			http.Error(w, "dead letters are not served here", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		limit, ok := limitOf(w, q.Get("limit"))
		if !ok {
			return
		}
		list, next, err := bank.ListDeadLetterSummaries(r.Context(), s.deadLetters, q.Get("type"), limit, q.Get("marker"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, events.DeadLettersListedResult{DeadLetters: list, Next: next})
	})
	mux.HandleFunc("GET /api/deadletters/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if s.deadLetters == nil {
			http.Error(w, "dead letters are not served here", http.StatusNotFound)
			return
		}
		if !validID(id) {
			http.Error(w, "bad dead letter id", http.StatusBadRequest)
			return
		}
		d, err := s.deadLetters.DeadLetter(r.Context(), id)
		if errors.Is(err, bank.ErrNotFound) {
			http.Error(w, fmt.Sprintf("dead letter %s not found", id), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	return mux
}

func (s *Step) listSchedules(ctx context.Context) ([]schedule.View, error) {
	if s.schedules == nil {
		return []schedule.View{}, nil
	}
	return schedule.List(ctx, s.schedules, s.now())
}

// limitOf reads a page size, defaultLimit when empty; it answers 400 when it is bad.
func limitOf(w http.ResponseWriter, l string) (int, bool) {
	if l == "" {
		return defaultLimit, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 1000 {
		http.Error(w, "limit: want 1..1000", http.StatusBadRequest)
		return 0, false
	}
	return n, true
}

// validID reports whether an id taken from a path can name a bank object.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/?#")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
