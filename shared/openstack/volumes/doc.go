// Package volumes manages Cinder volumes for podguard's restores: each restored volume is
// a new volume created from a checkpoint's backup, tagged with metadata that names the
// restore and the resource.
//
// Steps are idempotent: before creating a volume, a step looks for the one an earlier
// delivery of the same request may already have created, by metadata. Cinder replaces a
// restored volume's metadata with the backed up volume's when the restore completes
// (adding src_backup_id), so FindRestored also recognises a volume restored from the
// backup that lost its tag, and SetMetadata puts the tag back. Steps do not wait for long
// work either; WaitForStatus is for tests, tools and short waits bound by a context.
//
//	sc, err := cfg.BlockStorage(ctx) // see package openstack
//	c := volumes.New(sc)
//	tag := map[string]string{"podguard-restore": restoreID, "podguard-resource": key}
//	v, err := c.FindRestored(ctx, backupID, tag)
//	if err == nil && v == nil {
//		v, err = c.CreateFromBackup(ctx, volumes.CreateFromBackupOpts{
//			Name: checkpointID + "@" + originalVolumeID, BackupID: backupID, Metadata: tag})
//	}
//	...
//	v, err = c.WaitForStatus(ctx, v.ID, volumes.StatusAvailable)
//	var failed *volumes.FailedError
//	if errors.As(err, &failed) {
//		// the volume failed: failed.Reason says why, when Cinder left a message
//	}
//	err = c.SetMetadata(ctx, v.ID, tag) // the restore replaced the metadata
//
// The client speaks Block Storage API microversion 3.47 (Queens and later), the first
// that creates a volume from a backup in one request.
package volumes
