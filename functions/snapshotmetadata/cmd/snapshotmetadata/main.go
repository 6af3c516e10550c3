// Command snapshotmetadata is the snapshot-metadata Knative function.
package main

import (
	"context"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/snapshotmetadata"
	"github.com/podguard/podguard/shared/function"
)

func main() {
	function.Main(function.Function[snapshotmetadata.Config]{
		Name:    events.FnSnapshotMetadata,
		Accepts: snapshotmetadata.Accepts,
		New: func(ctx context.Context, cfg *snapshotmetadata.Config, _ function.Env) (function.Handler, error) {
			return snapshotmetadata.New(ctx, cfg)
		},
	})
}
