// Package function is the runtime every podguard function shares: the Knative runtime
// contract (PORT, K_SINK, K_CE_OVERRIDES, probes, graceful drain on SIGTERM), CloudEvents
// decoding in binary and structured mode, schema validation of requests, structured
// logging, and the mapping of a step's errors to the status codes the broker expects.
//
// A function's main is a single call:
//
//	func main() {
//		function.Main(function.Function[listpods.Config]{
//			Name:    events.FnListPods,
//			Accepts: listpods.Accepts,
//			New: func(ctx context.Context, cfg *listpods.Config, env function.Env) (function.Handler, error) {
//				return listpods.New(ctx, cfg)
//			},
//		})
//	}
//
// A step reports a bad request by wrapping its error with Permanent: it is answered 400
// with the reason and never retried. Any other error is answered 500 so the broker retries.
//
// With sender identity on (AUTHENTICATION_OIDC=enabled, as Knative Eventing's
// authentication-oidc), Main verifies every delivery's token with a DeliveryGate, which
// accepts each event type only from the Trigger that routes it to the function
// (events.Deliverers), and sends to K_SINK with the function's own token
// (K_SINK_TOKEN_FILE). Code that builds functions in-process wires the same itself:
//
//	v, err := access.NewVerifier(keys, access.VerifierOptions{Issuer: issuer, Audience: events.FunctionAudience(name)})
//	sink, err := function.NewTokenSender(brokerURL, tokens) // tokens: a TokenSource
//	srv := function.NewServer(name, accepts, step, validator, function.ServerOptions{
//		Sink: sink, Gate: function.NewDeliveryGate(v, namespace, name),
//	})
package function
