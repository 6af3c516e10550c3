package access_test

import (
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/shared/access"
	"github.com/podguard/podguard/shared/stacktest"
)

func TestVerifierAgainstTheLocalStack(t *testing.T) {
	st := stacktest.Load(t)
	cs := st.Kube(t)
	ctx := context.Background()
	rc, err := st.KubeConfig().RESTConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, iss, err := access.DiscoveryKeysFor(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if iss != issuer {
		t.Fatalf("issuer %q, want the apiserver's --service-account-issuer %q", iss, issuer)
	}
	v, err := access.NewVerifier(keys, access.VerifierOptions{Issuer: iss, Audience: function})
	if err != nil {
		t.Fatal(err)
	}

	ns := st.Namespace(t, cs, "verify")
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "trigger"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := serviceAccountToken(t, cs, ns, sa.Name, function)
	c, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	if c.Username != "system:serviceaccount:"+ns+":trigger" || c.UID != string(sa.UID) || !reflect.DeepEqual(c.Groups, want) {
		t.Fatalf("caller %+v", c)
	}
	// The apiserver's own review of the token tells the same caller.
	reviews := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), function, access.ReviewOptions{})
	if reviewed, err := reviews.Authenticate(ctx, token); err != nil || !reflect.DeepEqual(c, reviewed) {
		t.Errorf("verified %+v, reviewed %+v, %v", c, reviewed, err)
	}

	// A token bound to a pod names the pod and its node.
	p := stacktest.Pod(ns, "trigger-0", nil)
	p.Spec.ServiceAccountName = sa.Name
	p, err = cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expiry := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{function}, ExpirationSeconds: &expiry,
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bound, err := v.Verify(ctx, tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	if got := bound.Extra["authentication.kubernetes.io/pod-uid"]; !reflect.DeepEqual(got, []string{string(p.UID)}) {
		t.Errorf("caller of a pod's token %+v", bound)
	}
	if reviewed, err := reviews.Authenticate(ctx, tr.Status.Token); err != nil || !reflect.DeepEqual(bound, reviewed) {
		t.Errorf("verified %+v, reviewed %+v, %v", bound, reviewed, err)
	}
	t.Logf("caller of a pod's token: %+v", bound)

	// Refused: a token for another audience, and one with a byte of its signature changed.
	_, err = v.Verify(ctx, serviceAccountToken(t, cs, ns, sa.Name, "other"))
	if !errors.Is(err, access.ErrUnauthenticated) || !strings.Contains(err.Error(), `not for audience "podguard-verify"`) {
		t.Errorf("token for another audience: %v", err)
	}
	t.Logf("token for another audience: %v", err)
	parts := strings.Split(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)/2] ^= 0x01
	_, err = v.Verify(ctx, parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))
	if !errors.Is(err, access.ErrUnauthenticated) || !strings.Contains(err.Error(), "bad signature") {
		t.Errorf("token with its signature changed: %v", err)
	}
	t.Logf("token with its signature changed: %v", err)
}
