// Command front-door is the front door Knative function: it authenticates and
// authorizes every request, answers reads and forwards the rest into the broker.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/frontdoor"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[frontdoor.Config]{
		Name:          events.FnFrontDoor,
		Accepts:       frontdoor.Accepts,
		AnswerCallers: true,
		New: func(ctx context.Context, cfg *frontdoor.Config, env function.Env) (function.Handler, error) {
			return frontdoor.New(ctx, cfg, env.Sink)
		},
	})
}
