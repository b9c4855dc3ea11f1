package dev

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/ksaga/ksaga/internal/devoidc"
)

// ingress is the one HTTP handler of `ksaga dev`, like a cluster's ingress:
//
//   - Host <svc>.<ns>.localhost[:port] → reverse proxy to that function's
//     process (HTTP/2 cleartext for a port named h2c, so gRPC works);
//     an unknown service → 404;
//   - any other Host: GET / → a text index, GET /readyz → 200 once every
//     function is ready (503 before and while draining), the OIDC issuer's
//     discovery document and keys with sender identity on, anything else →
//     the broker ingress (POST /<ns>/<broker>), or 503 while draining.
type ingress struct {
	log      *slog.Logger
	broker   http.Handler
	metrics  http.Handler // GET /metrics: the broker's and the saga gauges
	oidc     http.Handler // the OIDC issuer's discovery and keys; nil without sender identity
	services map[types.NamespacedName]*route
	index    func(w io.Writer)
	ready    atomic.Bool
	// draining is set at shutdown: the broker ingress stops accepting events
	// (503, which senders retry) while the functions stay reachable, so that
	// in-flight deliveries can finish.
	draining atomic.Bool
}

// route is the proxy of one function.
type route struct {
	fn    *function
	proxy *httputil.ReverseProxy
}

// newIngress builds the handler for fs; broker serves the broker ingress
// and index writes the index page.
func newIngress(log *slog.Logger, fs []*function, broker http.Handler, index func(io.Writer)) *ingress {
	in := &ingress{log: log, broker: broker, index: index, services: make(map[types.NamespacedName]*route, len(fs))}
	for _, f := range fs {
		in.services[f.nn] = &route{fn: f, proxy: newProxy(log, f)}
	}
	return in
}

// newProxy returns a reverse proxy to f that keeps the request's Host, as
// Knative's ingress does, and speaks HTTP/2 cleartext to an h2c port.
func newProxy(log *slog.Logger, f *function) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: f.addr()}
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	if f.h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: t,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			st := f.status()
			log.Warn("ingress: function unreachable", "service", f.nn.String(), "state", st.State, "error", err)
			// Like Knative's activator when no pod can take the request.
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("ksaga dev: service %s is not reachable (%s): %v", f.nn, st.State, err), http.StatusServiceUnavailable)
		},
	}
}

// ServeHTTP implements http.Handler.
func (in *ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if nn, ok := serviceHost(r.Host); ok {
		rt := in.services[nn]
		if rt == nil {
			http.Error(w, fmt.Sprintf("ksaga dev: no Knative Service %s (GET / on localhost lists them)", nn), http.StatusNotFound)
			return
		}
		rt.proxy.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		in.index(w)
	case strings.HasPrefix(r.URL.Path, "/debug/pprof/") && pprofHandler != nil:
		pprofHandler.ServeHTTP(w, r)
	case in.oidc != nil && r.Method == http.MethodGet && (r.URL.Path == devoidc.DiscoveryPath || r.URL.Path == devoidc.JWKSPath):
		in.oidc.ServeHTTP(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/metrics" && in.metrics != nil:
		in.metrics.ServeHTTP(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/readyz":
		switch {
		case in.draining.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !in.ready.Load():
			http.Error(w, "starting", http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ready\n")
		}
	case in.draining.Load():
		w.Header().Set("Retry-After", "5")
		http.Error(w, "ksaga dev is shutting down", http.StatusServiceUnavailable)
	default:
		in.broker.ServeHTTP(w, r)
	}
}

// serviceHost parses a Host header of the form <svc>.<ns>.localhost with an
// optional port and trailing dot.
func serviceHost(host string) (types.NamespacedName, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = normalizeHost(host)
	rest, ok := strings.CutSuffix(host, ".localhost")
	if !ok {
		return types.NamespacedName{}, false
	}
	name, ns, ok := strings.Cut(rest, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}

// dialer maps the dev URLs to processes: <svc>.<ns>.localhost on the
// ingress port goes straight to that function's own port (looked up on every
// dial), any other localhost or *.localhost name to 127.0.0.1, anything else
// is dialled as usual. It lets the Broker deliver to http://<svc>.<ns>.localhost:<port>
// (Knative-like URLs, in logs and knativeerrordest) without a proxy hop.
type dialer struct {
	port   int
	lookup func(types.NamespacedName) (addr string, ok bool)
	d      net.Dialer
}

// DialContext implements DialFunc.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		h := normalizeHost(host)
		if nn, ok := serviceHost(h); ok && port == fmt.Sprint(d.port) {
			if a, ok := d.lookup(nn); ok {
				return d.d.DialContext(ctx, network, a)
			}
		}
		if h == "localhost" || strings.HasSuffix(h, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	return d.d.DialContext(ctx, network, addr)
}

// writeIndex writes the text index of GET /.
func writeIndex(w io.Writer, rt *runtimeInfo) {
	var b strings.Builder
	fmt.Fprintf(&b, "ksaga dev\n\nmode:    %s\nbroker:  %s\nredis:   %s\n", rt.mode, rt.brokerClass, rt.redis)
	b.WriteString("\nbrokers (POST CloudEvents here):\n")
	for _, br := range rt.brokers {
		fmt.Fprintf(&b, "  %-28s %s  (class %s, %d triggers)\n", br.nn, br.url, br.class, br.triggers)
	}
	b.WriteString("\nservices:\n")
	fs := append([]*function(nil), rt.functions...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].nn.String() < fs[j].nn.String() })
	for _, f := range fs {
		st := f.status()
		proto := "http"
		if f.h2c {
			proto = "h2c"
		}
		fmt.Fprintf(&b, "  %-28s %-40s %s  pid %d, port %d, %s, restarts %d\n", f.nn, f.url, proto, st.PID, f.port, st.State, st.Restarts)
	}
	_, _ = io.WriteString(w, b.String())
}
