package step

import (
	"context"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/podguard/podguard/shared/bank"
	"github.com/podguard/podguard/shared/openstack"
)

// CinderConfig is the configuration of a step that works on Cinder, from the
// environment: the bank and the OpenStack credentials.
type CinderConfig struct {
	Bank      bank.Config
	OpenStack openstack.Config
}

// Validate checks the configuration at start.
func (c *CinderConfig) Validate() error { return c.Bank.Validate() }

// Open connects to the bank and to Cinder (Keystone, the catalog's block-storage
// endpoint).
func (c *CinderConfig) Open(ctx context.Context) (*bank.Bank, *gophercloud.ServiceClient, error) {
	sc, err := c.OpenStack.BlockStorage(ctx)
	if err != nil {
		return nil, nil, err
	}
	b, err := bank.Open(ctx, c.Bank, c.OpenStack)
	if err != nil {
		return nil, nil, err
	}
	return b, sc, nil
}
