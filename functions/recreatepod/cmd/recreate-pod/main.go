// Command recreate-pod is the recreate-pod Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/recreatepod"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[recreatepod.Config]{
		Name:    events.FnRecreatePod,
		Accepts: recreatepod.Accepts,
		New: func(ctx context.Context, cfg *recreatepod.Config, _ function.Env) (function.Handler, error) {
			return recreatepod.New(ctx, cfg)
		},
	})
}
