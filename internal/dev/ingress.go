package dev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/devscale"
)

// ingress is the one HTTP handler of `ksaga dev`, like a cluster's ingress:
//
//   - Host <svc>.<ns>.localhost[:port] → reverse proxy to a replica of that
//     function, through its Pool (held while a replica starts or while every
//     one is at its containerConcurrency; HTTP/2 cleartext for a port named
//     h2c, so gRPC works); an unknown service → 404;
//   - any other Host: GET / → a text index, GET /.ksaga/services → the
//     services and their replicas as JSON, GET /readyz → 200 once every
//     function is ready (503 before and while draining), GET /metrics →
//     ksaga dev's metrics, the OIDC issuer's discovery document and keys
//     with sender identity on, POST /.ksaga/pingsources/<ns>/<name> → fire
//     that PingSource now (dev only; 503 until ready), anything else → the
//     broker ingress (POST /<ns>/<broker>), or 503 while draining.
//
// A request body must arrive within bodyTimeout of the request's headers
// (see guardBody), except for gRPC and Connect streams.
type ingress struct {
	log         *slog.Logger
	broker      http.Handler
	metrics     http.Handler // GET /metrics: the broker's and the saga gauges
	oidc        http.Handler // the OIDC issuer's discovery and keys; nil without sender identity
	services    map[types.NamespacedName]*route
	index       func(w io.Writer)
	status      func() any             // GET /.ksaga/services
	pings       atomic.Pointer[pinger] // set once the PingSources run
	bodyTimeout time.Duration
	ready       atomic.Bool
	// draining is set at shutdown: the broker ingress stops accepting events
	// (503, which senders retry) while the functions stay reachable, so that
	// in-flight deliveries can finish.
	draining atomic.Bool
}

// Limits of the ingress server (documented in the package doc).
const (
	// ReadHeaderTimeout bounds the arrival of a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// BodyTimeout bounds the arrival of a request's body, from the end of
	// its headers, except for gRPC and Connect streams.
	BodyTimeout = 10 * time.Second
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout = 120 * time.Second
)

// ServicesPath serves the services and their replicas as JSON.
const ServicesPath = "/.ksaga/services"

// route is the proxy of one function.
type route struct {
	fn    *function
	proxy *httputil.ReverseProxy
}

// newIngress builds the handler for fs; broker serves the broker ingress
// and index writes the index page.
func newIngress(log *slog.Logger, fs []*function, broker http.Handler, index func(io.Writer)) *ingress {
	in := &ingress{log: log, broker: broker, index: index, bodyTimeout: BodyTimeout,
		services: make(map[types.NamespacedName]*route, len(fs))}
	for _, f := range fs {
		in.services[f.nn] = &route{fn: f, proxy: newProxy(log, f)}
	}
	return in
}

// newProxy returns a reverse proxy to f's replicas that keeps the request's
// Host, as Knative's ingress does, and speaks HTTP/2 cleartext to an h2c
// port. ReverseProxy flushes streamed responses (no Content-Length: gRPC)
// and server-sent events as they come.
func newProxy(log *slog.Logger, f *function) *httputil.ReverseProxy {
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
	target := &url.URL{Scheme: "http", Host: f.nn.Name + "." + f.nn.Namespace + ".replica"} // the host is the replica's, set per request
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport: &poolTransport{pool: f.pool, base: t},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// A body cut by its deadline can also cancel the request's
			// context: check it first.
			if g := guardOf(r.Context()); g != nil && g.timedOut.Load() {
				w.Header().Set("Connection", "close")
				http.Error(w, "ksaga dev: "+g.err().Error(), http.StatusRequestTimeout)
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			var held *heldError
			if errors.As(err, &held) {
				// Like Knative's activator when no pod can take the request.
				log.Warn("ingress: request not placed", "service", f.nn.String(), "error", held.err)
			} else {
				log.Warn("ingress: function unreachable", "service", f.nn.String(), "error", err)
			}
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("ksaga dev: service %s is not reachable: %v", f.nn, err), http.StatusServiceUnavailable)
		},
	}
}

// heldError is a request the Pool could not place on a replica.
type heldError struct{ err error }

func (e *heldError) Error() string { return e.err.Error() }
func (e *heldError) Unwrap() error { return e.err }

// poolTransport sends each request to a replica chosen by the Pool, and
// gives the replica's slot back when the response has been read to its end
// (or closed): a stream counts as one request in flight for its whole life,
// as it does for Knative's queue-proxy.
type poolTransport struct {
	pool *devscale.Pool
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *poolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	lease, err := t.pool.Acquire(req.Context())
	if err != nil {
		return nil, &heldError{err: err}
	}
	out := *req
	u := *req.URL
	u.Host = lease.Addr()
	out.URL = &u
	resp, err := t.base.RoundTrip(&out)
	in := guardOf(req.Context())
	if in != nil && in.timedOut.Load() {
		// The function may have answered a request whose body was cut: the
		// client gets the ingress's 408, not an answer to half a request.
		if err == nil {
			_ = resp.Body.Close()
		}
		resp, err = nil, in.err()
	}
	if err != nil {
		lease.Release()
		return nil, err
	}
	b := &leasedBody{ReadCloser: resp.Body, lease: lease, in: in}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection: ReverseProxy needs a writable body.
		if rw, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = &leasedConn{leasedBody: b, w: rw}
			return resp, nil
		}
	}
	resp.Body = b
	return resp, nil
}

// leasedBody is a response body holding a replica's slot until it ends.
//
// When the function's response ends before the client has finished its
// request body (a gRPC server ending a bidi stream, an error answered
// early), the read of the rest of the request body is interrupted: the
// HTTP/2 transport waits for its request body writer before closing the
// response, and that writer would wait for the client, which waits for the
// response to end — the stream would never end.
type leasedBody struct {
	io.ReadCloser
	lease *devscale.Lease
	in    *guardedBody // the inbound request's body, or nil
	once  sync.Once
}

func (b *leasedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *leasedBody) Close() error {
	b.end()
	err := b.ReadCloser.Close()
	b.lease.Release()
	return err
}

func (b *leasedBody) end() {
	b.once.Do(func() {
		if b.in != nil {
			b.in.interrupt()
		}
	})
}

// leasedConn is the body of an upgraded connection.
type leasedConn struct {
	*leasedBody
	w io.Writer
}

func (c *leasedConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// errBodyTimeout: the request body did not arrive within the body timeout.
var errBodyTimeout = errors.New("request body not received in time")

// guardedBody bounds the time a request body may take to arrive, with the
// connection's (or HTTP/2 stream's) read deadline: set when the handler
// starts, cleared once the body has been read to its end (so that a long
// response, server-sent events included, is not cut), and set in the past to
// interrupt the read of a body nobody needs any more (interrupt). Deadlines
// are only changed while the handler runs.
type guardedBody struct {
	io.ReadCloser
	rc          *http.ResponseController
	timeout     time.Duration // 0: no deadline (a stream)
	mu          sync.Mutex
	done        bool // read to its end, or the handler returned
	interrupted atomic.Bool
	timedOut    atomic.Bool
	eof         atomic.Bool // read to its end
}

// err is the error of a body that did not arrive in time.
func (g *guardedBody) err() error {
	return fmt.Errorf("%w: %s after the headers", errBodyTimeout, g.timeout)
}

type guardKey struct{}

func guardOf(ctx context.Context) *guardedBody {
	g, _ := ctx.Value(guardKey{}).(*guardedBody)
	return g
}

// guardBody wraps r's body (if it has one) and returns the request to serve
// and the function to call when the handler returns. A gRPC or Connect
// stream gets no deadline: its body may rightly last as long as the call.
func (in *ingress) guardBody(w http.ResponseWriter, r *http.Request) (*http.Request, func()) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return r, func() {}
	}
	g := &guardedBody{ReadCloser: r.Body, rc: http.NewResponseController(w)}
	if !isStream(r) && in.bodyTimeout > 0 {
		g.timeout = in.bodyTimeout
		_ = g.rc.SetReadDeadline(time.Now().Add(in.bodyTimeout))
	}
	r = r.WithContext(context.WithValue(r.Context(), guardKey{}, g))
	r.Body = g
	return r, func() {
		g.mu.Lock()
		g.done = true
		g.mu.Unlock()
	}
}

// isStream reports a gRPC or Connect streaming request.
func isStream(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// Read reads the body. Its end sticks: once it has said io.EOF, it says so
// again without reading the server's body, which the server may have
// closed meanwhile (an HTTP/1 server consumes and closes the rest of a
// request body when the response starts). The proxy's transport reads once
// more after the last byte of a body with a length, to check that it
// ended; that read failing on a closed body cut the function's response.
func (g *guardedBody) Read(p []byte) (int, error) {
	if g.eof.Load() {
		return 0, io.EOF
	}
	n, err := g.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		g.eof.Store(true)
		g.mu.Lock()
		if !g.done {
			g.done = true
			if g.timeout > 0 {
				_ = g.rc.SetReadDeadline(time.Time{})
			}
		}
		g.mu.Unlock()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && g.timeout > 0 && !g.interrupted.Load():
		g.timedOut.Store(true)
		err = fmt.Errorf("%w: %w", g.err(), err)
	}
	return n, err
}

// interrupt makes a pending or later read of the body fail at once, unless
// it was read to its end.
func (g *guardedBody) interrupt() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		g.done = true
		g.interrupted.Store(true) // not a timeout: nobody wants the rest
		_ = g.rc.SetReadDeadline(time.Unix(1, 0))
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
		r, done := in.guardBody(w, r)
		defer done()
		rt.proxy.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		in.index(w)
	case r.Method == http.MethodGet && r.URL.Path == ServicesPath && in.status != nil:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(in.status())
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
	case strings.HasPrefix(r.URL.Path, PingSourcesPath):
		p := in.pings.Load()
		if p == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "ksaga dev is starting: PingSources run once every function is ready", http.StatusServiceUnavailable)
			return
		}
		p.ServeHTTP(w, r)
	default:
		r, done := in.guardBody(w, r)
		defer done()
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

// dialer dials the dev URLs: localhost and any *.localhost name to
// 127.0.0.1 (http://<svc>.<ns>.localhost:<port> is the ingress, which routes
// by Host through the service's Pool), anything else as usual.
type dialer struct {
	d net.Dialer
}

// DialContext implements DialFunc.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if h := normalizeHost(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	return d.d.DialContext(ctx, network, addr)
}
