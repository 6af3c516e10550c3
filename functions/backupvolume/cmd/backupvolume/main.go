// Command backupvolume is the back-up-volume Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[backupvolume.Config]{
		Name:    events.FnBackupVolume,
		Accepts: backupvolume.Accepts,
		New: func(ctx context.Context, cfg *backupvolume.Config, _ function.Env) (function.Handler, error) {
			return backupvolume.New(ctx, cfg)
		},
	})
}
