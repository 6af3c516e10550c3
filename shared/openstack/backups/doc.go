// Package backups manages the Cinder backups of volumes: podguard's checkpoints keep
// each protected volume's data as a Cinder backup, tagged with metadata that names the
// checkpoint and the resource.
//
// Steps are idempotent: before starting a backup, a step looks for the one an earlier
// delivery of the same request may already have started, by volume and metadata. Steps
// do not wait for long work either; WaitForStatus is for tests, tools and short waits
// bound by a context.
//
//	sc, err := cfg.BlockStorage(ctx) // see package openstack
//	c := backups.New(sc)
//	tag := map[string]string{"podguard-checkpoint": checkpointID, "podguard-resource": key}
//	b, err := c.Find(ctx, volumeID, tag)
//	if err == nil && b == nil {
//		parent, _ := c.IncrementalParent(ctx, volumeID) // nil: a full backup is needed
//		b, err = c.Create(ctx, backups.CreateOpts{VolumeID: volumeID, Name: name,
//			Incremental: parent != nil, Metadata: tag})
//	}
//	...
//	b, err = c.WaitForStatus(ctx, b.ID, backups.StatusAvailable)
//	var failed *backups.FailedError
//	if errors.As(err, &failed) {
//		// the backup failed: failed.Reason says why
//	}
//
// The client speaks Block Storage API microversion 3.43 (Queens and later), the first
// that stores metadata on backups.
package backups
