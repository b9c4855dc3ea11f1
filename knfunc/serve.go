package knfunc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// ServeOptions configure Serve.
type ServeOptions struct {
	Logger          *slog.Logger
	ShutdownTimeout time.Duration // drain limit after ctx is done (default 30s)
	// HTTP2 also serves HTTP/2 without TLS (h2c), as a Knative Service port
	// named "h2c" expects (gRPC).
	HTTP2 bool
	// OnListen is called with the bound address (useful with port 0).
	OnListen func(addr net.Addr)
}

// Serve listens on addr and serves h until ctx is done, then stops accepting,
// lets in-flight requests finish within ShutdownTimeout and returns.
func Serve(ctx context.Context, addr string, h http.Handler, o ServeOptions) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
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
