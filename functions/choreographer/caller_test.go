package choreographer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap/zaptest"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/function"
)

// askedBy is e as the front door forwards it for caller.
func askedBy(e event.Event, caller string) event.Event {
	e.SetExtension(events.ExtCaller, caller)
	return e
}

// The caller a request names is recorded on the operation it starts, and said by the
// operation's view, its summary in lists and the event announcing its end.
func TestTheCallerIsRecordedAndSaid(t *testing.T) {
	const (
		ci    = "system:serviceaccount:team-a:ci"
		alice = "oidc:alice@example.com"
		ops   = "system:serviceaccount:team-b:ops"
	)
	w := newWorld(t)
	ctx := context.Background()
	g, pod, vol := onePodOneVolume()

	// Protect.
	req := events.ProtectRequest{Plan: events.Plan{ID: "plan", Scope: events.Scope{Namespaces: []string{"shop"}}}}
	e := askedBy(w.event(events.ProtectRequested, "", req), ci)
	w.handle(e)
	only(t, w.out.take(), events.PodsList)
	id := CheckpointID(req, e)
	// The index is written once: a redelivery that says otherwise changes nothing.
	w.handle(askedBy(e.Clone(), "someone-else"))
	w.out.take()
	w.listed(id, g)
	w.result(events.MetadataSnapshotted, id, "pods-0000", events.StatusAvailable, pod.Key())
	fin := decode[events.CheckpointFinishedResult](t, only(t, w.result(events.VolumeBackedUp, id, "volumes-0000", events.StatusAvailable, vol.Key()), events.CheckpointFinished))
	if fin.Status != events.StatusAvailable || fin.RequestedBy != ci {
		t.Fatalf("checkpoint.finished %+v, want requested_by %s", fin, ci)
	}
	v, err := checkpoint.Load(ctx, w.bank, id)
	if err != nil || v.RequestedBy != ci {
		t.Fatalf("view requested_by %q (%v), want %s", v.RequestedBy, err, ci)
	}
	list, _, err := checkpoint.List(ctx, w.bank, "plan", 10, "")
	if err != nil || len(list) != 1 || list[0].RequestedBy != ci || !slices.Equal(list[0].Scope.Namespaces, []string{"shop"}) {
		t.Fatalf("checkpoints listed %+v (%v)", list, err)
	}

	// Restore.
	re := askedBy(w.event(events.RestoreRequested, "", events.RestoreRequest{Checkpoint: id, Parameters: events.RestoreParameters{Namespace: "shop-dr"}}), alice)
	w.handle(re)
	rid := RestoreID(re)
	only(t, w.out.take(), events.VolumeRestore)
	w.volumeRestored(rid, vol, "new-1")
	only(t, w.result(events.VolumeRestored, rid, "volumes-0000", events.StatusAvailable, vol.Key()), events.PodRecreate)
	rfin := decode[events.RestoreFinishedResult](t, only(t, w.result(events.PodRecreated, rid, "pods-0000", events.StatusAvailable, pod.Key()), events.RestoreFinished))
	if rfin.Status != events.RestoreSuccess || rfin.RequestedBy != alice {
		t.Fatalf("restore.finished %+v, want requested_by %s", rfin, alice)
	}
	restores := checkpoint.BankRestores(w.bank)
	rv, err := checkpoint.LoadRestore(ctx, restores, rid)
	if err != nil || rv.RequestedBy != alice {
		t.Fatalf("restore view requested_by %q (%v), want %s", rv.RequestedBy, err, alice)
	}
	rl, _, err := checkpoint.ListRestores(ctx, restores, 10, "")
	want := checkpoint.RestoreSummary{ID: rid, Checkpoint: id, Status: events.RestoreSuccess, Namespace: "shop-dr", RequestedBy: alice}
	if err != nil || len(rl) != 1 {
		t.Fatalf("restores listed %+v (%v)", rl, err)
	}
	if want.CreatedAt = rl[0].CreatedAt; rl[0] != want {
		t.Fatalf("restore listed %+v, want %+v", rl[0], want)
	}

	// Delete.
	w.handle(askedBy(w.event(events.DeleteRequested, "", events.DeleteRequest{Checkpoint: id}), ops))
	only(t, w.out.take(), events.BackupDelete)
	if d, err := w.bank.Deletion(ctx, id); err != nil || d.RequestedBy != ops {
		t.Fatalf("deletion %+v (%v), want requested_by %s", d, err, ops)
	}
	del := decode[events.CheckpointDeletedResult](t, only(t, w.result(events.BackupDeleted, id, "volumes-0000", events.StatusDeleted, vol.Key()), events.CheckpointDeleted))
	if del.Status != events.StatusDeleted || del.RequestedBy != ops {
		t.Fatalf("checkpoint.deleted %+v, want requested_by %s", del, ops)
	}
	// A request once the checkpoint is gone announces the deletion as it was.
	w.handle(askedBy(w.event(events.DeleteRequested, "", events.DeleteRequest{Checkpoint: id}), ops))
	if again := decode[events.CheckpointDeletedResult](t, only(t, w.out.take(), events.CheckpointDeleted)); again.RequestedBy != ops {
		t.Fatalf("checkpoint.deleted again %+v", again)
	}
}

// The requests the choreographer makes itself name no caller: the operations they start
// record its reason. A request from elsewhere that claims to be one (same data, no
// caller) records none.
func TestOwnRequestsRecordTheirReason(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	requestedBy := func(id string) string {
		t.Helper()
		cp, err := w.bank.Checkpoint(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return cp.RequestedBy
	}

	// The occurrence of a schedule, which the tick requests.
	plan := events.Plan{ID: "shop", Scope: events.Scope{Namespaces: []string{"shop"}}, Retention: &events.Retention{MaxBackups: 1}}
	w.handle(w.event(events.ScheduleSet, "", events.Schedule{ID: "shop-hourly", Plan: plan, Trigger: events.Trigger{Pattern: "FREQ=HOURLY"}}))
	w.out.take()
	w.advance(time.Hour + time.Minute)
	scheduled := only(t, w.tick(), events.ProtectRequested)
	w.handle(scheduled)
	w.out.take()
	req := decode[events.ProtectRequest](t, scheduled)
	if by := requestedBy(CheckpointID(req, scheduled)); by != "schedule shop-hourly" {
		t.Fatalf("scheduled protect requested_by %q", by)
	}
	forged := req
	forged.Occurrence = "2026-03-01T14:00:00Z"
	fe := w.event(events.ProtectRequested, "", forged)
	w.handle(fe)
	w.out.take()
	if by := requestedBy(CheckpointID(forged, fe)); by != "" {
		t.Fatalf("a protect from outside the choreographer with an occurrence records %q", by)
	}

	// A PingSource firing that carries a plan.
	const source = "/apis/v1/namespaces/podguard/pingsources/shop-nightly"
	ping := w.event(events.PingSourceTick, "", map[string]any{"plan": map[string]any{"id": "nightly", "scope": map[string]any{"namespaces": []string{"shop"}}}})
	ping.SetSource(source)
	w.handle(ping)
	w.out.take()
	if ids := w.planIDs("nightly"); len(ids) != 1 || requestedBy(ids[0]) != "pingsource "+source {
		t.Fatalf("checkpoints of the PingSource %v", ids)
	}
	// A team's PingSource, through the front door, which names its OIDC identity.
	const team = "system:serviceaccount:shop:shop-weekly-oidc-sources.knative.dev-pingsource"
	teamPing := w.event(events.PingSourceTick, "", map[string]any{"plan": map[string]any{"id": "weekly", "scope": map[string]any{"namespaces": []string{"shop"}}}})
	teamPing.SetSource("/apis/v1/namespaces/shop/pingsources/shop-weekly")
	teamPing.SetExtension(events.ExtCaller, team)
	w.handle(teamPing)
	w.out.take()
	if ids := w.planIDs("weekly"); len(ids) != 1 || requestedBy(ids[0]) != team {
		t.Fatalf("checkpoints of the team's PingSource %v", ids)
	}

	// A deletion retention requests: the plan keeps one available checkpoint.
	first, _, _, _ := w.protected(plan, events.StatusAvailable)
	_, _, vol, sent := w.protected(plan, events.StatusAvailable)
	deletes := byType(sent, events.DeleteRequested)
	if got := deletionsOf(t, deletes); !slices.Equal(got, []string{first}) {
		t.Fatalf("retention deletes %v, want [%s]", got, first)
	}
	w.handle(deletes[0])
	w.out.take()
	if d, err := w.bank.Deletion(ctx, first); err != nil || d.RequestedBy != "retention of plan shop" {
		t.Fatalf("deletion %+v (%v)", d, err)
	}
	del := decode[events.CheckpointDeletedResult](t, only(t, w.result(events.BackupDeleted, first, "volumes-0000", events.StatusDeleted, vol.Key()), events.CheckpointDeleted))
	if del.RequestedBy != "retention of plan shop" {
		t.Fatalf("checkpoint.deleted %+v", del)
	}
}

// A caller that is no reasonable name is refused (400) with the reason, and nothing is
// created: no checkpoint, no restore, no deletion.
func TestAMalformedCallerIsRefused(t *testing.T) {
	w := newWorld(t)
	target, _, _ := w.available()
	ctx := logging.WithLogger(context.Background(), zaptest.NewLogger(t).Sugar())
	for _, c := range []struct {
		name   string
		caller any
		reason string
	}{
		{"empty", "", "is empty"},
		{"too long", strings.Repeat("a", events.MaxCallerLength+1), "513 bytes long, more than 512"},
		{"a line break", "alice\nbob", "unprintable character U+000A"},
		{"a NUL", "alice\x00", "unprintable character U+0000"},
		{"not UTF-8", "alice\xff", "is not UTF-8"},
		{"not a string", 7, "want a string, not int32"},
	} {
		t.Run(c.name, func(t *testing.T) {
			refused := func(e event.Event) {
				t.Helper()
				e.SetExtension(events.ExtCaller, c.caller)
				_, err := w.step.Handle(ctx, e)
				if !function.IsPermanent(err) || !strings.Contains(err.Error(), "extension "+events.ExtCaller) || !strings.Contains(err.Error(), c.reason) {
					t.Fatalf("%s: %v, want a permanent error saying %q", e.Type(), err, c.reason)
				}
				if out := w.out.take(); len(out) != 0 {
					t.Fatalf("%s refused sent %v", e.Type(), types(out))
				}
			}
			req := events.ProtectRequest{Plan: events.Plan{ID: "refused", Scope: events.Scope{Namespaces: []string{"shop"}}}}
			pe := w.event(events.ProtectRequested, "", req)
			refused(pe)
			if _, err := w.bank.Checkpoint(ctx, CheckpointID(req, pe)); !errors.Is(err, bank.ErrNotFound) {
				t.Fatalf("checkpoint of a refused protect: %v", err)
			}
			if ids := w.planIDs("refused"); len(ids) != 0 {
				t.Fatalf("checkpoints of a refused protect %v", ids)
			}
			re := w.event(events.RestoreRequested, "", events.RestoreRequest{Checkpoint: target})
			refused(re)
			if _, err := w.bank.Restore(ctx, RestoreID(re)); !errors.Is(err, bank.ErrNotFound) {
				t.Fatalf("restore of a refused request: %v", err)
			}
			refused(w.event(events.DeleteRequested, "", events.DeleteRequest{Checkpoint: target}))
			if _, err := w.bank.Deletion(ctx, target); !errors.Is(err, bank.ErrNotFound) {
				t.Fatalf("deletion of a refused request: %v", err)
			}
			w.status(target, events.StatusAvailable)
		})
	}
}
