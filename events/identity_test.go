package events

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestTriggerName(t *testing.T) {
	for _, c := range []struct{ fn, typ, want string }{
		{FnChoreographer, PingSourceTick, "choreographer-ping"},
		{FnBackupVolume, VolumeBackup, "back-up-volume-volume-backup"},
		{FnChoreographer, MetadataSnapshotted, "choreographer-metadata-snapshotted"},
		{FnDeadLetters, DeadLetterReplay, "dead-letters-deadletter-replay"},
	} {
		if got := TriggerName(c.fn, c.typ); got != c.want {
			t.Errorf("TriggerName(%s, %s) = %q, want %q", c.fn, c.typ, got, c.want)
		}
	}
	seen := map[string]bool{}
	for _, r := range Routes() {
		if r.Trigger != TriggerName(r.Function, r.Type) {
			t.Errorf("route %+v: its Trigger is not TriggerName", r)
		}
		if seen[r.Trigger] {
			t.Errorf("two routes are Trigger %s", r.Trigger)
		}
		seen[r.Trigger] = true
		if r.Function == FnFrontDoor || r.Function == User {
			t.Errorf("route %+v: the front door and people have no Triggers", r)
		}
	}
	if !seen["choreographer-ping"] || !seen["back-up-volume-volume-backup"] {
		t.Errorf("routes %v lack known Triggers", seen)
	}
}

// The OIDC service accounts are those Knative makes, as kmeta.ChildName and
// auth.GetOIDCServiceAccountNameForResource name them (values computed with Knative's
// code): with the Kind capitalized in the suffix, which the hash of long names covers.
func TestOIDCServiceAccountsAreKnatives(t *testing.T) {
	for _, c := range []struct{ name, trigger, pingSource string }{
		{"choreographer-ping", "choreographer-ping-oidc-eventing.knative.dev-trigger", "choreographer-ping-oidc-sources.knative.dev-pingsource"},
		{"back-up-volume-volume-backup", "back-up-volume-volume-backup-oidc-eventing.knative.dev-trigger", "back-up-volume-volume-backup4342f294adc385a098ce75184b66d916-oi"},
		{"choreographer-metadata-snapshotted", "choreographer-metadata-snapshot77f288c61c578ecf2c22f4fb3ecc412a", "choreographer-metadata-snapshot402d8c2910772bf378e0428c6de1e55f"},
		{"choreographer-volume-backedup", "choreographer-volume-backedup-oidc-eventing.knative.dev-trigger", "choreographer-volume-backedupb055586a0b8a4fff5e77bf9bda3f4206-o"},
		{"dead-letters-deadletter-replay", "dead-letters-deadletter-replay98b6d729f3a48b264d4f911f82a84ebe", "dead-letters-deadletter-replayabcba470738cee462e314446f65fe5ec"},
		{"podguard-tick", "podguard-tick-oidc-eventing.knative.dev-trigger", "podguard-tick-oidc-sources.knative.dev-pingsource"},
	} {
		if got := TriggerServiceAccount(c.name); got != c.trigger {
			t.Errorf("TriggerServiceAccount(%s) = %q, want %q", c.name, got, c.trigger)
		}
		if got := PingSourceServiceAccount(c.name); got != c.pingSource {
			t.Errorf("PingSourceServiceAccount(%s) = %q, want %q", c.name, got, c.pingSource)
		}
	}
}

// childName gives kmeta.ChildName's names in each of its cases (values computed with
// knative.dev/pkg/kmeta).
func TestChildName(t *testing.T) {
	long := "-" + strings.Repeat("a", 26) + "-" + strings.Repeat("b", 40)
	for _, c := range []struct{ parent, suffix, want string }{
		{"short", "-a-suffix-that-is-itself-much-longer-than-31-characters-x", "short-a-suffix-that-is-itself-much-longer-than-31-characters-x"},
		{"p", "-a-suffix-of-exactly-62-characters-to-fill-the-name-up-to-63ch", "p-a-suffix-of-exactly-62-characters-to-fill-the-name-up-to-63ch"},
		{"a-parent-name-long-enough-to-need-cutting-with-a-short-suffix", "-deployment", "a-parent-name-long-e36c2dc6e3d34d7b8132e1b98b57576c9-deployment"},
		{"abc", long, "abc8aed4779b3079d8ab60d7e45dc062072-aaaaaaaaaaaaaaaaaaaaaaaaaa"}, // padded, the dash it ends with cut
		{"a-parent-name-that-is-longer-than-thirty-one-characters-by-far", long, "a-parent-name-that-is-longer-th9db1c2c9f2ac14ba2fb7504cdc0c1d66"},
	} {
		if got := childName(c.parent, c.suffix); got != c.want {
			t.Errorf("childName(%q, %q) = %q, want %q", c.parent, c.suffix, got, c.want)
		}
	}
}

// Every identity is a name Kubernetes takes for a service account (a DNS subdomain: Knative's
// names have dots, so not a DNS label), of 63 characters at most as Knative cuts them, and
// no two parts share one.
func TestServiceAccountNames(t *testing.T) {
	names := map[string]string{PingSourceServiceAccount(TickSource): "the tick's PingSource"}
	for _, fn := range []string{FnListPods, FnSnapshotMetadata, FnBackupVolume, FnChoreographer, FnFrontDoor,
		FnRestoreVolume, FnRecreatePod, FnDeleteBackup, FnDeadLetters} {
		names[ServiceAccount(fn)] = "function " + fn
	}
	for _, r := range Routes() {
		sa := TriggerServiceAccount(r.Trigger)
		if other, ok := names[sa]; ok {
			t.Errorf("Trigger %s and %s share the service account %s", r.Trigger, other, sa)
		}
		names[sa] = "Trigger " + r.Trigger
	}
	for sa, who := range names {
		if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 || len(sa) > 63 {
			t.Errorf("%s: service account %q (%d characters): %v", who, sa, len(sa), errs)
		}
	}
}

func TestAudiences(t *testing.T) {
	if got := BrokerAudience("PodGuard"); got != "eventing.knative.dev/broker/podguard/podguard" {
		t.Errorf("BrokerAudience = %q", got)
	}
	if got := FunctionAudience(FnBackupVolume); got != "podguard.dev/function/back-up-volume" {
		t.Errorf("FunctionAudience = %q", got)
	}
	if got := ServiceAccountUser("podguard", "podguard-choreographer"); got != "system:serviceaccount:podguard:podguard-choreographer" {
		t.Errorf("ServiceAccountUser = %q", got)
	}
}

func TestSenders(t *testing.T) {
	for _, c := range []struct {
		typ  string
		want []string
	}{
		{VolumeBackup, []string{"podguard-choreographer", "podguard-dead-letters"}},
		{VolumeBackedUp, []string{"podguard-back-up-volume", "podguard-dead-letters"}},
		{PodsList, []string{"podguard-choreographer", "podguard-dead-letters", "podguard-front-door"}},
		// Read by people only: never sent into the broker by anyone but its producer.
		{CheckpointFinished, []string{"podguard-choreographer"}},
		// Sent by people to the front door, which no Trigger routes.
		{CheckpointShow, nil},
		{"dev.example.unknown", nil},
	} {
		if got := Senders(c.typ); !slices.Equal(got, c.want) {
			t.Errorf("Senders(%s) = %q, want %q", c.typ, got, c.want)
		}
	}
	// The tick comes from the tick's PingSource, as its OIDC identity, never from a
	// function that does not produce it.
	for _, typ := range []string{PingSourceTick, Tick} {
		s := Senders(typ)
		if !slices.Contains(s, "podguard-tick-oidc-sources.knative.dev-pingsource") || slices.Contains(s, ServiceAccount(FnChoreographer)) {
			t.Errorf("Senders(%s) = %q, want the PingSource's service account and not the choreographer's", typ, s)
		}
	}
	// Whatever a Trigger routes, its producers may send, and dead-letters may replay.
	for _, r := range Routes() {
		if s := Senders(r.Type); !slices.Contains(s, ServiceAccount(FnDeadLetters)) {
			t.Errorf("Senders(%s) = %q: dead-letters may not replay it", r.Type, s)
		}
	}
}

func TestDeliverers(t *testing.T) {
	const ns = "podguard"
	user := func(sa string) string { return "system:serviceaccount:" + ns + ":" + sa }
	if got, want := Deliverers(ns, FnBackupVolume, VolumeBackup), []string{user("back-up-volume-volume-backup-oidc-eventing.knative.dev-trigger")}; !slices.Equal(got, want) {
		t.Errorf("Deliverers(back-up-volume, volume.backup) = %q, want %q", got, want)
	}
	if got, want := Deliverers(ns, FnChoreographer, PingSourceTick), []string{user("choreographer-ping-oidc-eventing.knative.dev-trigger")}; !slices.Equal(got, want) {
		t.Errorf("Deliverers(choreographer, ping) = %q, want %q", got, want)
	}
	if got, want := Deliverers(ns, FnChoreographer, MetadataSnapshotted), []string{user("choreographer-metadata-snapshot77f288c61c578ecf2c22f4fb3ecc412a")}; !slices.Equal(got, want) {
		t.Errorf("Deliverers(choreographer, metadata.snapshotted) = %q, want %q", got, want)
	}
	// The dead-letter sink takes a dead letter of any type from any of podguard's
	// Triggers, and from no function.
	for _, typ := range []string{VolumeBackup, PodsListed, "dev.example.unknown"} {
		got := Deliverers(ns, FnDeadLetters, typ)
		if len(got) != len(Routes()) {
			t.Errorf("Deliverers(dead-letters, %s): %d subjects, want one per Trigger (%d)", typ, len(got), len(Routes()))
		}
		for _, r := range Routes() {
			if !slices.Contains(got, user(TriggerServiceAccount(r.Trigger))) {
				t.Errorf("Deliverers(dead-letters, %s) lacks Trigger %s", typ, r.Trigger)
			}
		}
		if slices.Contains(got, user(ServiceAccount(FnChoreographer))) {
			t.Errorf("Deliverers(dead-letters, %s) has a function's service account", typ)
		}
	}
	// Its replay requests come from their own Trigger only.
	if got, want := Deliverers(ns, FnDeadLetters, DeadLetterReplay), []string{user(TriggerServiceAccount("dead-letters-deadletter-replay"))}; !slices.Equal(got, want) {
		t.Errorf("Deliverers(dead-letters, deadletter.replay) = %q, want %q", got, want)
	}
}
