// Command restorevolume is the restore-volume Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[restorevolume.Config]{
		Name:    events.FnRestoreVolume,
		Accepts: restorevolume.Accepts,
		New: func(ctx context.Context, cfg *restorevolume.Config, _ function.Env) (function.Handler, error) {
			return restorevolume.New(ctx, cfg)
		},
	})
}
