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
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// Env is what a function's setup gets: its config and ready-made clients.
type Env struct {
	Config  Config
	Getenv  func(string) string // for the function's own settings
	Redis   redis.UniversalClient
	Store   *redisstore.Store // saga records on Redis (Config.Retention)
	Logger  *slog.Logger
	Sink    *Sink              // nil without K_SINK
	Metrics *telemetry.Metrics // served at GET /metrics; register the function's own collectors here
	Tracing telemetry.Tracing  // from OTEL_*; a no-op provider without an endpoint
}

// NewEnv returns the Env a setup gets, from getenv, on rdb, logging to
// logger, as Run builds it (with no tracing): for tests that build a
// function in process (sagatest.Kit.Step). Run builds its own.
func NewEnv(getenv func(string) string, rdb redis.UniversalClient, logger *slog.Logger) (*Env, error) {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	return newEnv(cfg, getenv, rdb, logger, telemetry.Tracing{Provider: tracenoop.NewTracerProvider(), Shutdown: func(context.Context) error { return nil }})
}

func newEnv(cfg Config, getenv func(string) string, rdb redis.UniversalClient, logger *slog.Logger, tracing telemetry.Tracing) (*Env, error) {
	store, err := redisstore.New(rdb, redisstore.Options{Retention: cfg.Retention})
	if err != nil {
		return nil, err
	}
	env := &Env{Config: cfg, Getenv: getenv, Redis: rdb, Store: store, Logger: logger, Metrics: telemetry.NewMetrics(), Tracing: tracing}
	if cfg.Sink != "" {
		env.Sink = NewSink(cfg.Sink, cfg.CEOverrides)
		env.Sink.Token = cfg.SinkToken // the SinkBinding's OIDC token, if any
	}
	return env, nil
}

// Source is the CloudEvents source of the events the function emits:
// "/ksaga/<K_SERVICE>" (or "/ksaga/function" without K_SERVICE).
func (e *Env) Source() string {
	if e.Config.Service == "" {
		return "/ksaga/function"
	}
	return "/ksaga/" + e.Config.Service
}

// Operator returns the generic operations of sagas for a function that
// serves them (ops needs no more than this Env gives): its store, its
// Broker sink (if bound), its source, and the KSAGA_SAGA_TIMEOUT and
// KSAGA_NUDGE_AFTER settings.
func (e *Env) Operator(sagas *ops.Registry) *ops.Operator {
	op := &ops.Operator{Sagas: sagas, Store: e.Store, Source: e.Source(), Logger: e.Logger,
		Timeout: e.Config.SagaTimeout, Nudge: e.Config.NudgeAfter}
	if e.Sink != nil {
		op.Sink = e.Sink
	}
	return op
}

// Step returns a Function serving one step of a saga: a saga.Participant
// running actions for def, its replies from Source, new sagas' deadlines
// from def (or KSAGA_SAGA_TIMEOUT).
func (e *Env) Step(def *saga.Definition, actions saga.Actions) (*Function, error) {
	p, err := e.Participant(def, actions)
	if err != nil {
		return nil, err
	}
	return &Function{Step: p}, nil
}

// Participant returns the saga.Participant of Step, for a function that
// serves more than one step.
func (e *Env) Participant(def *saga.Definition, actions saga.Actions) (*saga.Participant, error) {
	o := saga.ParticipantOptions{Source: e.Source(), Store: e.Store, Logger: e.Logger, Timeout: e.Config.SagaTimeout, Nudge: e.Config.NudgeAfter}
	if e.Config.FaultInjection {
		// faults fail admitted events only: forged ones are still refused
		o.Before = func(ctx context.Context, in saga.Input) error {
			return fault(ctx, e.Redis, e.Config.Service, in.Event.Type())
		}
	}
	return saga.NewParticipant(def, actions, o)
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
	env, err := newEnv(cfg, getenv, rdb, logger, tracing)
	if err != nil {
		return err
	}
	if err := env.Store.Preload(ctx); err != nil {
		logger.Warn("could not load scripts at start; they will load on first use", "error", err.Error())
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
			if _, ok := step.(*saga.Participant); !ok { // a Participant checks once it admitted an event
				step = WithFaults(step, rdb, cfg.Service)
			}
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
	var h http.Handler = jsonErrors(mux)

	serveCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		<-ctx.Done()
		health.Drain()
		stop()
	}()
	return Serve(serveCtx, cfg.ListenAddress, h, ServeOptions{Logger: logger, ShutdownTimeout: cfg.ShutdownTimeout, HTTP2: fn.HTTP2})
}

// redisLogger adapts go-redis's internal logging to slog.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, "redis: "+strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// Main is a function's main: it runs the function built by setup (Run)
// with a context cancelled on SIGTERM or SIGINT (how Knative stops a
// container), os.Getenv and os.Stdout, and exits with status 1 and the
// error on stderr if it fails. Tests call Run with setup.
func Main(setup Setup) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Getenv, os.Stdout, setup)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
}
