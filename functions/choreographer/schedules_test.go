package choreographer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/frontdoor"
	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/access/accesstest"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
	"github.com/podguard/podguard/shared/schedule"
	"github.com/podguard/podguard/shared/stacktest"
)

// byType keeps the events of one type.
func byType(es []event.Event, typ string) []event.Event {
	var out []event.Event
	for _, e := range es {
		if e.Type() == typ {
			out = append(out, e)
		}
	}
	return out
}

// clock is a settable now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(s string) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func userEvent(t *testing.T, typ string, data any) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource("schedules-test")
	e.SetType(typ)
	if data != nil {
		if err := e.SetData(event.ApplicationJSON, data); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func ids(es []event.Event) map[string]bool {
	out := map[string]bool{}
	for _, e := range es {
		out[e.ID()] = true
	}
	return out
}

// TestSchedulesOnTheBank runs a calendar schedule and PingSource firings through the
// choreographer on a real Swift bank, with a settable clock.
func TestSchedulesOnTheBank(t *testing.T) {
	st := stacktest.Load(t)
	b, _ := st.TempBank(t, "keystone")
	ctx := context.Background()
	clk := &clock{}
	clk.set("2026-11-16T10:37:12Z")
	sink := &sent{}
	s := NewStep(b, b.Restores(), b.Deletions(), sink, Config{ProtectTimeout: time.Hour, ListTimeout: time.Minute,
		RestoreTimeout: time.Hour, DeleteTimeout: time.Hour, RedriveAfter: time.Minute}, clk.now)
	handle := func(e event.Event) *event.Event {
		t.Helper()
		reply, err := s.Handle(ctx, e)
		if err != nil {
			t.Fatalf("%s: %v", e.Type(), err)
		}
		return reply
	}
	tick := func() { handle(userEvent(t, events.Tick, nil)) }

	// A bad trigger is refused with the reason, and nothing is saved.
	_, err := s.Handle(ctx, userEvent(t, events.ScheduleSet, events.Schedule{ID: "bad", Plan: events.Plan{Scope: events.Scope{Namespaces: []string{"shop"}}},
		Trigger: events.Trigger{Pattern: "FREQ=MINUTELY"}}))
	if !function.IsPermanent(err) || !strings.Contains(err.Error(), "/trigger: occurrences") {
		t.Fatalf("a schedule firing every minute with a 15-minute window: %v", err)
	}

	// Hourly, on the hour, with Karbor's default window of 15 minutes.
	reply := handle(userEvent(t, events.ScheduleSet, events.Schedule{ID: "shop-hourly", Name: "shop every hour",
		Plan: events.Plan{Scope: events.Scope{Namespaces: []string{"shop"}}}, Trigger: events.Trigger{Pattern: "BEGIN:VEVENT\nRRULE:FREQ=HOURLY\nEND:VEVENT"}}))
	var saved events.ScheduleSavedResult
	if err := reply.DataAs(&saved); err != nil || reply.Type() != events.ScheduleSaved {
		t.Fatalf("reply %s: %v", reply.Type(), err)
	}
	if saved.Schedule.Plan.ID != "shop-hourly" || saved.Schedule.Trigger.Window != schedule.DefaultWindow || len(saved.Next) != nextShown ||
		!saved.Next[0].Equal(time.Date(2026, 11, 16, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("saved %+v", saved)
	}

	// Nothing is due before 11:00.
	tick()
	if got := byType(sink.take(), events.ProtectRequested); len(got) != 0 {
		t.Fatalf("protect before the first occurrence: %v", got)
	}

	// 11:00:30: the occurrence runs, once, however many ticks come.
	clk.set("2026-11-16T11:00:30Z")
	var wg sync.WaitGroup
	for range 3 { // racing ticks
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Handle(ctx, userEvent(t, events.Tick, nil)); err != nil {
				t.Errorf("tick: %v", err)
			}
		}()
	}
	wg.Wait()
	clk.set("2026-11-16T11:05:00Z")
	tick()
	protects := byType(sink.take(), events.ProtectRequested)
	if len(protects) == 0 || len(ids(protects)) != 1 {
		t.Fatalf("want one protect request (maybe sent more than once), got %d with %d ids", len(protects), len(ids(protects)))
	}
	var req events.ProtectRequest
	if err := protects[0].DataAs(&req); err != nil || req.Occurrence != "2026-11-16T11:00:00Z" || req.Plan.ID != "shop-hourly" {
		t.Fatalf("protect request %+v: %v", req, err)
	}
	// Every copy of the request makes the same checkpoint.
	for _, p := range protects {
		handle(p)
		handle(p)
	}
	cp := CheckpointID(req, protects[0])
	list, _, err := b.ListCheckpoints(ctx, "shop-hourly", 10, "")
	if err != nil || len(list) != 1 || list[0] != cp {
		t.Fatalf("checkpoints of the plan: %v (%v), want [%s]", list, err, cp)
	}
	if c, err := b.Checkpoint(ctx, cp); err != nil || !c.CreatedAt.Equal(time.Date(2026, 11, 16, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("checkpoint %+v: %v", c, err)
	}
	sink.take()

	// 14:20: the tick was away. 12:00 and 13:00 were missed; 14:00 is 20 minutes old,
	// more than the window: all skipped and reported, none run late.
	clk.set("2026-11-16T14:20:00Z")
	tick()
	tick()
	sentNow := sink.take()
	if got := byType(sentNow, events.ProtectRequested); len(got) != 0 {
		t.Fatalf("an occurrence out of its window was run late: %v", got)
	}
	skips := byType(sentNow, events.ScheduleSkipped)
	if len(skips) != 1 {
		t.Fatalf("want one skip report, got %d", len(skips))
	}
	var skipped events.ScheduleSkippedResult
	if err := skips[0].DataAs(&skipped); err != nil || len(skipped.Occurrences) != 3 || skipped.Schedule != "shop-hourly" ||
		!strings.Contains(skipped.Reason, "window (15m0s)") {
		t.Fatalf("skip report %+v: %v", skipped, err)
	}

	// The front door lists the schedule with what happened and what comes next.
	admin := access.Caller{Username: "admin"}
	ck, err := frontdoor.NewStep(b, checkpoint.BankRestores(b), frontdoor.Options{
		Authenticator: accesstest.Tokens{"t": admin}, Authorizer: accesstest.AllowAll(admin.Username)})
	if err != nil {
		t.Fatal(err)
	}
	hr := httptest.NewRequest(http.MethodPost, "/", nil)
	hr.Header.Set("Authorization", "Bearer t")
	actx, err := ck.Admit(ctx, hr)
	if err != nil {
		t.Fatal(err)
	}
	reply, err = ck.Handle(actx, userEvent(t, events.SchedulesList, map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Schedules []schedule.View `json:"schedules"`
	}
	if err := json.Unmarshal(reply.Data(), &listed); err != nil || len(listed.Schedules) != 1 {
		t.Fatalf("schedules listed %s: %v", reply.Data(), err)
	}
	v := listed.Schedules[0]
	if v.LastCheckpoint != cp || v.LastRun == nil || len(v.Skipped) != 3 || len(v.Next) != 3 || !v.Next[0].After(time.Date(2026, 11, 16, 14, 0, 0, 0, time.UTC)) {
		t.Fatalf("schedule view %+v", v)
	}

	// A PingSource firing that carries a plan: its deliveries within the minute make one
	// checkpoint, although each has its own random id; a firing without data is a tick.
	ping := func(at string) event.Event {
		e := userEvent(t, events.PingSourceTick, map[string]any{"plan": map[string]any{"scope": map[string]any{"namespaces": []string{"shop"}}}})
		e.SetSource("/apis/v1/namespaces/podguard/pingsources/shop-nightly")
		clk.set(at)
		return e
	}
	handle(ping("2026-11-17T02:00:00.3Z"))
	handle(ping("2026-11-17T02:00:16Z")) // the broker's last retry of the same firing
	plan := function.DerivedID("pingsource", "/apis/v1/namespaces/podguard/pingsources/shop-nightly")
	if list, _, err := b.ListCheckpoints(ctx, plan, 10, ""); err != nil || len(list) != 1 {
		t.Fatalf("checkpoints of the PingSource's plan: %v (%v)", list, err)
	}
	handle(ping("2026-11-18T02:00:00.2Z")) // the next night
	if list, _, err := b.ListCheckpoints(ctx, plan, 10, ""); err != nil || len(list) != 2 {
		t.Fatalf("checkpoints of the PingSource's plan after two nights: %v (%v)", list, err)
	}
	sink.take()
	// A PingSource firing without data is a tick: at 02:00 on the 18th, the hourly
	// schedule is due.
	handle(userEvent(t, events.PingSourceTick, nil))
	if got := byType(sink.take(), events.ProtectRequested); len(got) != 1 || !strings.Contains(string(got[0].Data()), "2026-11-18T02:00:00Z") {
		t.Fatalf("the tick of a PingSource without data: %v", got)
	}

	// Deleting the schedule stops it; its checkpoints stay.
	reply = handle(userEvent(t, events.ScheduleDelete, events.ScheduleRef{ID: "shop-hourly"}))
	var deleted events.ScheduleDeletedResult
	if err := reply.DataAs(&deleted); err != nil || !deleted.Found {
		t.Fatalf("deleted %+v: %v", deleted, err)
	}
	reply = handle(userEvent(t, events.ScheduleDelete, events.ScheduleRef{ID: "shop-hourly"}))
	if err := reply.DataAs(&deleted); err != nil || deleted.Found {
		t.Fatalf("deleted again %+v: %v", deleted, err)
	}
	clk.set("2026-11-18T03:00:10Z")
	tick()
	if got := byType(sink.take(), events.ProtectRequested); len(got) != 0 {
		t.Fatalf("a deleted schedule ran: %v", got)
	}
	if _, err := b.Checkpoint(ctx, cp); err != nil {
		t.Fatalf("the schedule's checkpoint: %v", err)
	}
	if ids, err := b.ListSchedules(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("schedules left: %v (%v)", ids, err)
	}
}
