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
