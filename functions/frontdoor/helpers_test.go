package frontdoor

import (
	"context"
	"net/http"
	"testing"

	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/access/accesstest"
	"github.com/podguard/podguard/shared/checkpoint"
)

// The caller the tests read as, with every right.
var admin = access.Caller{Username: "system:serviceaccount:podguard:admin", Groups: []string{"system:serviceaccounts"}}

const adminToken = "admin-token"

// newTestStep is a front door on r and restores where adminToken is admin, who may do
// anything.
func newTestStep(t *testing.T, r checkpoint.Reader, restores checkpoint.RestoreReader) *Step {
	t.Helper()
	s, err := NewStep(r, restores, Options{Authenticator: accesstest.Tokens{adminToken: admin}, Authorizer: accesstest.AllowAll(admin.Username)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// asAdmin is ctx as Admit leaves it for admin.
func asAdmin(ctx context.Context) context.Context { return context.WithValue(ctx, callerKey{}, admin) }

// getAsAdmin GETs u with admin's token.
func getAsAdmin(u string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	return http.DefaultClient.Do(req)
}
