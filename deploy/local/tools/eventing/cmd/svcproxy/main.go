// Command svcproxy stands in for cluster DNS and kube-proxy in the local Knative mode.
//
// Knative's data plane addresses its parts by cluster names on port 80:
// broker-ingress.knative-eventing.svc.cluster.local, broker-filter.knative-eventing.svc...,
// and a <channel>-kn-channel.<namespace>.svc.cluster.local host per channel, served by the
// in-memory channel dispatcher. The ingress, filter and dispatcher run with
// HTTP_PROXY=http://127.0.0.1:<svcproxy port>: Go's HTTP client then sends every request
// for such a name here, as an absolute-URI request, and never proxies loopback addresses,
// so subscribers on 127.0.0.1 and the kube-apiserver are reached directly. svcproxy
// forwards each request to the local port its routing table names for the host (an exact
// name, or the longest matching ".suffix"), keeping the Host header, which the dispatcher
// routes on.
//
//	svcproxy -listen 127.0.0.1:18600 \
//	  -route broker-ingress.knative-eventing.svc.cluster.local=18601 \
//	  -route .svc.cluster.local=18603
//
// HTTPS goes through it as CONNECT tunnels (HTTPS_PROXY): Knative's OIDC verifier reads
// the apiserver's discovery document at https://kubernetes.default.svc, which a route
// such as kubernetes.default.svc=26443 sends to the local kube-apiserver (its serving
// certificate names kubernetes.default.svc). The tunnel carries the TLS untouched.
//
// It listens on loopback only and forwards to 127.0.0.1 only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"time"
)

// routes maps a host name (exact) or a ".suffix" to a local port.
type routes map[string]int

func (r routes) String() string { return fmt.Sprint(map[string]int(r)) }

// Set parses one host=port pair.
func (r routes) Set(v string) error {
	host, p, ok := strings.Cut(v, "=")
	port, err := strconv.Atoi(p)
	if !ok || host == "" || err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("route %q: want host=port or .suffix=port", v)
	}
	r[strings.ToLower(host)] = port
	return nil
}

// lookup returns the port of host (without its port), or 0.
func (r routes) lookup(host string) int {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if p, ok := r[host]; ok {
		return p
	}
	best, port := "", 0
	for k, p := range r {
		if strings.HasPrefix(k, ".") && strings.HasSuffix(host, k) && len(k) > len(best) {
			best, port = k, p
		}
	}
	return port
}

func main() {
	table := routes{}
	listen := flag.String("listen", "127.0.0.1:18600", "address to listen on (loopback)")
	flag.Var(table, "route", "host=port or .suffix=port (repeatable)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*listen, table, log); err != nil {
		log.Error("svcproxy", "error", err)
		os.Exit(1)
	}
}

func run(listen string, table routes, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %q: only loopback addresses", listen)
	}
	if len(table) == 0 {
		return errors.New("no -route")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("listening", "address", ln.Addr().String(), "routes", table.String())
	srv := &http.Server{Handler: newHandler(table, log), ReadHeaderTimeout: 30 * time.Second}
	return srv.Serve(ln)
}

// newHandler proxies requests for routed hosts, and tunnels CONNECTs to them.
func newHandler(table routes, log *slog.Logger) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "127.0.0.1:" + strconv.Itoa(table.lookup(pr.In.Host))
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if table.lookup(r.Host) == 0 {
			log.Warn("no route", "host", r.Host, "path", r.URL.Path)
			http.Error(w, "svcproxy: no route for host "+r.Host, http.StatusBadGateway)
			return
		}
		if r.Method == http.MethodConnect {
			tunnel(w, r, table.lookup(r.Host), log)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	return handler
}

// tunnel answers a CONNECT: it joins the client to 127.0.0.1:port and copies bytes both
// ways until either side closes.
func tunnel(w http.ResponseWriter, r *http.Request, port int, log *slog.Logger) {
	up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		http.Error(w, "svcproxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "svcproxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		log.Warn("tunnel", "host", r.Host, "error", err)
		return
	}
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		up.Close()
		down.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		if n := buf.Reader.Buffered(); n > 0 { // what the client sent after its CONNECT
			b, _ := buf.Reader.Peek(n)
			_, _ = up.Write(b)
		}
		_, _ = io.Copy(up, down)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		done <- struct{}{}
	}()
	<-done
	up.Close()
	down.Close()
	<-done
}
