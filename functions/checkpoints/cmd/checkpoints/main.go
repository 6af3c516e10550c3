// Command checkpoints is the checkpoints Knative function (show, list, provider).
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/checkpoints"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[checkpoints.Config]{
		Name:    events.FnCheckpoints,
		Accepts: checkpoints.Accepts,
		New: func(ctx context.Context, cfg *checkpoints.Config, _ function.Env) (function.Handler, error) {
			return checkpoints.New(ctx, cfg)
		},
	})
}
