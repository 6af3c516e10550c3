// Command listpods is the list-pods Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/listpods"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[listpods.Config]{
		Name:    events.FnListPods,
		Accepts: listpods.Accepts,
		New: func(ctx context.Context, cfg *listpods.Config, _ function.Env) (function.Handler, error) {
			return listpods.New(ctx, cfg)
		},
	})
}
