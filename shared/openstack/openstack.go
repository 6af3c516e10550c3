// Package openstack authenticates to OpenStack the way a deployment does: Keystone v3
// from clouds.yaml (OS_CLOUD) or the OS_* variables, the service catalog giving the Cinder
// (volumev3) and Swift (object-store) endpoints.
//
//	cfg := openstack.Config{Cloud: "mycloud"}
//	volumes, err := cfg.BlockStorage(ctx)  // gophercloud block storage v3 client
//	conn, err := cfg.SwiftConnection()    // ncw/swift connection, same credentials
package openstack

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/utils/v2/openstack/clientconfig"
	"github.com/ncw/swift/v2"
	"github.com/podguard/podguard/shared/observe"
)

// Config selects the cloud. Credentials themselves come from clouds.yaml (and
// secure.yaml) or the OS_* variables, read by gophercloud's client config.
type Config struct {
	// Cloud is the clouds.yaml entry (OS_CLOUD); empty means the OS_* variables.
	Cloud string `envconfig:"OS_CLOUD"`
	// Region overrides the cloud's region (OS_REGION_NAME).
	Region string `envconfig:"OS_REGION_NAME"`
	// Interface is the endpoint interface: public, internal or admin (OS_INTERFACE).
	Interface string `envconfig:"OS_INTERFACE" default:"public"`
	// BlockStorageEndpoint, when set, is used in place of the catalog's Cinder endpoint
	// (OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE, as openstacksdk names it): the full URL with
	// the project, such as a proxy's in front of Cinder. Keystone still authenticates.
	BlockStorageEndpoint string `envconfig:"OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE"`
}

// AuthOptions resolves the credentials, with re-authentication allowed so long-running
// functions survive token expiry.
func (c Config) AuthOptions() (*gophercloud.AuthOptions, error) {
	ao, err := clientconfig.AuthOptions(&clientconfig.ClientOpts{Cloud: c.Cloud})
	if err != nil {
		return nil, fmt.Errorf("openstack credentials (cloud %q): %w", c.Cloud, err)
	}
	ao.AllowReauth = true
	return ao, nil
}

// RegionName is the configured region, from OS_REGION_NAME or the cloud's entry.
func (c Config) RegionName() string {
	if c.Region != "" || c.Cloud == "" {
		return c.Region
	}
	if cloud, err := clientconfig.GetCloudFromYAML(&clientconfig.ClientOpts{Cloud: c.Cloud}); err == nil {
		return cloud.RegionName
	}
	return ""
}

func (c Config) availability() gophercloud.Availability {
	switch c.Interface {
	case "internal", "internalURL":
		return gophercloud.AvailabilityInternal
	case "admin", "adminURL":
		return gophercloud.AvailabilityAdmin
	default:
		return gophercloud.AvailabilityPublic
	}
}

// BlockStorage authenticates and returns a Cinder v3 client from the catalog, or at
// BlockStorageEndpoint when set.
func (c Config) BlockStorage(ctx context.Context) (*gophercloud.ServiceClient, error) {
	ao, err := c.AuthOptions()
	if err != nil {
		return nil, err
	}
	pc, err := openstack.AuthenticatedClient(ctx, *ao)
	if err != nil {
		return nil, fmt.Errorf("authenticate to %s: %w", ao.IdentityEndpoint, err)
	}
	if t := observe.FromContext(ctx); t.Tracing() {
		client := pc.HTTPClient
		client.Transport = t.Transport(client.Transport, "cinder")
		pc.HTTPClient = client
	}
	sc, err := openstack.NewBlockStorageV3(pc, gophercloud.EndpointOpts{Region: c.RegionName(), Availability: c.availability()})
	if err != nil {
		return nil, fmt.Errorf("block storage v3 endpoint from the catalog: %w", err)
	}
	if c.BlockStorageEndpoint != "" {
		if u, err := url.Parse(c.BlockStorageEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("OS_BLOCK_STORAGE_ENDPOINT_OVERRIDE=%q: want an http(s) URL", c.BlockStorageEndpoint)
		}
		sc.Endpoint = gophercloud.NormalizeURL(c.BlockStorageEndpoint)
	}
	return sc, nil
}

// SwiftConnection returns an unauthenticated ncw/swift connection for the same
// credentials (Keystone v3); it authenticates on first use and finds the object-store
// endpoint in the catalog.
func (c Config) SwiftConnection() (*swift.Connection, error) {
	ao, err := c.AuthOptions()
	if err != nil {
		return nil, err
	}
	conn := &swift.Connection{
		AuthVersion:                 3,
		AuthUrl:                     v3URL(ao.IdentityEndpoint),
		UserName:                    ao.Username,
		UserId:                      ao.UserID,
		ApiKey:                      ao.Password,
		Domain:                      ao.DomainName,
		DomainId:                    ao.DomainID,
		ApplicationCredentialId:     ao.ApplicationCredentialID,
		ApplicationCredentialName:   ao.ApplicationCredentialName,
		ApplicationCredentialSecret: ao.ApplicationCredentialSecret,
		Token:                       ao.TokenID,
		Region:                      c.RegionName(),
		EndpointType:                swift.EndpointType(c.availability()),
		UserAgent:                   "podguard",
	}
	if s := ao.Scope; s != nil {
		conn.Tenant, conn.TenantId = s.ProjectName, s.ProjectID
		conn.TenantDomain, conn.TenantDomainId = s.DomainName, s.DomainID
	} else {
		conn.Tenant, conn.TenantId = ao.TenantName, ao.TenantID
	}
	return conn, nil
}

// v3URL makes sure the identity endpoint names the v3 API, as ncw/swift expects.
func v3URL(u string) string {
	u = strings.TrimRight(u, "/")
	if strings.HasSuffix(u, "/v3") {
		return u
	}
	return u + "/v3"
}
