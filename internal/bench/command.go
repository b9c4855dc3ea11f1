package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUsage marks a command-line mistake (exit status 2): errors.Is(err,
// ErrUsage) holds for the errors Command returns for bad flags.
var ErrUsage = errors.New("usage error")

// usageError is a command-line mistake; it is ErrUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: "bench: " + fmt.Sprintf(format, args...)}
}

const usage = `Usage: ksaga bench [flags]

Measures the reference order saga through the real stack — ksaga dev (the
broker and its ingress), every function process, and a redis-server the
bench starts on a free port — and, in the same run, this machine's floor for
the same hops (a plain sdk-go CloudEvents receiver, and one doing a single
EVALSHA per event), function cold starts, idle RSS, binary sizes and the
Redis memory a finished saga keeps. Run it from the project folder (make
bench does). Results: docs/benchmarks/results/latest.{json,md}, a
timestamped copy of each, and with --sweep a throughput/latency plot (SVG);
docs/benchmarks/README.md explains the method and the targets. The markdown
report is printed to stdout; progress goes to stderr.

Phases: settle (1 s, not measured), unloaded (1 in flight), loaded
(--inflight) then floor reply and floor evalsha, --rounds times; open loop
(--rate), [sweep], Redis attribution (MONITOR, not timed), memory, cold
start, from zero. Each
measured phase waits (at most --quiet-wait) for a quiet 1-s window first and
records whether it found one. The saga phases run ksaga dev with
--scale=always-on (one process per function, as earlier runs); the from-zero
phase runs another ksaga dev with Knative's autoscaling and a short window
(--from-zero-window): each of its sagas starts when every step function that
may scale to zero has no process, and is followed by warm ones.

Flags:
`

// Command is `ksaga bench`. ksaga is the ksaga binary to run `ksaga dev`
// and the floor servers with (the running executable in the CLI).
func Command(ctx context.Context, args []string, ksaga string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ksaga bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var (
		cfg                       Config
		mix, sweepLevels, seedStr string
		sweep, noFloor, noUnload  bool
	)
	fs.StringVar(&cfg.Mode, "mode", "choreography", "the saga mode: choreography or orchestration (triggers/<mode>)")
	fs.IntVar(&cfg.Inflight, "inflight", DefaultInflight, "sagas in flight in the loaded closed-loop phase (and the floor's requests in flight)")
	fs.DurationVar(&cfg.Duration, "duration", DefaultDuration, "measured window of every phase")
	fs.DurationVar(&cfg.Warmup, "warmup", DefaultWarmup, "warm-up before every measured window")
	fs.Float64Var(&cfg.Rate, "rate", DefaultRate, "open-loop arrival rate in sagas/s (0 skips the open-loop phase)")
	fs.StringVar(&mix, "mix", formatMix(OrderSaga.Mix), "weights of the kinds of saga, in order: "+strings.Join(OrderSaga.kindNames(), ", "))
	fs.BoolVar(&cfg.RedisACL, "redis-acl", true, "every function connects to Redis as its own ACL user (ksaga dev --redis-acl)")
	fs.BoolVar(&cfg.OIDC, "oidc", false, "sender identity in ksaga dev (--oidc: tokens on every delivery, verified by the functions; the EventPolicies of policies/ at the broker); off by default, as in a cluster without authentication-oidc")
	fs.BoolVar(&noUnload, "no-unloaded", false, "skip the 1-in-flight phase (unloaded latency)")
	fs.BoolVar(&noFloor, "no-floor", false, "skip the floor phases")
	fs.IntVar(&cfg.FloorInflight, "floor-inflight", 0, "requests in flight for the floor (default: --inflight)")
	fs.IntVar(&cfg.Rounds, "rounds", DefaultRounds, "rounds of the loaded phase and the two floor phases; the floor share and the broker ratio are judged on the median round")
	fs.IntVar(&cfg.ColdStartRuns, "coldstart-runs", DefaultColdStartRuns, "cold starts per function (0 skips; median reported)")
	fs.IntVar(&cfg.FromZeroRuns, "from-zero-runs", DefaultFromZeroRuns, "sagas started with every step function at zero (0 skips the from-zero phase)")
	fs.DurationVar(&cfg.FromZeroWindow, "from-zero-window", DefaultFromZeroWindow, "ksaga dev's --scale-window in the from-zero phase (how soon functions go back to zero)")
	fs.IntVar(&cfg.AttributionSagas, "attribution-sagas", DefaultAttributionSagas, "sagas run under MONITOR to attribute Redis commands to processes (0 skips)")
	fs.BoolVar(&sweep, "sweep", false, "also run a sweep of in-flight levels and plot throughput vs latency (SVG)")
	fs.StringVar(&sweepLevels, "sweep-levels", "1,2,4,8,16,32,64", "in-flight levels of --sweep")
	fs.StringVar(&cfg.AOF, "aof", "off", "redis-server persistence: off (as the floors were measured), everysec or always (AOF)")
	fs.IntVar(&cfg.RedisMasters, "redis-masters", 0, "0: one redis-server; N: a Redis Cluster of N masters instead (saga phases, memory and attribution only)")
	fs.StringVar(&cfg.Out, "out", DefaultOut, "results folder (empty: write nothing)")
	fs.StringVar(&cfg.Dir, "dir", ".", "the project folder (brokers/, triggers/, manifests/, functions/)")
	fs.DurationVar(&cfg.QuietWait, "quiet-wait", DefaultQuietWait, "longest wait for a quiet 1-s window before each phase")
	fs.Float64Var(&cfg.QuietIdle, "quiet-idle", DefaultQuietIdle, "idle percentage that makes a 1-s window quiet")
	fs.DurationVar(&cfg.SagaTimeout, "saga-timeout", DefaultSagaTimeout, "a saga without its terminal event after this is an error")
	fs.StringVar(&seedStr, "rand-seed", "1", "seed of the saga-kind choice")
	fs.BoolVar(&cfg.Perf, "perf", false, "profile ksaga dev, redis-server and the functions with Linux perf during the loaded window (writes perf-<process>.txt to --out)")
	fs.StringVar(&cfg.Ksaga, "ksaga", ksaga, "the ksaga `binary` that runs ksaga dev and the floor servers")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.Mix, err = parseMix(mix, OrderSaga); err != nil {
		return usagef("--mix: %v", err)
	}
	if cfg.Seed, err = strconv.ParseUint(seedStr, 10, 64); err != nil {
		return usagef("--rand-seed %q: want an unsigned integer", seedStr)
	}
	if sweep {
		if cfg.Sweep, err = parseLevels(sweepLevels); err != nil {
			return usagef("--sweep-levels: %v", err)
		}
	}
	if cfg.Inflight <= 0 || cfg.Duration <= 0 || cfg.Rate < 0 || cfg.ColdStartRuns < 0 || cfg.Warmup < 0 || cfg.FromZeroRuns < 0 {
		return usagef("--inflight and --duration must be positive; --rate, --warmup, --coldstart-runs and --from-zero-runs not negative")
	}
	if cfg.FromZeroWindow < time.Second {
		return usagef("--from-zero-window %s: want at least 1s", cfg.FromZeroWindow)
	}
	cfg.Unloaded, cfg.Floor = !noUnload, !noFloor
	cfg.Command = "ksaga bench"
	if len(args) > 0 {
		cfg.Command += " " + strings.Join(args, " ")
	}
	cfg.Log = stderr

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, Markdown(res)); err != nil {
		return err
	}
	if cfg.Out != "" {
		_, _ = fmt.Fprintf(stderr, "bench: wrote %s/latest.json and latest.md (and timestamped copies)\n", cfg.Out)
	}
	return nil
}

// parseMix parses the weights of the kinds of w, in order.
func parseMix(s string, w *Workload) ([]float64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != len(w.Kinds) {
		return nil, fmt.Errorf("%q: want %d numbers: %s", s, len(w.Kinds), strings.Join(w.kindNames(), ","))
	}
	m := make([]float64, len(parts))
	total := 0.0
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q: %q is not a non-negative number", s, p)
		}
		m[i] = v
		total += v
	}
	if total == 0 {
		return nil, fmt.Errorf("%q: all zero", s)
	}
	return m, nil
}

func formatMix(m []float64) string {
	parts := make([]string, len(m))
	for i, v := range m {
		parts[i] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strings.Join(parts, ",")
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for p := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}
