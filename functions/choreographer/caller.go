package choreographer

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/function"
)

// Who asked. The front door authenticates the requests it forwards into the broker and
// names their caller in the podguardcaller extension (events.ExtCaller), a Kubernetes user
// name such as system:serviceaccount:team-a:ci. The choreographer records it on the
// operation a request starts, as requested_by of the checkpoint of a protect, of the
// restore and of the deletion; the views and the checkpoint.finished, restore.finished
// and checkpoint.deleted events say it. It is a record for people to read and for the
// front door to narrow lists by, and it grants nothing: the front door authorizes every
// request before it enters the broker, where only podguard's own identities speak. A
// value that is no reasonable name (empty, longer than events.MaxCallerLength, not
// printable) is refused (400) before anything is done.
//
// The requests the choreographer makes itself carry no caller: for those it records its
// own reason, and recognizes them by their source (the choreographer's) and by the id it
// gave them, never by what their data says:
//
//	schedule <id>           the protect of an occurrence of schedule <id>, which the tick
//	                        requested ("schedule of plan <id>" when the schedule is no
//	                        longer found among the plan's)
//	pingsource <source>     the protect of a PingSource firing that carries a plan and
//	                        names no caller (a team's PingSource sends through the front
//	                        door, which names its OIDC identity as the caller)
//	retention of plan <id>  a deletion the plan's retention requested
//
// A request with no caller that is none of these (one sent into the broker by hand)
// records none: requested_by is absent.

// ownSource is the source of the events the choreographer emits.
const ownSource = events.Source + events.FnChoreographer

// occurrenceID is the id of the protect request the tick sends for an occurrence of a
// schedule.
func occurrenceID(schedule, occurrence string) string {
	return function.DerivedID("schedule", schedule, occurrence)
}

// retentionID is the id of the delete request retention sends for a checkpoint.
func retentionID(checkpoint string) string { return function.DerivedID("retention", checkpoint) }

// callerOf is the caller a request names in its ExtCaller extension, "" when it names
// none. A value that is not a reasonable name is refused.
func callerOf(e event.Event) (string, error) {
	v, ok := e.Extensions()[events.ExtCaller]
	if !ok {
		return "", nil
	}
	caller, ok := v.(string)
	if !ok {
		return "", function.Permanent(fmt.Errorf("extension %s: want a string, not %T", events.ExtCaller, v))
	}
	if err := events.CheckCaller(caller); err != nil {
		return "", function.Permanent(fmt.Errorf("extension %s %w", events.ExtCaller, err))
	}
	return caller, nil
}

// scheduledBy is who asked for a protect request that names no caller: the schedule of
// the plan whose occurrence the tick requested, found by the request's id; "" for a
// request the tick did not send.
func (s *Step) scheduledBy(ctx context.Context, e event.Event, req events.ProtectRequest) (string, error) {
	if e.Source() != ownSource || req.Occurrence == "" || req.Plan.ID == "" {
		return "", nil
	}
	if s.plans != nil {
		ids, err := s.plans.PlanSchedules(ctx, req.Plan.ID)
		if err != nil {
			return "", fmt.Errorf("schedules of plan %s: %w", req.Plan.ID, err)
		}
		for _, id := range ids {
			if occurrenceID(id, req.Occurrence) == e.ID() {
				return "schedule " + id, nil
			}
		}
	}
	// Deleted since the tick ran it: only the tick sends protect requests of
	// occurrences.
	return "schedule of plan " + req.Plan.ID, nil
}

// pingedBy is who asked for the protect of a PingSource firing: the PingSource, named by
// its source.
func pingedBy(e event.Event) string {
	by := "pingsource " + e.Source()
	if events.CheckCaller(by) != nil {
		return "pingsource"
	}
	return by
}

// deletedBy is who asked for a delete request that names no caller: the retention of
// the checkpoint's plan when retention sent it, else "".
func deletedBy(e event.Event, cp *bank.Checkpoint) string {
	if e.Source() == ownSource && e.ID() == retentionID(cp.ID) && cp.Plan.ID != "" {
		return "retention of plan " + cp.Plan.ID
	}
	return ""
}
