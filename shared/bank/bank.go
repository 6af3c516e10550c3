// Package bank stores podguard's checkpoints in an OpenStack Swift container. The Layout
// type owns every object name; Bank reads and writes them.
//
//	b, err := bank.Open(ctx, bank.Config{Auth: "keystone", Container: "podguard"}, openstack.Config{Cloud: "mycloud"})
//	ref, err := b.PutListing(ctx, key, graphJSON)
package bank

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/observe"
	"github.com/podguard/podguard/shared/openstack"
)

// Config selects the Swift account and container of the bank.
type Config struct {
	// Auth is keystone (clouds.yaml / OS_* credentials, endpoint from the catalog),
	// tempauth (Swift's auth v1: ST_AUTH, ST_USER, ST_KEY) or none (BANK_STORAGE_URL
	// of a proxy without auth, for tests).
	Auth       string `envconfig:"BANK_AUTH" default:"keystone"`
	Container  string `envconfig:"BANK_CONTAINER" default:"podguard"`
	StorageURL string `envconfig:"BANK_STORAGE_URL"`
	AuthURL    string `envconfig:"ST_AUTH"`
	User       string `envconfig:"ST_USER"`
	Key        string `envconfig:"ST_KEY"`
}

// Validate names the variable that is missing for the chosen auth.
func (c Config) Validate() error {
	switch c.Auth {
	case "keystone":
	case "tempauth":
		if c.AuthURL == "" || c.User == "" || c.Key == "" {
			return errors.New("BANK_AUTH=tempauth needs ST_AUTH, ST_USER and ST_KEY")
		}
	case "none":
		if c.StorageURL == "" {
			return errors.New("BANK_AUTH=none needs BANK_STORAGE_URL")
		}
	default:
		return fmt.Errorf("BANK_AUTH=%q: want keystone, tempauth or none", c.Auth)
	}
	if c.Container == "" {
		return errors.New("BANK_CONTAINER is empty")
	}
	return nil
}

// Connection builds the Swift connection for c; os supplies Keystone credentials.
func (c Config) Connection(os openstack.Config) (*swift.Connection, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	switch c.Auth {
	case "tempauth":
		return &swift.Connection{AuthVersion: 1, AuthUrl: c.AuthURL, UserName: c.User, ApiKey: c.Key, UserAgent: "podguard"}, nil
	case "none":
		return &swift.Connection{StorageUrl: c.StorageURL, AuthToken: "none", UserAgent: "podguard"}, nil
	default:
		return os.SwiftConnection()
	}
}

// objectStore is the part of Swift the bank uses.
type objectStore interface {
	ContainerCreate(ctx context.Context, container string, h swift.Headers) error
	ObjectPut(ctx context.Context, container, name string, contents io.Reader, checkHash bool, hash, contentType string, h swift.Headers) (swift.Headers, error)
	ObjectGetBytes(ctx context.Context, container, name string) ([]byte, error)
	ObjectDelete(ctx context.Context, container, name string) error
	Objects(ctx context.Context, container string, opts *swift.ObjectsOpts) ([]swift.Object, error)
	BulkUpload(ctx context.Context, uploadPath string, data io.Reader, format string, h swift.Headers) (swift.BulkUploadResult, error)
	BulkDelete(ctx context.Context, container string, objectNames []string) (swift.BulkDeleteResult, error)
}

// Bank is one Swift container holding checkpoints.
type Bank struct {
	// Ops tracks the protect of each checkpoint; Restores and Deletions track the others.
	Ops
	store     objectStore
	container string
	layout    Layout
	now       func() time.Time
	batches   recent[*Batches]
	// noted are the checkpoint keys NoteKeys wrote (layout names), so that the batches
	// of one checkpoint note its key once, not once each.
	noted recent[struct{}]
	// ending serializes the ends of one operation within the process (see Ops.End).
	ending stripes
}

// Open connects to Swift and makes sure the bank's container exists.
func Open(ctx context.Context, c Config, os openstack.Config) (*Bank, error) {
	conn, err := c.Connection(os)
	if err != nil {
		return nil, fmt.Errorf("bank configuration: %w", err)
	}
	conn.Transport = observe.FromContext(ctx).Transport(conn.Transport, "swift")
	return New(ctx, conn, c.Container)
}

// New uses an existing connection and makes sure the container exists.
func New(ctx context.Context, store objectStore, container string) (*Bank, error) {
	b := &Bank{store: store, container: container, now: time.Now,
		batches: recent[*Batches]{size: batchCacheSize}, noted: recent[struct{}]{size: notedKeysSize}}
	b.Ops = Ops{b: b, kind: KindCheckpoints}
	if err := b.retry(ctx, func() error { return store.ContainerCreate(ctx, container, nil) }); err != nil {
		return nil, fmt.Errorf("create bank container %s: %w", container, err)
	}
	return b, nil
}

// SetClock replaces the clock the bank stamps what it records with (statuses it sets
// itself, failures, fan-out markers); time.Now unless set. Tests move it.
func (b *Bank) SetClock(now func() time.Time) { b.now = now }

// Container is the bank's Swift container.
func (b *Bank) Container() string { return b.container }

// Layout is the bank's object layout.
func (b *Bank) Layout() Layout { return b.layout }

// ErrNotFound is returned when an object of the bank does not exist.
var ErrNotFound = errors.New("not found in the bank")

// put writes an object, replacing any previous version.
func (b *Bank) put(ctx context.Context, name string, data []byte) error {
	if _, err := b.store.ObjectPut(ctx, b.container, name, bytes.NewReader(data), false, "", "application/json", nil); err != nil {
		return fmt.Errorf("put %s/%s: %w", b.container, name, err)
	}
	return nil
}

// get reads an object; a missing one is ErrNotFound.
func (b *Bank) get(ctx context.Context, name string) ([]byte, error) {
	data, err := b.store.ObjectGetBytes(ctx, b.container, name)
	if errors.Is(err, swift.ObjectNotFound) {
		return nil, fmt.Errorf("get %s/%s: %w", b.container, name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", b.container, name, err)
	}
	return data, nil
}

// PutListing stores a list-pods graph under key (derived from the request, so a
// redelivered request overwrites the same object) and returns its reference.
func (b *Bank) PutListing(ctx context.Context, key string, data []byte) (events.ObjectRef, error) {
	name := b.layout.Listing(key)
	if err := b.put(ctx, name, data); err != nil {
		return events.ObjectRef{}, err
	}
	sum := sha256.Sum256(data)
	return events.ObjectRef{Container: b.container, Object: name, Bytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, nil
}

// GetRef reads the object a reference names and checks its size and digest.
func (b *Bank) GetRef(ctx context.Context, ref events.ObjectRef) ([]byte, error) {
	if ref.Container != b.container {
		return nil, fmt.Errorf("reference to container %s, but the bank is %s", ref.Container, b.container)
	}
	data, err := b.get(ctx, ref.Object)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != ref.Bytes || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, fmt.Errorf("object %s/%s does not match its reference (size or sha256)", ref.Container, ref.Object)
	}
	return data, nil
}
