// Package accesstest holds doubles of who a caller is and what they may do, for the
// unit tests of the code that asks (the front door).
package accesstest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/podguard/podguard/shared/access"
)

// Tokens authenticates the tokens it maps to callers; any other is refused.
type Tokens map[string]access.Caller

// Authenticate implements the front door's authenticator.
func (t Tokens) Authenticate(_ context.Context, token string) (access.Caller, error) {
	c, ok := t[token]
	if !ok {
		return access.Caller{}, fmt.Errorf("token not accepted: %w", access.ErrUnauthenticated)
	}
	return c, nil
}

// Grant is what Grants allows: Verb on Resource in Namespace ("" cluster-wide, which
// also covers every namespace), to User.
type Grant struct {
	User, Verb, Resource, Namespace string
}

// Grants allows what its grants say, and counts the questions asked.
type Grants struct {
	mu     sync.Mutex
	grants []Grant
	asked  int
}

// NewGrants allows gs.
func NewGrants(gs ...Grant) *Grants { return &Grants{grants: gs} }

// AllowAll is a Grants that allows anything to user.
func AllowAll(user string) *Grants {
	return NewGrants(Grant{User: user, Verb: "*", Resource: "*"})
}

func (g *Grants) allows(c access.Caller, at access.Attributes) bool {
	resource := at.Resource
	if at.Subresource != "" {
		resource += "/" + at.Subresource
	}
	return slices.ContainsFunc(g.grants, func(gr Grant) bool {
		return gr.User == c.Username && (gr.Verb == "*" || gr.Verb == at.Verb) &&
			(gr.Resource == "*" || gr.Resource == resource) && (gr.Namespace == "" || gr.Namespace == at.Namespace)
	})
}

// AllowedAll implements the front door's authorizer.
func (g *Grants) AllowedAll(_ context.Context, c access.Caller, ats []access.Attributes) (access.Decision, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, at := range ats {
		g.asked++
		if !g.allows(c, at) {
			return access.Decision{Reason: fmt.Sprintf("%s may not %s", c.Username, at)}, nil
		}
	}
	return access.Decision{Allowed: true}, nil
}

// Asked is how many attribute sets were checked.
func (g *Grants) Asked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asked
}
