// Package broker is podguard's embedded local broker: the stand-in for the Knative
// Eventing Broker when every function runs in one process or on one machine. It reads
// the Triggers of the kustomize base (deploy/base: the manifests its kustomization lists,
// exactly what an install applies) and routes events with the same exact-attribute
// filters and the same delivery rules as Knative's broker:
//
//   - the ingress (an http.Handler, or Send in the same process) accepts a CloudEvent in
//     binary or structured mode and answers 202 once it is queued, 400 with the reason
//     for a malformed one;
//   - each Trigger whose filter matches gets the event by HTTP POST in binary mode, from
//     a bounded pool of workers, unordered and at least once;
//   - a 2xx answer carrying an event is a reply: it is ingested again;
//   - 5xx, 404, 408, 409, 429 and connection errors are retried Delivery.Retry times
//     with the Trigger's backoff (linear: delay*n, exponential: delay*2^n after failed
//     attempt n, counted from 0); any other status, 400 above all, is final;
//   - a delivery that failed for good goes to the Trigger's dead-letter sink with the
//     knativeerrordest, knativeerrorcode and knativeerrordata extensions, and to the
//     Recorder, which keeps it in memory and in a JSON-lines file for Replay.
//
// With Options.Identity it also enforces Knative's sender identity
// (authentication-oidc) and the Broker's EventPolicies (LoadPolicies, from the same
// manifests): the ingress answers 401 to an event without a bearer token or with one that
// does not verify, and 403 to one the first policy naming its sender does not accept (with
// no policy: to a sender outside the namespace), before anything is queued; SendAs does
// the same for senders in the process. Each Trigger delivers, and sends its dead letters,
// with a token of its OIDC service account (events.TriggerServiceAccount) for the
// audience its subscriber (dead-letter sink) names, and its subscriber's replies must be
// admitted from that identity. The EventPolicies are written for namespace podguard
// (ManifestNamespace); LoadPolicies rewrites their subjects to the namespace the broker
// runs in, which for a local run may be another:
//
//	policies, err := broker.LoadPolicies("deploy/base", namespace)
//	...
//	tokens, err := broker.NewServiceAccountTokens(clientset, namespace, broker.TokenOptions{})
//	...
//	b, err := broker.New(triggers, addresses, dead, broker.Options{Logger: logger, Identity: &broker.Identity{
//		Namespace: namespace,
//		Policies:  policies,
//		Verifier:  verifier, // e.g. an access.Verifier for events.BrokerAudience(namespace)
//		Tokens:    tokens,
//	}})
//
// and each function sends with SendAs(ctx, e, its own token for events.BrokerAudience).
//
// Start it from the manifests, with the local address of each function:
//
//	triggers, err := broker.LoadTriggers("deploy/base")
//	if err != nil {
//		return err
//	}
//	dead, err := broker.NewRecorder("dead-letters.jsonl")
//	if err != nil {
//		return err
//	}
//	defer dead.Close()
//	b, err := broker.New(triggers, map[string]string{
//		events.FnListPods:      "http://127.0.0.1:8081",
//		events.FnChoreographer: "http://127.0.0.1:8082",
//		// ...
//	}, dead, broker.Options{Logger: logger})
//	if err != nil {
//		return err
//	}
//	go b.RunTicker(ctx, time.Minute, broker.PingTick("default", "podguard-tick", time.Now))
//	err = function.Serve(ctx, "127.0.0.1:8080", b, 30*time.Second, logger, nil) // the functions' K_SINK
//	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	err = errors.Join(err, b.Close(closeCtx))
//
// and later replay what failed, once the cause is fixed:
//
//	letters, err := broker.ReadDeadLetters("dead-letters.jsonl")
//	...
//	err = b.Replay(ctx, letters...)
package broker
