package main

import (
	"io"
	"log/slog"
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
