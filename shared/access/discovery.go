package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/client-go/rest"
)

// discoveryPath is where an OIDC issuer, the apiserver among them, serves its discovery
// document.
const discoveryPath = "/.well-known/openid-configuration"

// maxDocumentSize bounds the discovery document and the key set read.
const maxDocumentSize = 1 << 20

// discovery is the part of an issuer's discovery document that a Verifier needs.
type discovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// discoveryKeys fetches an issuer's keys through its discovery document.
type discoveryKeys struct {
	client *http.Client
	base   string // without a trailing slash
}

// DiscoveryKeys is a KeySource that reads the discovery document at
// base/.well-known/openid-configuration and then the key set at the path of its jwks_uri,
// from base too, each time keys are fetched. base and client reach the apiserver, which
// serves both; the host of jwks_uri may be a name known only inside the cluster, so
// only its path is used.
func DiscoveryKeys(client *http.Client, base string) KeySource {
	return &discoveryKeys{client: client, base: strings.TrimRight(base, "/")}
}

// DiscoveryKeysFor is the DiscoveryKeys of the apiserver that rc reaches, with rc's
// credentials (needed unless anonymous requests may read the discovery, which the
// ClusterRole system:service-account-issuer-discovery allows), and the issuer its
// discovery document names, read once to tell it.
func DiscoveryKeysFor(ctx context.Context, rc *rest.Config) (keys KeySource, issuer string, err error) {
	if rc == nil || rc.Host == "" {
		return nil, "", errors.New("discover the apiserver's token issuer: no apiserver host")
	}
	u, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return nil, "", fmt.Errorf("discover the token issuer of %s: %w", rc.Host, err)
	}
	client, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, "", fmt.Errorf("discover the token issuer of %s: %w", rc.Host, err)
	}
	d := &discoveryKeys{client: client, base: strings.TrimRight(u.String(), "/")}
	doc, err := d.discover(ctx)
	if err != nil {
		return nil, "", err
	}
	return d, doc.Issuer, nil
}

// Keys reads the discovery document, then the key set it points to.
func (d *discoveryKeys) Keys(ctx context.Context) ([]byte, error) {
	doc, err := d.discover(ctx)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || u.Path == "" {
		return nil, fmt.Errorf("the discovery document at %s names no key set path (jwks_uri %q)", d.base+discoveryPath, doc.JWKSURI)
	}
	path := u.EscapedPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return d.get(ctx, path)
}

// discover reads the discovery document, which must name an issuer and a key set.
func (d *discoveryKeys) discover(ctx context.Context) (discovery, error) {
	raw, err := d.get(ctx, discoveryPath)
	if err != nil {
		return discovery{}, err
	}
	var doc discovery
	if err := json.Unmarshal(raw, &doc); err != nil {
		return discovery{}, fmt.Errorf("read the discovery document at %s: %w", d.base+discoveryPath, err)
	}
	if doc.Issuer == "" || doc.JWKSURI == "" {
		return discovery{}, fmt.Errorf("the discovery document at %s names no issuer or no jwks_uri", d.base+discoveryPath)
	}
	return doc, nil
}

// get reads the JSON document at path of the base URL.
func (d *discoveryKeys) get(ctx context.Context, path string) ([]byte, error) {
	u := d.base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, body)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("GET %s: more than %d bytes", u, maxDocumentSize)
	}
	return body, nil
}
