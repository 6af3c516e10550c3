// Command choreographer is the choreographer Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[choreographer.Config]{
		Name:    events.FnChoreographer,
		Accepts: choreographer.Accepts,
		New: func(ctx context.Context, cfg *choreographer.Config, env function.Env) (function.Handler, error) {
			return choreographer.New(ctx, cfg, env.Sink)
		},
	})
}
