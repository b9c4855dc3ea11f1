package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ksaga/ksaga/internal/dev"
	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/knfunc"
)

const devUsage = `Usage: ksaga dev [flags]

Runs the project's Knative manifests on this machine, from the project folder:
  - every Knative Service with a ko://<import path> image is built with go build
    and run as a process with the environment Knative would give it;
  - Brokers and Triggers run on the local data plane (a Redis stream per Broker,
    Knative's own filters and delivery), whatever the broker class;
  - one ingress on 127.0.0.1:PORT serves the broker at
    http://localhost:PORT/<namespace>/<broker> and each Knative Service at
    http://<service>.<namespace>.localhost:PORT (HTTP/1.1 and h2c);
  - each Service scales as Knative's autoscaler would (its autoscaling.knative.dev
    annotations and the manifests' knative-serving/config-autoscaler): scale to
    zero after the stable window, activation on the next request or event,
    scale-out above the target, containerConcurrency as a hard limit;
    http://localhost:PORT/ and /.ksaga/services show the replicas.

Without -f it loads brokers/<broker>, triggers/<mode>, manifests and, with --oidc
(the default), policies.
Without --redis-url, Redis is embedded (miniredis) and nothing is durable.
Ctrl-C stops everything (press it twice to stop at once).

Flags:
`

// devFlags are the parsed flags of `ksaga dev`.
type devFlags struct {
	cfg      dev.Config
	logLevel slog.Level
}

// parseDevFlags parses the flags of `ksaga dev` into a dev.Config (its
// Logger, writers, PassEnv and InstallDialer are left to the caller).
func parseDevFlags(args []string, stderr io.Writer) (devFlags, error) {
	fs := flag.NewFlagSet("ksaga dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), devUsage)
		fs.PrintDefaults()
	}
	var (
		paths, env stringsFlag
		d          devFlags
		level      string
	)
	fs.Var(&paths, "f", "a manifest file or folder `PATH` (repeatable, like kubectl apply -f); replaces the defaults")
	fs.IntVar(&d.cfg.Port, "port", dev.DefaultPort, "the ingress port on 127.0.0.1 (0 picks a free one)")
	fs.StringVar(&d.cfg.Mode, "mode", dev.DefaultMode, "the saga mode: the folder under triggers/ (choreography or orchestration)")
	fs.StringVar(&d.cfg.BrokerClass, "broker", dev.DefaultBrokerClass, "the broker class: the folder under brokers/ (mt-channel, kafka or rabbitmq; all run on the same local data plane)")
	fs.StringVar(&d.cfg.RedisURL, "redis-url", "", "a real Redis `URL`, e.g. redis://127.0.0.1:6379/0 (default: embedded miniredis, not durable)")
	fs.StringVar(&d.cfg.Seed, "seed", "", "a `FILE` of Redis commands to run at start, one per line (demo data, e.g. deploy/demo/seed.redis)")
	fs.BoolVar(&d.cfg.RedisACL, "redis-acl", true, "with --redis-url: every function connects as its own Redis ACL user, allowed only the saga store's keys and its own (ksaga.io/redis-keys); needs Redis 7 and ACL rights for ksaga")
	fs.BoolVar(&d.cfg.OIDC, "oidc", true, "sender identity, as Knative's authentication-oidc: tokens on every delivery, verified by the functions, and the EventPolicies of policies/ enforced by the broker; a request without a token is the outside producer "+devoidc.ProducerServiceAccount+" (docs/security.md)")
	fs.BoolVar(&d.cfg.FaultInjection, "fault-injection", false, faultInjectionUsage)
	fs.Var(rateFlag{&d.cfg.DuplicateDeliveries}, "duplicate-deliveries", "deliver this `RATE` (0 to 1) of the events twice, concurrently, to show the steps are idempotent;\n"+
		"bare --duplicate-deliveries is 1 (every event), --duplicate-deliveries=0.3 three in ten (write the =).\n"+
		"Of the identical replies (same source and id) to one event, the broker stores one (tests)")
	scale := string(dev.ScaleKnative)
	fs.StringVar(&scale, "scale", scale, "knative: scale every Service as Knative's autoscaler would; always-on: one process per Service, always, no containerConcurrency limit (benchmarks)")
	fs.DurationVar(&d.cfg.ScaleWindow, "scale-window", 0, "shorten every stable window to this `DURATION` (e.g. 6s) and cap scale-to-zero retention, grace period and scale-down delay by it, for demos and tests (default: the manifests' and Knative's, 60s)")
	fs.Var(&env, "env", "extra `KEY=VALUE` environment for every function (repeatable; wins over the manifests)")
	fs.StringVar(&level, "log-level", "info", "ksaga's own log level: debug, info, warn or error (functions use their LOG_LEVEL; --env LOG_LEVEL=debug)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return devFlags{}, err
		}
		return devFlags{}, usageError("dev: %v", err)
	}
	if fs.NArg() > 0 {
		return devFlags{}, usageError("dev: unexpected arguments %q (manifests are given with -f)", fs.Args())
	}
	if err := d.logLevel.UnmarshalText([]byte(level)); err != nil {
		return devFlags{}, usageError("dev: --log-level %q: want debug, info, warn or error", level)
	}
	switch dev.ScaleMode(scale) {
	case dev.ScaleKnative, dev.ScaleAlwaysOn:
		d.cfg.Scale = dev.ScaleMode(scale)
	default:
		return devFlags{}, usageError("dev: --scale %q: want %s or %s", scale, dev.ScaleKnative, dev.ScaleAlwaysOn)
	}
	if d.cfg.ScaleWindow < 0 || (d.cfg.ScaleWindow > 0 && d.cfg.ScaleWindow < time.Second) {
		return devFlags{}, usageError("dev: --scale-window %s: want at least 1s", d.cfg.ScaleWindow)
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return devFlags{}, usageError("dev: --env %q: want KEY=VALUE", kv)
		}
	}
	if d.cfg.Port < 0 || d.cfg.Port > 65535 {
		return devFlags{}, usageError("dev: --port %d: want 0-65535", d.cfg.Port)
	}
	d.cfg.Paths, d.cfg.Env = paths, env
	if len(paths) > 0 {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["mode"] || set["broker"] {
			_, _ = fmt.Fprintln(stderr, "ksaga dev: --mode and --broker choose default folders; with -f they are ignored")
		}
	}
	return d, nil
}

// faultInjectionUsage documents the fault key where the flag is.
var faultInjectionUsage = `set KSAGA_FAULT_INJECTION=true for every function (tests). A function then fails
the events it admits with 503 (retried, then dead-lettered; a forged or stale
event is still refused as usual) while the Redis key
  ` + knfunc.FaultKey("<service>", "<event type or command>") + `
says so, for events of that type, or carrying that saga step's command (the
same key in choreography and orchestration): an integer N > 0 fails the next N
deliveries (the key counts down), -1 fails every one until the key is deleted;
no key or 0 fails nothing. E.g. three failed payment authorisations, then success:
  redis-cli SET ` + knfunc.FaultKey("payment", "io.ksaga.payment.authorize") + ` 3`

// rateFlag is a probability flag that, given bare, means 1.
type rateFlag struct{ v *float64 }

func (f rateFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.FormatFloat(*f.v, 'g', -1, 64)
}

func (f rateFlag) Set(s string) error {
	switch s {
	case "true":
		*f.v = 1
		return nil
	case "false":
		*f.v = 0
		return nil
	}
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || !(r >= 0 && r <= 1) {
		return fmt.Errorf("want a rate from 0 to 1, e.g. 0.3")
	}
	*f.v = r
	return nil
}

// IsBoolFlag lets the flag stand alone (flag.Value's boolFlag).
func (rateFlag) IsBoolFlag() bool { return true }

// runDev is `ksaga dev`.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	d, err := parseDevFlags(args, stderr)
	if err != nil {
		return err
	}
	out, errw := &syncWriter{w: stdout}, &syncWriter{w: stderr}
	cfg := d.cfg
	cfg.Logger = slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: d.logLevel, ReplaceAttr: shortTime}))
	cfg.Stdout, cfg.Stderr, cfg.Console = out, errw, errw
	cfg.PassEnv = dev.InheritedEnv(os.Environ(), getenv)
	cfg.InstallDialer = installDialer
	if getenv("GOGC") == "" {
		// The broker allocates per event and memory is plentiful on a
		// developer's machine: GC at 5x the live heap instead of 2x costs a
		// few tens of MB and measured ~10% more sagas per second.
		debug.SetGCPercent(400)
	}

	// Ctrl-C must reach ksaga dev alone, not make or go run around it.
	defer foreground()()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second Ctrl-C, a second after the first, ends ksaga at once (the
	// signal's default action is back); on Linux the kernel then kills the
	// functions (Pdeathsig). The second of grace absorbs a signal sent twice
	// at once, as `timeout` does (to the process and to its group).
	context.AfterFunc(ctx, func() { time.AfterFunc(time.Second, stop) })
	return dev.Run(ctx, cfg)
}

// installDialer makes http.DefaultTransport dial the dev URLs
// (http://<svc>.<ns>.localhost:<port>) to the ingress on 127.0.0.1.
//
// This is the one process-global change ksaga makes, and only in `ksaga
// dev`: the Broker sends dead letters with knative.dev/eventing's
// kncloudevents dispatcher, which builds the HTTP client of every target by
// cloning http.DefaultTransport and has no other way to set a dialer. Go's
// resolver does not map *.localhost to loopback; with this dialer the URLs
// stay Knative-like in logs and in dead-letter extensions
// (knativeerrordest). Deliveries to Trigger subscribers go straight to a
// replica the service's Pool chooses.
func installDialer(d dev.DialFunc) {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t.DialContext = d
	}
}

// shortTime prints log times as 15:04:05.000.
func shortTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.String(slog.TimeKey, a.Value.Time().Format(time.TimeOnly+".000"))
	}
	return a
}
