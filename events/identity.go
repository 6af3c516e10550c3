package events

import (
	"crypto/md5" //nolint:gosec // a name, as Knative makes it, not a secret
	"encoding/hex"
	"slices"
	"strings"
)

// Who speaks inside the broker. With sender identity on (Knative Eventing's
// authentication-oidc, and the local broker alike), every event carries a bearer token of
// a Kubernetes service account:
//
//   - into the Broker's ingress (audience BrokerAudience), a function sends as its own
//     service account (ServiceAccount), the tick's PingSource as its OIDC identity
//     (PingSourceServiceAccount); the Broker's EventPolicies (deploy/base/eventpolicies.yaml,
//     Senders) admit each type only from the parts that produce it;
//   - to a function (audience FunctionAudience), the broker delivers as the OIDC identity of
//     the Trigger that routes the event (TriggerServiceAccount of TriggerName), and the
//     function accepts each type only from that Trigger (the dead-letter sink: from any of
//     podguard's Triggers).
//
// The names follow Knative's: a resource's OIDC service account is its name with the suffix
// -oidc-<group>-<Kind>, shortened as Knative shortens child names (kmeta.ChildName, whose
// hash covers the suffix with its Kind capitalized), then lowercased.

// BrokerName is podguard's Broker.
const BrokerName = "podguard"

// TickSource is the PingSource whose firings are the tick (deploy/base/pingsource.yaml).
const TickSource = "podguard-tick"

// BrokerAudience is the audience of tokens for the ingress of podguard's Broker in namespace,
// as Knative names a Broker's audience.
func BrokerAudience(namespace string) string {
	return strings.ToLower("eventing.knative.dev/broker/" + namespace + "/" + BrokerName)
}

// FunctionAudience is the audience of tokens delivered to function fn: the subscriber and
// dead-letter audience its Triggers name.
func FunctionAudience(fn string) string { return "podguard.dev/function/" + fn }

// ServiceAccount is the service account function fn runs as and sends events as.
func ServiceAccount(fn string) string { return "podguard-" + fn }

// ServiceAccountUser is the username of service account name in namespace, the subject of
// its tokens.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// TriggerName is the name of the Trigger that routes events of type typ to function fn
// (deploy/base/triggers.yaml): <fn>-<type without dev.podguard., dots as dashes>, and
// <fn>-ping for a PingSource's firings.
func TriggerName(fn, typ string) string {
	if typ == PingSourceTick {
		return fn + "-ping"
	}
	return fn + "-" + strings.ReplaceAll(strings.TrimPrefix(typ, "dev.podguard."), ".", "-")
}

// TriggerServiceAccount is the OIDC service account Knative gives Trigger name: the
// identity the broker delivers its events (and sends its subscriber's replies and dead
// letters) as.
func TriggerServiceAccount(trigger string) string {
	return strings.ToLower(childName(trigger, "-oidc-eventing.knative.dev-Trigger"))
}

// PingSourceServiceAccount is the OIDC service account Knative gives PingSource name.
func PingSourceServiceAccount(name string) string {
	return strings.ToLower(childName(name, "-oidc-sources.knative.dev-PingSource"))
}

// childName is the name Knative gives a resource it makes for parent (kmeta.ChildName of
// knative.dev/pkg): parent+suffix when that fits in 63 characters; else parent cut short,
// then the MD5 of parent, then suffix; or, for a suffix that leaves no room for both, at
// most 31 characters of parent, the MD5 of parent+suffix, and as much of suffix as fits,
// ending with a letter or digit. It is written here rather than imported: kmeta brings
// client-go's informers into every package that reads the catalog.
func childName(parent, suffix string) string {
	const longest, hashLen = 63, 2 * md5.Size
	if len(parent)+len(suffix) <= longest {
		return parent + suffix
	}
	if keep := longest - hashLen - len(suffix); keep > 0 {
		sum := md5.Sum([]byte(parent)) //nolint:gosec // see the import
		return parent[:keep] + hex.EncodeToString(sum[:]) + suffix
	}
	sum := md5.Sum([]byte(parent + suffix)) //nolint:gosec // see the import
	name := parent[:min(len(parent), longest-hashLen)] + hex.EncodeToString(sum[:])
	name += suffix[:longest-len(name)]
	return strings.TrimRightFunc(name, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	})
}

// Route is one Trigger of podguard's: it delivers events of Type to Function.
type Route struct {
	Function, Type, Trigger string
}

// Routes are podguard's Triggers, one per (consumer function, type) of the catalog; the
// front door has none (requests are sent to it directly), nor have types only people read.
func Routes() []Route {
	var out []Route
	for _, t := range Catalog() {
		for _, fn := range t.Consumers {
			if fn == User || fn == FnFrontDoor {
				continue
			}
			out = append(out, Route{Function: fn, Type: t.Name, Trigger: TriggerName(fn, t.Name)})
		}
	}
	return out
}

// Senders are the service accounts (names in podguard's namespace) that may send events
// of type typ into the Broker: each function that produces it, the tick's PingSource for
// what a PingSource produces, and dead-letters, which replays dead letters of every type a
// function consumes as they were first sent. Nil for a type that is never sent into the
// Broker.
func Senders(typ string) []string {
	var out []string
	routed := false
	for _, t := range Catalog() {
		if t.Name != typ {
			continue
		}
		for _, p := range t.Producers {
			switch p {
			case User:
			case PingSource:
				out = append(out, PingSourceServiceAccount(TickSource))
			default:
				out = append(out, ServiceAccount(p))
			}
		}
		for _, c := range t.Consumers {
			routed = routed || (c != User && c != FnFrontDoor)
		}
	}
	if routed && !slices.Contains(out, ServiceAccount(FnDeadLetters)) {
		out = append(out, ServiceAccount(FnDeadLetters))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Deliverers are the subjects function fn accepts a delivery of type typ from, in
// podguard's namespace: the Trigger that routes typ to fn; for the dead-letter sink, any
// of podguard's Triggers, which send it what they failed to deliver.
func Deliverers(namespace, fn, typ string) []string {
	if fn == FnDeadLetters && typ != DeadLetterReplay {
		var out []string
		for _, r := range Routes() {
			out = append(out, ServiceAccountUser(namespace, TriggerServiceAccount(r.Trigger)))
		}
		return out
	}
	return []string{ServiceAccountUser(namespace, TriggerServiceAccount(TriggerName(fn, typ)))}
}
