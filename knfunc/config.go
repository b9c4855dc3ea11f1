// Package knfunc serves a saga.Step as a Knative function: CloudEvents over
// HTTP (binary and structured mode, via sdk-go), health endpoints, graceful
// drain on SIGTERM, the Knative container contract read from env (PORT,
// K_SERVICE, K_SINK, K_CE_OVERRIDES, ...) and Redis from REDIS_URL.
//
// It is deliberately free of knative.dev packages: a function binary stays
// small (sdk-go + go-redis) and starts in milliseconds.
//
// Limits of the HTTP server (Serve), so that a slow or stalled client
// cannot hold a connection for long: the request line and headers must
// arrive within 10 s (DefaultReadHeaderTimeout), the body within 10 s
// after them (DefaultBodyReadTimeout; a body cut off is answered 408,
// which Knative retries; gRPC and Connect streams are exempt), and at most
// KSAGA_MAX_BODY_BYTES (4 MiB; 413); an idle keep-alive connection is
// closed after 120 s.
package knfunc

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/ksaga/ksaga/telemetry"
)

// Config is the environment contract of a function, read once at start.
type Config struct {
	Port          int    // PORT: the port Knative routes to (default 8080)
	ListenAddress string // LISTEN_ADDRESS: overrides ":PORT" (e.g. 127.0.0.1:0)
	Service       string // K_SERVICE
	Revision      string // K_REVISION
	Configuration string // K_CONFIGURATION
	// Sink is K_SINK (set by a SinkBinding): where the function may send
	// events of its own, e.g. the Broker's ingress.
	Sink string
	// CEOverrides are K_CE_OVERRIDES' extensions, set on every event the
	// function emits (replies and sends).
	CEOverrides map[string]string
	// RedisURL is REDIS_URL (default redis://127.0.0.1:6379/0); see
	// redisstore.NewClient for Sentinel, Cluster, TLS and ACL forms.
	RedisURL string
	// LogLevel is LOG_LEVEL: debug, info, warn or error (default info).
	LogLevel slog.Level
	// ShutdownTimeout is KSAGA_SHUTDOWN_TIMEOUT: how long in-flight requests
	// may take to finish after SIGTERM (default 30s).
	ShutdownTimeout time.Duration
	// Retention is KSAGA_RETENTION: how long finished sagas are kept (default 24h).
	Retention time.Duration
	// SagaTimeout is KSAGA_SAGA_TIMEOUT: overrides the saga definition's
	// timeout for the sagas this function starts (default: the definition's).
	SagaTimeout time.Duration
	// NudgeAfter is KSAGA_NUDGE_AFTER: how long a saga may wait on an event
	// before the deadline sweeper sends it again (default 30s).
	NudgeAfter time.Duration
	// MaxBodyBytes is KSAGA_MAX_BODY_BYTES: larger requests get 413 (default 4 MiB).
	MaxBodyBytes int64
	// FaultInjection is KSAGA_FAULT_INJECTION=true: events fail on demand, for
	// tests (see faults.go). Never set it in production.
	FaultInjection bool
	// OIDC is the sender identity the CloudEvents route requires
	// (KSAGA_OIDC_*; see OIDCConfig). Off without KSAGA_OIDC_ISSUER.
	OIDC OIDCConfig
	// SinkToken is the bearer token the Sink sends (see SinkTokenFromEnv).
	SinkToken *TokenFile
}

// ConfigFromEnv reads the Config with getenv (os.Getenv in main, a map in tests).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Port: 8080, RedisURL: "redis://127.0.0.1:6379/0", ShutdownTimeout: 30 * time.Second,
		Retention: 24 * time.Hour, MaxBodyBytes: 4 << 20,
		Service: getenv("K_SERVICE"), Revision: getenv("K_REVISION"), Configuration: getenv("K_CONFIGURATION"),
		Sink: getenv("K_SINK"), ListenAddress: getenv("LISTEN_ADDRESS"),
	}
	var errs []error
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("PORT=%q: not a port", v))
		}
		c.Port = p
	}
	if c.ListenAddress == "" {
		c.ListenAddress = ":" + strconv.Itoa(c.Port)
	}
	if v := getenv("REDIS_URL"); v != "" {
		c.RedisURL = v
	}
	if c.Sink != "" {
		if u, err := url.Parse(c.Sink); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("K_SINK=%q: not an http(s) URL", c.Sink))
		}
	}
	if v := getenv("K_CE_OVERRIDES"); v != "" {
		var o struct {
			Extensions map[string]string `json:"extensions"`
		}
		if err := json.Unmarshal([]byte(v), &o); err != nil {
			errs = append(errs, fmt.Errorf("K_CE_OVERRIDES: %w", err))
		}
		c.CEOverrides = o.Extensions
	}
	var err error
	if c.LogLevel, err = telemetry.ParseLevel(getenv("LOG_LEVEL")); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %w", err))
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
		min  time.Duration
	}{
		{"KSAGA_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout, 0},
		// Redis expires keys in whole seconds: less would expire a saga
		// the moment it finishes.
		{"KSAGA_RETENTION", &c.Retention, time.Second},
		{"KSAGA_SAGA_TIMEOUT", &c.SagaTimeout, 0},
		{"KSAGA_NUDGE_AFTER", &c.NudgeAfter, 0},
	} {
		if v := getenv(d.name); v != "" {
			dur, err := time.ParseDuration(v)
			switch {
			case err != nil || dur <= 0:
				errs = append(errs, fmt.Errorf("%s=%q: want a positive duration like 30s", d.name, v))
				continue
			case dur < d.min:
				errs = append(errs, fmt.Errorf("%s=%q: want at least %s", d.name, v, d.min))
				continue
			}
			*d.dst = dur
		}
	}
	if v := getenv("KSAGA_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("KSAGA_MAX_BODY_BYTES=%q: want a positive number", v))
		}
		c.MaxBodyBytes = n
	}
	if v := getenv("KSAGA_FAULT_INJECTION"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("KSAGA_FAULT_INJECTION=%q: %w", v, err))
		}
		c.FaultInjection = b
	}
	if c.OIDC, err = OIDCConfigFromEnv(getenv, OIDCPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.SinkToken, err = SinkTokenFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return c, nil
}
