// Command dead-letters is the dead-letters Knative function: the dead-letter sink of every
// Trigger, which records what the broker could not deliver, lists it and replays it.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/deadletters"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[deadletters.Config]{
		Name:      events.FnDeadLetters,
		Accepts:   deadletters.Accepts,
		AcceptAny: true, // a dead letter may be of any type, its data malformed
		New: func(ctx context.Context, cfg *deadletters.Config, env function.Env) (function.Handler, error) {
			return deadletters.New(ctx, cfg, env.Sink)
		},
	})
}
