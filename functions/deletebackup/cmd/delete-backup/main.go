// Command delete-backup is the delete-backup Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/deletebackup"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[deletebackup.Config]{
		Name:    events.FnDeleteBackup,
		Accepts: deletebackup.Accepts,
		New: func(ctx context.Context, cfg *deletebackup.Config, _ function.Env) (function.Handler, error) {
			return deletebackup.New(ctx, cfg)
		},
	})
}
