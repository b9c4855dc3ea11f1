package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultPort            = 8080
	DefaultMode            = "choreography"
	DefaultBrokerClass     = "mt-channel"
	DefaultReadyTimeout    = 2 * time.Minute
	DefaultShutdownTimeout = 10 * time.Second
	DefaultDrainTimeout    = 10 * time.Second
)

// Folders, under Config.Dir, that hold the default manifests.
const (
	BrokersDir   = "brokers"   // one subfolder per broker class
	TriggersDir  = "triggers"  // one subfolder per mode
	ManifestsDir = "manifests" // Knative Services, SinkBindings, ConfigMaps, Secrets
)

// ScaleMode chooses how many processes run each Knative Service.
type ScaleMode string

// Scale modes.
const (
	// ScaleKnative runs each Service as Knative's autoscaler would: its
	// initial scale, then scale to zero, activation and scale-out from the
	// load ksaga dev observes (the default).
	ScaleKnative ScaleMode = "knative"
	// ScaleAlwaysOn runs exactly one process per Service, always, with no
	// containerConcurrency limit (benchmarks comparable with earlier runs).
	ScaleAlwaysOn ScaleMode = "always-on"
)

// DialFunc dials like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config configures Run.
type Config struct {
	// Dir is the project folder: manifests are found and functions built
	// from here (default ".").
	Dir string
	// Paths are the files and folders to load (like `kubectl apply -f`). Empty
	// means DefaultPaths(Dir, BrokerClass, Mode).
	Paths []string
	// Port is the ingress port on 127.0.0.1 (default 8080; 0 picks a free one).
	Port int
	// Mode names the folder under triggers/ (default "choreography").
	Mode string
	// BrokerClass names the folder under brokers/ (default "mt-channel").
	BrokerClass string
	// RedisURL is a real Redis (redisstore.NewClient syntax); empty runs an
	// embedded, non-durable miniredis.
	RedisURL string
	// Seed is a file of Redis commands run at start (demo data; see seed).
	Seed string
	// FaultInjection sets KSAGA_FAULT_INJECTION=true for every function.
	FaultInjection bool
	// DuplicateDeliveries is the rate, 0 to 1, of the matching deliveries
	// the broker makes twice (devbroker.Config.DuplicateDeliveries).
	DuplicateDeliveries float64
	// OIDC plays a cluster with Knative's sender identity
	// (authentication-oidc): an issuer on the ingress port, tokens for the
	// Triggers and SinkBindings, functions that verify them, and a broker
	// ingress that enforces the EventPolicies (loaded from policies/ too
	// without Paths). See oidc.go.
	OIDC bool
	// RedisACL gives every function its own Redis user, allowed only its
	// own keys and the saga store's (internal/redisacl), when RedisURL is a
	// real Redis (miniredis has no ACL). See redisacl.go.
	RedisACL bool
	// Scale is ScaleKnative (default) or ScaleAlwaysOn.
	Scale ScaleMode
	// ScaleWindow, if positive, replaces every stable window and caps the
	// scale-to-zero retention, grace period and scale-down delay
	// (devscale.Override), for demos and tests.
	ScaleWindow time.Duration
	// Env is extra KEY=VALUE environment for every function; it wins over
	// everything else.
	Env []string
	// PassEnv is KEY=VALUE environment copied from ksaga's own environment
	// to every function: PATH, HOME, TMPDIR, TZ, the Go runtime variables and
	// OTEL_* (see InheritedEnv). It comes before the manifests' env, except
	// OTEL_*, which overrides it.
	PassEnv []string
	// Logger is ksaga's own log (default: discard).
	Logger *slog.Logger
	// Console receives the human-readable banner printed once everything
	// is ready: URLs and copy-paste curl commands (default: none).
	Console io.Writer
	// Stdout and Stderr receive the functions' output, each line prefixed
	// with the service name (default: discard).
	Stdout, Stderr io.Writer
	// BinDir holds the built function binaries (default
	// os.UserCacheDir()/ksaga/bin/<project>-<hash of Dir>).
	BinDir string
	// ReadyTimeout bounds the wait for every function's GET /readyz.
	ReadyTimeout time.Duration
	// ShutdownTimeout is how long a function may take to exit after SIGTERM
	// before it gets SIGKILL.
	ShutdownTimeout time.Duration
	// DrainTimeout bounds the Broker's drain of in-flight deliveries.
	DrainTimeout time.Duration
	// Backoff is the restart policy of crashed functions (default DefaultBackoff()).
	Backoff Backoff
	// InstallDialer, if set, is called once, before the Broker is created,
	// with a dialer that maps dev URLs (localhost and *.localhost) to
	// 127.0.0.1, the ingress. `ksaga dev` installs it as
	// http.DefaultTransport's DialContext, which knative.dev/eventing's
	// kncloudevents clones for every delivery target (dead letters).
	InstallDialer func(DialFunc)
}

// setDefaults fills the zero fields.
func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = "."
	}
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.BrokerClass == "" {
		c.BrokerClass = DefaultBrokerClass
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff()
	}
	if c.Scale == "" {
		c.Scale = ScaleKnative
	}
}

// validate checks the fields a person sets.
func (c *Config) validate() error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: want 0-65535", c.Port))
	}
	for _, n := range []struct{ what, v string }{{"mode", c.Mode}, {"broker class", c.BrokerClass}} {
		if strings.ContainsAny(n.v, `/\`) || n.v == "." || n.v == ".." {
			errs = append(errs, fmt.Errorf("%s %q: want a folder name", n.what, n.v))
		}
	}
	if c.Scale != ScaleKnative && c.Scale != ScaleAlwaysOn {
		errs = append(errs, fmt.Errorf("scale %q: want %s or %s", c.Scale, ScaleKnative, ScaleAlwaysOn))
	}
	if c.ScaleWindow < 0 || (c.ScaleWindow > 0 && c.ScaleWindow < time.Second) {
		errs = append(errs, fmt.Errorf("scale window %s: want at least 1s (Knative's bucket)", c.ScaleWindow))
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("env %q: want KEY=VALUE", kv))
		}
	}
	return errors.Join(errs...)
}

// DefaultPaths returns the folders `ksaga dev` loads without -f:
// brokers/<class>, triggers/<mode> and manifests under dir. It is an error if
// one is missing; the error lists the classes or modes that exist.
func DefaultPaths(dir, class, mode string) ([]string, error) {
	var errs []error
	check := func(parent, name, what string) string {
		p := filepath.Join(dir, parent, name)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		have := subfolders(filepath.Join(dir, parent))
		msg := "none"
		if len(have) > 0 {
			msg = strings.Join(have, ", ")
		}
		errs = append(errs, fmt.Errorf("%s %q: folder %s not found (%s/ has: %s)", what, name, p, parent, msg))
		return p
	}
	paths := []string{
		check(BrokersDir, class, "broker class"),
		check(TriggersDir, mode, "mode"),
	}
	m := filepath.Join(dir, ManifestsDir)
	if st, err := os.Stat(m); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("folder %s not found", m))
	}
	paths = append(paths, m)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("default manifests (run ksaga from the project folder, or pass -f): %w", err)
	}
	return paths, nil
}

// subfolders lists the folder names directly under dir, sorted.
func subfolders(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// InheritedEnv picks from environ (os.Environ's format) the variables a
// function inherits from ksaga: PATH, HOME, TMPDIR, TZ, the Go runtime
// variables (GOTRACEBACK, GODEBUG, GOMAXPROCS, GOMEMLIMIT, GOGC, GOCOVERDIR)
// and every OTEL_* variable, with their values read through getenv.
func InheritedEnv(environ []string, getenv func(string) string) []string {
	var out []string
	for _, n := range []string{"PATH", "HOME", "TMPDIR", "TZ", "GOTRACEBACK", "GODEBUG", "GOMAXPROCS", "GOMEMLIMIT", "GOGC", "GOCOVERDIR"} {
		if v := getenv(n); v != "" {
			out = append(out, n+"="+v)
		}
	}
	var otel []string
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			if v := getenv(k); v != "" {
				otel = append(otel, k+"="+v)
			}
		}
	}
	slices.Sort(otel)
	return append(out, otel...)
}
