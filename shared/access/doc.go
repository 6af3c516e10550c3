// Package access tells who calls podguard and what they may do, by asking the Kubernetes
// apiserver, so that the cluster's own identities and RBAC govern podguard's resources
// (group podguard.dev: checkpoints, restores, schedules and the rest).
//
// Who: a TokenReviewer sends the caller's bearer token to the TokenReview API instead of
// verifying the JWT itself. The apiserver knows what a signature cannot tell: it refuses
// a service account token whose pod, secret or service account is gone, and one that has
// expired. The review names podguard's audience, and the answer must name it back (an
// authenticator that ignores audiences answers with none), so a token minted for the
// apiserver itself or for another service is not accepted by podguard.
//
// A Verifier answers who without asking the apiserver, for code that sees a token on
// every request, such as a function checking each delivery of the broker: it verifies the
// token's signature with the keys the issuer publishes (RS256 and ES256 through the
// OIDC discovery of the apiserver, DiscoveryKeysFor), its issuer, its audience and its
// expiry, and maps a service account's claims to the caller the apiserver would name. It
// fetches the keys once, and again only for a token of a key it does not know, at most
// once per VerifierOptions.Refresh (1m); a failure to fetch them is an error other than
// ErrUnauthenticated. Unlike a review, it cannot tell that the service account or pod of
// a token is gone: such a token is accepted until it expires, so the tokens it accepts
// should be short-lived.
//
//	keys, issuer, err := access.DiscoveryKeysFor(ctx, restConfig)
//	deliveries, err := access.NewVerifier(keys, access.VerifierOptions{Issuer: issuer, Audience: audience})
//	caller, err := deliveries.Verify(ctx, token) // errors.Is(err, access.ErrUnauthenticated): 401
//
// What: an Authorizer asks the SubjectAccessReview API whether the caller may do a verb
// on a resource of group podguard.dev in a namespace or cluster-wide, so Roles and
// ClusterRoles bound like any others decide, through the apiserver's own authorizers.
// podguard's service account needs create on tokenreviews and subjectaccessreviews
// (the ClusterRole system:auth-delegator grants both).
//
// Both keep their answers briefly, in bounded memory, so that a protect of 1000 pods or
// a burst of requests from one client costs one review of its token and one review per
// right it needs, not one per pod or per request. A token review is kept for at most
// ReviewOptions.TTL (30s) and never past the token's own expiry, under the SHA-256 of the
// token, never the token itself; a decision, allowed or refused, for AuthorizerOptions.TTL
// (10s). A deleted service account or a removed binding thus takes effect within that
// time. Refused tokens are not kept, nor are failures of the apiserver, which come back
// as errors other than ErrUnauthenticated, for the caller to answer as transient.
//
//	tokens := access.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), "podguard", access.ReviewOptions{})
//	rights := access.NewAuthorizer(cs.AuthorizationV1().SubjectAccessReviews(), access.AuthorizerOptions{})
//
//	token, _ := access.BearerToken(req)
//	caller, err := tokens.Authenticate(ctx, token) // errors.Is(err, access.ErrUnauthenticated): 401
//	if err != nil { ... }
//	d, err := rights.AllowedAll(ctx, caller, []access.Attributes{
//		{Verb: "create", Resource: "checkpoints", Namespace: "team-a"},
//	})
//	if err == nil && !d.Allowed { ... } // 403, with d.Reason
package access
