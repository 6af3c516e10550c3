package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/schedule"
)

// The reads the front door answers itself, as events and as plain HTTP GETs:
//
//	GET /api/checkpoints?plan=<id>&limit=20&marker=<next>   newest first
//	GET /api/checkpoints/<id>
//	GET /api/restores?limit=20&marker=<next>                newest first
//	GET /api/restores/<id>                                  per-resource status and what each was restored into
//	GET /api/schedules                                      every schedule, its last and next occurrences
//	GET /api/provider
//	GET /api/deadletters?type=<type>&limit=20&marker=<next> dead letters, newest first (recorded by dead-letters)
//	GET /api/deadletters/<id>                               one dead letter: the whole event, the error, failures and replays
//
// A page of a list holds what the caller may see of the page read from the bank: it
// may be shorter than the limit, and next still leads on.
var readTypes = []string{events.CheckpointShow, events.CheckpointsList, events.RestoreShow, events.RestoresList,
	events.ProviderShow, events.SchedulesList, events.DeadLettersList}

const defaultLimit = 20

// errNotFound is what a read of something the bank does not hold returns.
var errNotFound = errors.New("not found")

// answer answers a read request as a reply event.
func (s *Step) answer(ctx context.Context, c access.Caller, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.CheckpointShow:
		var req struct {
			Checkpoint string `json:"checkpoint"`
		}
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		v, err := s.showCheckpoint(ctx, c, req.Checkpoint)
		if errors.Is(err, errNotFound) {
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
		list, next, err := s.listCheckpoints(ctx, c, req.Plan, req.Limit, req.Marker)
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
		v, err := s.showRestore(ctx, c, req.Restore)
		if errors.Is(err, errNotFound) {
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
		list, next, err := s.listRestores(ctx, c, req.Limit, req.Marker)
		if err != nil {
			return nil, err
		}
		return function.Reply(events.RestoresListed, map[string]any{"restores": list, "next": next})
	case events.ProviderShow:
		if err := s.require(ctx, c, rights("get", resProviders, nil)); err != nil {
			return nil, err
		}
		return function.Reply(events.ProviderShown, json.RawMessage(s.provider))
	case events.SchedulesList:
		list, err := s.listSchedules(ctx, c)
		if err != nil {
			return nil, err
		}
		return function.Reply(events.SchedulesListed, map[string]any{"schedules": list})
	case events.DeadLettersList:
		var req events.DeadLettersListRequest
		if err := function.Decode(e, &req); err != nil {
			return nil, err
		}
		res, err := s.listDeadLetters(ctx, c, req.Type, req.Limit, req.Marker)
		if errors.Is(err, errNotFound) {
			return nil, function.Permanent(err)
		}
		if err != nil {
			return nil, err
		}
		return function.Reply(events.DeadLettersListed, res)
	}
	return nil, function.Permanent(fmt.Errorf("event type %q is not a read", e.Type()))
}

func (s *Step) showCheckpoint(ctx context.Context, c access.Caller, id string) (*checkpoint.View, error) {
	cp, err := s.bank.Checkpoint(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	if err := s.require(ctx, c, rights("get", resCheckpoints, namespacesOf(cp.Scope))); err != nil {
		return nil, err
	}
	v, err := checkpoint.LoadAt(ctx, s.bank, id, s.now())
	if errors.Is(err, bank.ErrNotFound) {
		return nil, errNotFound
	}
	return v, err
}

func (s *Step) listCheckpoints(ctx context.Context, c access.Caller, plan string, limit int, marker string) ([]checkpoint.Summary, string, error) {
	if limit == 0 {
		limit = defaultLimit
	}
	list, next, err := checkpoint.List(ctx, s.bank, plan, limit, marker)
	if err != nil {
		return nil, "", err
	}
	out := list[:0]
	for _, cp := range list {
		ok, err := s.may(ctx, c, rights("list", resCheckpoints, namespacesOf(cp.Scope)))
		if err != nil {
			return nil, "", err
		}
		if ok {
			out = append(out, cp)
		}
	}
	return out, next, nil
}

// restoreNamespaces are the namespaces a restore lands in: its target, or its
// checkpoint's namespaces when it restores in place (nil: cluster-wide, also when the
// checkpoint is gone).
func (s *Step) restoreNamespaces(ctx context.Context, target, checkpointID string, scopes map[string][]string) ([]string, error) {
	if target != "" {
		return []string{target}, nil
	}
	if ns, ok := scopes[checkpointID]; ok {
		return ns, nil
	}
	cp, err := s.restores.Checkpoint(ctx, checkpointID)
	var ns []string
	switch {
	case errors.Is(err, bank.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		ns = namespacesOf(cp.Scope)
	}
	if scopes != nil {
		scopes[checkpointID] = ns
	}
	return ns, nil
}

func (s *Step) showRestore(ctx context.Context, c access.Caller, id string) (*checkpoint.RestoreView, error) {
	r, err := s.restores.Restore(ctx, id)
	if errors.Is(err, bank.ErrNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	ns, err := s.restoreNamespaces(ctx, r.Parameters.Namespace, r.Checkpoint, nil)
	if err != nil {
		return nil, err
	}
	if err := s.require(ctx, c, rights("get", resRestores, ns)); err != nil {
		return nil, err
	}
	v, err := checkpoint.LoadRestoreAt(ctx, s.restores, id, s.now())
	if errors.Is(err, bank.ErrNotFound) {
		return nil, errNotFound
	}
	return v, err
}

func (s *Step) listRestores(ctx context.Context, c access.Caller, limit int, marker string) ([]checkpoint.RestoreSummary, string, error) {
	if limit == 0 {
		limit = defaultLimit
	}
	list, next, err := checkpoint.ListRestores(ctx, s.restores, limit, marker)
	if err != nil {
		return nil, "", err
	}
	scopes := map[string][]string{}
	out := list[:0]
	for _, r := range list {
		ns, err := s.restoreNamespaces(ctx, r.Namespace, r.Checkpoint, scopes)
		if err != nil {
			return nil, "", err
		}
		ok, err := s.may(ctx, c, rights("list", resRestores, ns))
		if err != nil {
			return nil, "", err
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, next, nil
}

func (s *Step) listSchedules(ctx context.Context, c access.Caller) ([]schedule.View, error) {
	if s.schedules == nil {
		return []schedule.View{}, nil
	}
	list, err := schedule.List(ctx, s.schedules, s.now())
	if err != nil {
		return nil, err
	}
	out := list[:0]
	for _, v := range list {
		ok, err := s.may(ctx, c, rights("list", resSchedules, namespacesOf(v.Plan.Scope)))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}

func (s *Step) listDeadLetters(ctx context.Context, c access.Caller, typ string, limit int, marker string) (events.DeadLettersListedResult, error) {
	if err := s.require(ctx, c, rights("list", resDeadLetters, nil)); err != nil {
		return events.DeadLettersListedResult{}, err
	}
	if s.deadLetters == nil {
		return events.DeadLettersListedResult{}, fmt.Errorf("dead letters are not served here: %w", errNotFound)
	}
	if limit == 0 {
		limit = defaultLimit
	}
	list, next, err := bank.ListDeadLetterSummaries(ctx, s.deadLetters, typ, limit, marker)
	if err != nil {
		return events.DeadLettersListedResult{}, err
	}
	return events.DeadLettersListedResult{DeadLetters: list, Next: next}, nil
}

// ReadAPI serves the same reads over plain HTTP GET, with the same bearer token and
// rights as the events.
func (s *Step) ReadAPI() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, read func(ctx context.Context, c access.Caller, r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			ctx, err := s.Admit(r.Context(), r)
			if err != nil {
				function.WriteError(w, err)
				return
			}
			c, err := callerOf(ctx)
			if err != nil {
				function.WriteError(w, err)
				return
			}
			v, err := read(ctx, c, r)
			switch {
			case errors.Is(err, errNotFound):
				http.Error(w, "not found", http.StatusNotFound)
			case err != nil && function.StatusOf(err) == http.StatusInternalServerError:
				http.Error(w, err.Error(), http.StatusBadGateway)
			case err != nil:
				function.WriteError(w, err)
			default:
				writeJSON(w, http.StatusOK, v)
			}
		})
	}
	handle("GET /api/provider", func(ctx context.Context, c access.Caller, _ *http.Request) (any, error) {
		if err := s.require(ctx, c, rights("get", resProviders, nil)); err != nil {
			return nil, err
		}
		return json.RawMessage(s.provider), nil
	})
	handle("GET /api/checkpoints", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		q := r.URL.Query()
		limit, err := limitOf(q.Get("limit"))
		if err != nil {
			return nil, err
		}
		list, next, err := s.listCheckpoints(ctx, c, q.Get("plan"), limit, q.Get("marker"))
		if err != nil {
			return nil, err
		}
		return map[string]any{"checkpoints": list, "next": next}, nil
	})
	handle("GET /api/checkpoints/{id}", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		id, err := idOf(r, "checkpoint")
		if err != nil {
			return nil, err
		}
		return s.showCheckpoint(ctx, c, id)
	})
	handle("GET /api/restores", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		q := r.URL.Query()
		limit, err := limitOf(q.Get("limit"))
		if err != nil {
			return nil, err
		}
		list, next, err := s.listRestores(ctx, c, limit, q.Get("marker"))
		if err != nil {
			return nil, err
		}
		return map[string]any{"restores": list, "next": next}, nil
	})
	handle("GET /api/restores/{id}", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		id, err := idOf(r, "restore")
		if err != nil {
			return nil, err
		}
		return s.showRestore(ctx, c, id)
	})
	handle("GET /api/schedules", func(ctx context.Context, c access.Caller, _ *http.Request) (any, error) {
		list, err := s.listSchedules(ctx, c)
		if err != nil {
			return nil, err
		}
		return map[string]any{"schedules": list}, nil
	})
	handle("GET /api/deadletters", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		q := r.URL.Query()
		limit, err := limitOf(q.Get("limit"))
		if err != nil {
			return nil, err
		}
		return s.listDeadLetters(ctx, c, q.Get("type"), limit, q.Get("marker"))
	})
	handle("GET /api/deadletters/{id}", func(ctx context.Context, c access.Caller, r *http.Request) (any, error) {
		id, err := idOf(r, "dead letter")
		if err != nil {
			return nil, err
		}
		if err := s.require(ctx, c, rights("get", resDeadLetters, nil)); err != nil {
			return nil, err
		}
		if s.deadLetters == nil {
			return nil, errNotFound
		}
		d, err := s.deadLetters.DeadLetter(ctx, id)
		if errors.Is(err, bank.ErrNotFound) {
			return nil, errNotFound
		}
		return d, err
	})
	return mux
}

// limitOf reads a page size, defaultLimit when empty.
func limitOf(l string) (int, error) {
	if l == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > 1000 {
		return 0, function.Permanent(errors.New("limit: want 1..1000"))
	}
	return n, nil
}

// idOf is the id in a path, when it can name a bank object.
func idOf(r *http.Request, what string) (string, error) {
	id := r.PathValue("id")
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/?#") {
		return "", function.Permanent(fmt.Errorf("bad %s id", what))
	}
	return id, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
