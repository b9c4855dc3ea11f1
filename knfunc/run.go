package knfunc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Env is what a function's setup gets: its config and ready-made clients.
type Env struct {
	Config  Config
	Getenv  func(string) string // for the function's own settings
	Redis   redis.UniversalClient
	Logger  *slog.Logger
	Sink    *Sink              // nil without K_SINK
	Metrics *telemetry.Metrics // served at GET /metrics; register the function's own collectors here
	Tracing telemetry.Tracing  // from OTEL_*; a no-op provider without an endpoint
}

// NewStore returns a saga store on the function's Redis with the given
// effects, its scripts loaded (a load failure is only logged: scripts are
// loaded again on first use).
func (e *Env) NewStore(ctx context.Context, effects ...saga.EffectScript) (*redisstore.Store, error) {
	s, err := redisstore.New(e.Redis, redisstore.Options{Retention: e.Config.Retention, Effects: effects})
	if err != nil {
		return nil, err
	}
	if err := s.Load(ctx); err != nil {
		e.Logger.Warn("could not load scripts at start; they will load on first use", "error", err.Error())
	}
	return s, nil
}

// Function is what a setup returns: the step and, optionally, more routes.
type Function struct {
	// Step serves CloudEvents POSTed to "/". Nil for a function without one.
	Step saga.Step
	// Routes adds handlers to the function's mux (e.g. "GET /orders/{id}").
	Routes map[string]http.Handler
	// Handler, if set, serves everything the mux does not match (e.g. gRPC).
	Handler http.Handler
	// HTTP2 serves h2c too (gRPC on a port named h2c).
	HTTP2 bool
	// Close is called after the server has drained.
	Close func() error
}

// Setup builds a function from its environment.
type Setup func(ctx context.Context, env *Env) (*Function, error)

// Run is a function's whole life: read the config from getenv, log JSON to
// stdout, connect Redis, build the function with setup, serve until ctx is
// cancelled (SIGTERM), drain, and clean up. A function's run calls it.
func Run(ctx context.Context, getenv func(string) string, stdout io.Writer, setup Setup) error {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	logger := telemetry.NewLogger(stdout, cfg.LogLevel).With("service", cfg.Service)
	// go-redis logs through a process-wide logger (plain text on stderr by
	// default); a function is one process, so route it into the JSON log.
	redis.SetLogger(redisLogger{logger})
	rdb, err := redisstore.NewClient(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer func() {
		if err := rdb.Close(); err != nil {
			logger.Warn("close redis", "error", err.Error())
		}
	}()
	tracing := telemetry.NewTracing(ctx, cfg.Service, getenv, logger)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(sctx); err != nil {
			logger.Warn("flush traces", "error", err.Error())
		}
	}()
	env := &Env{Config: cfg, Getenv: getenv, Redis: rdb, Logger: logger, Metrics: telemetry.NewMetrics(), Tracing: tracing}
	if cfg.Sink != "" {
		env.Sink = NewSink(cfg.Sink, cfg.CEOverrides)
		env.Sink.Token = cfg.SinkToken // the SinkBinding's OIDC token, if any
	}
	fn, err := setup(ctx, env)
	if err != nil {
		return fmt.Errorf("set up %s: %w", cfg.Service, err)
	}
	if fn.Close != nil {
		defer func() {
			if err := fn.Close(); err != nil {
				logger.Error("close", "error", err.Error())
			}
		}()
	}

	health := NewHealth(func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("GET /metrics", env.Metrics.Handler())
	registerPprof(mux)
	for pattern, h := range fn.Routes {
		mux.Handle(pattern, h)
	}
	if fn.Step != nil {
		step := fn.Step
		if cfg.FaultInjection {
			logger.Warn("fault injection is on (KSAGA_FAULT_INJECTION): events fail when " + FaultKey(cfg.Service, "<type>") + " says so")
			step = WithFaults(step, rdb, cfg.Service)
		}
		obs := &telemetry.StepObserver{Service: cfg.Service, Metrics: env.Metrics, Tracer: tracing.Provider.Tracer("github.com/ksaga/ksaga/knfunc")}
		// metrics label the event types the step declares, "other" for the rest
		if h, ok := fn.Step.(interface{ Handles(string) bool }); ok {
			obs.Known = h.Handles
		}
		ce, err := RequireToken(NewHandler(step, HandlerOptions{Logger: logger, Overrides: cfg.CEOverrides, MaxBodyBytes: cfg.MaxBodyBytes, Observer: obs}), cfg.OIDC, logger)
		if err != nil {
			return err
		}
		mux.Handle("/{$}", ce)
	}
	if fn.Handler != nil {
		mux.Handle("/", fn.Handler)
	}
	logger.Info("starting", "revision", cfg.Revision, "sink", cfg.Sink)

	serveCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		<-ctx.Done()
		health.Drain()
		stop()
	}()
	return Serve(serveCtx, cfg.ListenAddress, mux, ServeOptions{Logger: logger, ShutdownTimeout: cfg.ShutdownTimeout, HTTP2: fn.HTTP2})
}

// redisLogger adapts go-redis's internal logging to slog.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, "redis: "+strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// Main is a function's main: it runs run with a context cancelled on
// SIGTERM or SIGINT (how Knative stops a container), os.Getenv and
// os.Stdout, and exits with status 1 and the error on stderr if run fails.
// A function's run stays the testable entry point.
func Main(run func(ctx context.Context, getenv func(string) string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
}
