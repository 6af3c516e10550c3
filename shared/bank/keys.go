package bank

import (
	"context"
	"fmt"
	"strings"
)

// NoteKeys records that a checkpoint's records hold envelopes sealed with the keys ids
// (seal's key ids): a marker under the checkpoint and an entry in each key's index, in one
// request. The step that seals writes them before the record, so that the checkpoints a
// key still opens are listed (SealedWith) without reading a record. Noting a key again
// changes nothing, and a Bank writes what it noted recently only once (the batches of a
// checkpoint all note the same key).
func (b *Bank) NoteKeys(ctx context.Context, checkpoint string, ids []string) error {
	names := make([]string, 0, 2*len(ids))
	var fresh []string
	for _, id := range ids {
		if _, ok := b.noted.get(b.layout.CheckpointKey(checkpoint, id)); !ok {
			fresh = append(fresh, id)
			names = append(names, b.layout.CheckpointKey(checkpoint, id), b.layout.KeyIndex(id, checkpoint))
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := b.retry(ctx, func() error { return b.putEmpty(ctx, names) }); err != nil {
		return fmt.Errorf("keys of checkpoint %s: %w", checkpoint, err)
	}
	for _, id := range fresh {
		b.noted.put(b.layout.CheckpointKey(checkpoint, id), struct{}{})
	}
	return nil
}

// notedKeysSize bounds the checkpoint keys a Bank remembers having noted.
const notedKeysSize = 64

// CheckpointKeys lists the ids of the keys whose envelopes a checkpoint's records hold.
func (b *Bank) CheckpointKeys(ctx context.Context, checkpoint string) ([]string, error) {
	return b.segments(ctx, b.layout.CheckpointKeysPrefix(checkpoint))
}

// SealedWith lists the checkpoints whose records hold envelopes sealed with a key: none
// once every checkpoint that used it is deleted, and the key can be retired.
func (b *Bank) SealedWith(ctx context.Context, keyID string) ([]string, error) {
	return b.segments(ctx, b.layout.KeyIndexPrefix(keyID))
}

// segments lists the ids named by the objects one segment under prefix.
func (b *Bank) segments(ctx context.Context, prefix string) ([]string, error) {
	objs, err := b.listAll(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(objs))
	for _, obj := range objs {
		if seg := strings.TrimPrefix(obj.Name, prefix); seg != "" && !strings.Contains(seg, "/") {
			out = append(out, unsegment(seg))
		}
	}
	return out, nil
}
