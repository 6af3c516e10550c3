package main

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	r := routes{}
	for _, v := range []string{"broker-ingress.knative-eventing.svc.cluster.local=18601", ".svc.cluster.local=18603", ".cluster.local=1"} {
		if err := r.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	for host, want := range map[string]int{
		"broker-ingress.knative-eventing.svc.cluster.local":    18601,
		"Broker-Ingress.knative-eventing.svc.cluster.local:80": 18601,
		"podguard-kne-trigger-kn-channel.ns.svc.cluster.local": 18603, // the longest suffix wins
		"x.cluster.local.": 1,
		"example.com":      0,
	} {
		if got := r.lookup(host); got != want {
			t.Errorf("%s: %d, want %d", host, got, want)
		}
	}
	for _, bad := range []string{"nohost", "a=0", "a=x", "=80"} {
		if err := r.Set(bad); err == nil {
			t.Errorf("route %q accepted", bad)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := run("0.0.0.0:0", routes{".svc.cluster.local": 1}, log)
	if err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Fatalf("listening on all interfaces: %v", err)
	}
}

// TestTunnel: an HTTPS request through the proxy for a routed name reaches the local
// server of its route, TLS end to end.
func TestTunnel(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "discovery for "+r.Host)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	table := routes{}
	if err := table.Set("kubernetes.default.svc=" + u.Port()); err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(newHandler(table, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get("https://kubernetes.default.svc/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "discovery for kubernetes.default.svc" {
		t.Fatalf("through the tunnel: %d %q", resp.StatusCode, b)
	}
	if _, err := c.Get("https://elsewhere.example/"); err == nil {
		t.Fatal("a tunnel to a host with no route was opened")
	}
}
