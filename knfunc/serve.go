package knfunc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Read limits of Serve. A client that sends its headers or its body too
// slowly (one byte every few seconds, or nothing) is cut off instead of
// holding a connection, a goroutine and its buffers for as long as it
// likes. Knative's own event receivers allow 10 s for the whole request.
const (
	// DefaultReadHeaderTimeout bounds the request line and headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyReadTimeout bounds the body, counted from the end of the
	// headers (see BodyDeadline).
	DefaultBodyReadTimeout = 10 * time.Second
)

// ServeOptions configure Serve.
type ServeOptions struct {
	Logger          *slog.Logger
	ShutdownTimeout time.Duration // drain limit after ctx is done (default 30s)
	// BodyReadTimeout is how long a request body may take to arrive after
	// the headers (default DefaultBodyReadTimeout; negative: no limit, for
	// a function with long client streams).
	BodyReadTimeout time.Duration
	// HTTP2 also serves HTTP/2 without TLS (h2c), as a Knative Service port
	// named "h2c" expects (gRPC).
	HTTP2 bool
	// OnListen is called with the bound address (useful with port 0).
	OnListen func(addr net.Addr)
}

// Serve listens on addr and serves h until ctx is done, then stops accepting,
// lets in-flight requests finish within ShutdownTimeout and returns.
//
// Headers must arrive within DefaultReadHeaderTimeout and a body within
// BodyReadTimeout after them (HTTP/1.1 and h2c alike); a handler then
// sees its body read fail (NewHandler answers 408, which Knative retries).
// Idle keep-alive connections are closed after 120 s.
func Serve(ctx context.Context, addr string, h http.Handler, o ServeOptions) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	switch {
	case o.BodyReadTimeout == 0:
		h = BodyDeadline(h, DefaultBodyReadTimeout)
	case o.BodyReadTimeout > 0:
		h = BodyDeadline(h, o.BodyReadTimeout)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if o.HTTP2 {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	o.Logger.Info("listening", "addr", ln.Addr().String())
	if o.OnListen != nil {
		o.OnListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	o.Logger.Info("draining", "timeout", o.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("drain: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	o.Logger.Info("stopped")
	return nil
}

// BodyDeadline returns h with a read deadline on every request body: the
// whole body must arrive within d of the handler's start (just after the
// headers). When the body has been read to its end the deadline is lifted,
// so a handler may take as long as it needs to answer; a body that is
// still arriving at the deadline makes the handler's next read fail with
// an error wrapping os.ErrDeadlineExceeded. It uses
// http.ResponseController, so it works on HTTP/1.1 and HTTP/2. Requests
// without a body are served as they are, and so are gRPC and Connect
// streams (content type application/grpc…, application/connect+…), whose
// body may rightly last as long as the call: the same rule as the ksaga
// dev ingress.
func BodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || isStream(r) {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			h.ServeHTTP(w, r) // a ResponseWriter without deadlines (a test recorder)
			return
		}
		b := &deadlineBody{ReadCloser: r.Body, rc: rc}
		if r.ProtoMajor == 1 {
			b.header = w.Header()
		}
		r.Body = b
		h.ServeHTTP(w, r)
	})
}

// isStream reports a gRPC or Connect streaming request.
func isStream(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// deadlineBody lifts the read deadline once the body is read to its end:
// on HTTP/1.1 the server then reads the connection in the background to
// notice a client that goes away, and a deadline passing there would
// cancel the request's context. When the deadline cuts a body off, an
// HTTP/1.1 answer carries "Connection: close": the rest of the body would
// otherwise be read as the next request (net/http keeps the connection
// when discarding the rest fails).
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	header http.Header // HTTP/1.x only
	done   bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case b.done:
	case errors.Is(err, io.EOF):
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.done = true
		if b.header != nil {
			b.header.Set("Connection", "close")
		}
	}
	return n, err
}

// Health serves liveness and readiness: /healthz and /readyz (plus func's
// /health/liveness and /health/readiness). Readiness fails while draining or
// when ready returns an error (e.g. Redis unreachable).
type Health struct {
	ready    func(context.Context) error
	draining atomic.Bool
}

// NewHealth returns a Health; ready may be nil.
func NewHealth(ready func(context.Context) error) *Health { return &Health{ready: ready} }

// Drain marks the function as shutting down: readiness fails from now on.
func (h *Health) Drain() { h.draining.Store(true) }

// Register adds the health routes to mux.
func (h *Health) Register(mux *http.ServeMux) {
	live := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	ready := func(w http.ResponseWriter, r *http.Request) {
		if h.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if h.ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := h.ready(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /healthz", live)
	mux.HandleFunc("GET /health/liveness", live)
	mux.HandleFunc("GET /readyz", ready)
	mux.HandleFunc("GET /health/readiness", ready)
}
