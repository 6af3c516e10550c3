package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/podguard/podguard/shared/bank"
)

// Saved info (a pod's, or a ConfigMap's, Secret's or ServiceAccount's) is never stored in
// clear: snapshot-metadata seals it (package seal)
// and recreate-pod opens it, the only functions that hold the bank's keys. Each envelope
// is bound to its place, SealContext: an envelope copied into another resource's record,
// another batch or another checkpoint does not open.

// Sealer seals saved info (a *seal.Keyring).
type Sealer interface {
	Seal(plaintext []byte, context string) ([]byte, error)
}

// Opener opens sealed saved info (a *seal.Keyring).
type Opener interface {
	Open(sealed []byte, context string) ([]byte, error)
}

// SealContext is the place a resource's sealed info is bound to: the object name of the
// checkpoint's record of its batch, and its resource key.
func SealContext(checkpointID, batch, key string) string {
	return bank.Layout{}.Record(bank.CheckpointOp(checkpointID), batch) + "#" + key
}

// SealInfo encodes a resource's saved info (a PodInfo or an ObjectInfo) and seals it
// for its place: the record's Data.
func SealInfo(s Sealer, checkpointID, batch, key string, info any) (json.RawMessage, error) {
	plain, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode the saved info of %s: %w", key, err)
	}
	sealed, err := s.Seal(plain, SealContext(checkpointID, batch, key))
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("seal the saved info of %s: %w", key, err)
	}
	return sealed, nil
}

// SealPodInfo seals a pod's saved info for its place.
func SealPodInfo(s Sealer, checkpointID, batch, key string, info *PodInfo) (json.RawMessage, error) {
	return SealInfo(s, checkpointID, batch, key, info)
}

// openInfo opens sealed saved info read from its place into info; what does not open
// (an unknown key, an envelope altered or moved, data in clear) is an error saying why.
func openInfo(o Opener, checkpointID, batch, key string, data []byte, info any) error {
	plain, err := o.Open(data, SealContext(checkpointID, batch, key))
	if err != nil {
		return err
	}
	defer clear(plain)
	return json.Unmarshal(plain, info)
}

// OpenPodInfo opens a pod's sealed info read from its place; what does not open or
// holds no pod is an error saying why.
func OpenPodInfo(o Opener, checkpointID, batch, key string, data []byte) (*PodInfo, error) {
	var info PodInfo
	if err := openInfo(o, checkpointID, batch, key, data, &info); err != nil {
		return nil, err
	}
	if info.Pod == nil {
		return nil, errors.New("it holds no pod")
	}
	return &info, nil
}

// OpenObjectInfo opens the sealed info of a ConfigMap, Secret or ServiceAccount read
// from its place; what does not open or holds no object is an error saying why.
func OpenObjectInfo(o Opener, checkpointID, batch, key string, data []byte) (ObjectInfo, error) {
	var info ObjectInfo
	if err := openInfo(o, checkpointID, batch, key, data, &info); err != nil {
		return info, err
	}
	if info.Object() == nil {
		return info, errors.New("it holds no object")
	}
	return info, nil
}
