package access

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"
)

// Group is podguard's API group: the rights an Authorizer checks are on its resources.
const Group = "podguard.dev"

// Attributes is one thing a caller asks to do: Verb on Resource (with optional
// Subresource, and Name for one object) of group podguard.dev, or of Group, in Namespace
// ("" = cluster-wide).
type Attributes struct {
	Verb string
	// Group is the API group of Resource: podguard.dev when empty, Kubernetes' core group
	// when Core, else the group named (apps, say).
	Group       string
	Resource    string
	Subresource string
	Name        string
	Namespace   string
}

// Core names Kubernetes' core API group (pods, persistentvolumeclaims, namespaces ...) in
// Attributes.Group, whose own name is empty.
const Core = "core"

// APIGroup is the API group the apiserver is asked about.
func (a Attributes) APIGroup() string {
	switch a.Group {
	case "":
		return Group
	case Core:
		return ""
	}
	return a.Group
}

// String reads like `create checkpoints.podguard.dev in namespace "team-a"`,
// `create deadletters.podguard.dev/replay cluster-wide`, `create pods in namespace "dr"`
// or `create serviceaccounts/token "app" in namespace "dr"`.
func (a Attributes) String() string {
	var b strings.Builder
	b.WriteString(a.Verb + " " + a.Resource)
	if g := a.APIGroup(); g != "" {
		b.WriteString("." + g)
	}
	if a.Subresource != "" {
		b.WriteString("/" + a.Subresource)
	}
	if a.Name != "" {
		fmt.Fprintf(&b, " %q", a.Name)
	}
	if a.Namespace == "" {
		b.WriteString(" cluster-wide")
	} else {
		fmt.Fprintf(&b, " in namespace %q", a.Namespace)
	}
	return b.String()
}

// Decision is the apiserver's answer to whether a caller may do something.
type Decision struct {
	Allowed bool
	// Reason is the apiserver's reason and evaluation error when it gives any; a refusal
	// without one says what is missing.
	Reason string
}

// SubjectAccessReviewCreator creates SubjectAccessReviews;
// cs.AuthorizationV1().SubjectAccessReviews() of a client-go clientset is one.
type SubjectAccessReviewCreator interface {
	Create(ctx context.Context, review *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

// SubjectAccessReviewFunc is a function that creates SubjectAccessReviews, such as a
// test's stand-in for the apiserver.
type SubjectAccessReviewFunc func(ctx context.Context, review *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)

// Create calls f.
func (f SubjectAccessReviewFunc) Create(ctx context.Context, review *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	return f(ctx, review, opts)
}

// AuthorizerOptions tune an Authorizer; the zero value is the defaults.
type AuthorizerOptions struct {
	// TTL is how long a decision, allowed or refused, is kept (10s when 0).
	TTL time.Duration
	// Size is how many decisions are kept at most (4096 when 0); the oldest go first.
	Size int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Authorizer decides with the apiserver's SubjectAccessReview API whether a caller may do
// something to podguard's resources.
type Authorizer struct {
	client    SubjectAccessReviewCreator
	ttl       time.Duration
	now       func() time.Time
	decisions *cache[[sha256.Size]byte, verdict]
}

// verdict is a review's answer as the apiserver gave it.
type verdict struct {
	allowed bool
	reason  string
}

// NewAuthorizer returns an Authorizer that reviews access through client.
func NewAuthorizer(client SubjectAccessReviewCreator, o AuthorizerOptions) *Authorizer {
	o.TTL = cmp.Or(o.TTL, 10*time.Second)
	o.Size = cmp.Or(o.Size, 4096)
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Authorizer{client: client, ttl: o.TTL, now: o.Now, decisions: newCache[[sha256.Size]byte, verdict](o.Size, o.Now)}
}

// Allowed decides whether c may do at. An error is a failure to decide, worth retrying.
func (a *Authorizer) Allowed(ctx context.Context, c Caller, at Attributes) (Decision, error) {
	v, err := a.decide(ctx, c, at)
	if err != nil {
		return Decision{}, err
	}
	if v.allowed || v.reason != "" {
		return Decision{Allowed: v.allowed, Reason: v.reason}, nil
	}
	return Decision{Reason: refusal(c, at)}, nil
}

// AllowedAll decides whether c may do every one of ats, in order, and returns the first
// refusal, whose reason names what is missing, as in
// `system:serviceaccount:team-a:viewer may not create checkpoints.podguard.dev in
// namespace "team-a"`. An empty ats is refused: there is nothing to allow.
func (a *Authorizer) AllowedAll(ctx context.Context, c Caller, ats []Attributes) (Decision, error) {
	if len(ats) == 0 {
		return Decision{Reason: "no rights to check"}, nil
	}
	for _, at := range ats {
		v, err := a.decide(ctx, c, at)
		if err != nil {
			return Decision{}, err
		}
		if !v.allowed {
			reason := refusal(c, at)
			if v.reason != "" {
				reason += ": " + v.reason
			}
			return Decision{Reason: reason}, nil
		}
	}
	return Decision{Allowed: true}, nil
}

func refusal(c Caller, at Attributes) string {
	return fmt.Sprintf("%s may not %s", cmp.Or(c.Username, "a caller without a name"), at)
}

// decide returns the verdict on c doing at, kept or reviewed.
func (a *Authorizer) decide(ctx context.Context, c Caller, at Attributes) (verdict, error) {
	if at.Verb == "" || at.Resource == "" {
		return verdict{}, fmt.Errorf("check access to %s: a verb and a resource are required", at)
	}
	if c.Username == "" && len(c.Groups) == 0 {
		return verdict{reason: "no authenticated caller"}, nil
	}
	return a.decisions.do(ctx, decisionKey(c, at), func(ctx context.Context) (verdict, time.Time, error) {
		v, err := a.review(ctx, c, at)
		return v, a.now().Add(a.ttl), err
	})
}

func (a *Authorizer) review(ctx context.Context, c Caller, at Attributes) (verdict, error) {
	spec := authorizationv1.SubjectAccessReviewSpec{
		User: c.Username, UID: c.UID, Groups: c.Groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group: at.APIGroup(), Resource: at.Resource, Subresource: at.Subresource, Name: at.Name, Verb: at.Verb, Namespace: at.Namespace,
		},
	}
	if len(c.Extra) > 0 {
		spec.Extra = make(map[string]authorizationv1.ExtraValue, len(c.Extra))
		for k, v := range c.Extra {
			spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	sar, err := a.client.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return verdict{}, fmt.Errorf("review whether %s may %s: %w", cmp.Or(c.Username, "a caller without a name"), at, err)
	}
	st := sar.Status
	var reasons []string
	for _, r := range []string{st.Reason, st.EvaluationError} {
		if r != "" {
			reasons = append(reasons, r)
		}
	}
	v := verdict{allowed: st.Allowed && !st.Denied, reason: strings.Join(reasons, "; ")}
	if !v.allowed {
		logging.FromContext(ctx).Debugw("access refused", zap.String("user", c.Username), zap.Stringer("attributes", at), zap.String("reason", v.reason))
	}
	return v, nil
}

// decisionKey identifies a caller, whatever the order of their groups, and what they
// ask to do.
func decisionKey(c Caller, at Attributes) [sha256.Size]byte {
	h := sha256.New()
	put(h, c.Username, c.UID)
	putList(h, slices.Sorted(slices.Values(c.Groups)))
	keys := slices.Sorted(maps.Keys(c.Extra))
	putList(h, keys)
	for _, k := range keys {
		putList(h, c.Extra[k])
	}
	put(h, at.Verb, at.APIGroup(), at.Resource, at.Subresource, at.Name, at.Namespace)
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// put writes each string with its length first, so that no two sequences of strings
// write the same bytes.
func put(h hash.Hash, ss ...string) {
	for _, s := range ss {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
}

func putList(h hash.Hash, ss []string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(ss)))
	h.Write(n[:])
	put(h, ss...)
}
