// Package bench is `ksaga bench`: it measures a saga (its Workload; the
// reference order saga) through the real stack — `ksaga dev` (broker +
// ingress) with its function processes and a redis-server it starts — and,
// in the same run, this machine's floor for the same hops without saga
// logic (a plain sdk-go receiver, and one doing a single EVALSHA), the
// functions' cold start and idle RSS, and the Redis memory a finished saga
// keeps. Only workload.go knows the saga. See docs/benchmarks/README.md for
// the method.
package bench

import (
	"context"
	"fmt"
	"github.com/ksaga/ksaga/internal/redisserver"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures Run. Zero fields get the defaults of `ksaga bench`.
type Config struct {
	Dir              string    // the project folder (brokers/, triggers/, manifests/, functions/)
	Ksaga            string    // the ksaga binary to run `dev` and `bench-floor-server` with
	Workload         *Workload // the saga measured (default OrderSaga)
	Mode             string    // choreography or orchestration
	OIDC             bool      // sender identity in ksaga dev (tokens, EventPolicies)
	RedisACL         bool      // every function its own Redis ACL user (ksaga dev --redis-acl)
	Inflight         int
	Duration         time.Duration
	Warmup           time.Duration
	Unloaded         bool      // run the inflight-1 phase (unloaded latency)
	Rate             float64   // open-loop sagas/s (0: no open-loop phase)
	Mix              []float64 // weights of the workload's kinds (default: the workload's)
	Floor            bool
	FloorInflight    int
	Rounds           int // loaded + floor phases, repeated; the ratio targets use the median round
	ColdStartRuns    int // 0: no cold start
	FromZeroRuns     int // sagas started with every step function at zero (0: no from-zero phase)
	FromZeroWindow   time.Duration
	Sweep            []int
	AttributionSagas int // 0: no MONITOR run
	AOF              string
	// RedisMasters > 0 runs the stack on a Redis Cluster of that many
	// masters (no replicas) instead of one redis-server: the saga phases,
	// the memory and the MONITOR attribution (on every node) only (the
	// floors, the from-zero phase and the cold starts are one-server
	// measurements).
	RedisMasters int
	Out          string // results folder ("" writes nothing)
	QuietWait    time.Duration
	QuietIdle    float64
	SagaTimeout  time.Duration
	Seed         uint64
	MemorySample int
	Perf         bool      // profile the loaded window with Linux perf
	Command      string    // the command line, for the report
	Log          io.Writer // progress (default: discard)
}

// Defaults of Config.
const (
	DefaultInflight         = 32
	DefaultDuration         = 10 * time.Second
	DefaultWarmup           = 2 * time.Second
	DefaultRate             = 1000
	DefaultColdStartRuns    = 20
	DefaultFromZeroRuns     = 5
	DefaultFromZeroWindow   = 2 * time.Second
	DefaultAttributionSagas = 300
	DefaultQuietWait        = 60 * time.Second
	DefaultQuietIdle        = 90
	DefaultSagaTimeout      = 10 * time.Second
	DefaultMemorySample     = 300
	DefaultRounds           = 3
)

// DefaultOut is the results folder of `ksaga bench`, under the project
// folder (the method and the targets are in its parent's README.md).
const DefaultOut = "docs/benchmarks/results"

// DefaultSweep are the in-flight levels of --sweep.
var DefaultSweep = []int{1, 2, 4, 8, 16, 32, 64}

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = "."
	}
	if c.Mode == "" {
		c.Mode = "choreography"
	}
	if c.Inflight <= 0 {
		c.Inflight = DefaultInflight
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Workload == nil {
		c.Workload = OrderSaga
	}
	if len(c.Mix) == 0 {
		c.Mix = c.Workload.Mix
	}
	if c.FloorInflight <= 0 {
		c.FloorInflight = c.Inflight
	}
	if c.AOF == "" {
		c.AOF = "off"
	}
	if c.QuietIdle <= 0 {
		c.QuietIdle = DefaultQuietIdle
	}
	if c.SagaTimeout <= 0 {
		c.SagaTimeout = DefaultSagaTimeout
	}
	if c.MemorySample <= 0 {
		c.MemorySample = DefaultMemorySample
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.FromZeroWindow <= 0 {
		c.FromZeroWindow = DefaultFromZeroWindow
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// proc is a process whose CPU and RSS the bench reads.
type proc struct {
	name string
	pid  int
}

// runner holds one Run's state.
type runner struct {
	cfg   Config
	w     *Workload
	res   *Result
	logMu sync.Mutex
	tmp   string
	redis *redisserver.Server
	rdb   *redis.Client
	// With --redis-masters: the cluster. nodes are every node's client (one
	// server: rdb), data the client of the saga data (one server: rdb).
	cluster *redisserver.Cluster
	nodes   []*redis.Client
	data    redis.UniversalClient
	dev     *devProcess
	trig    string // the bench Triggers' file
	drv     *driver
	procs   []proc
	self    int
	// perfFiles are the --perf reports written (nil without --perf).
	perfFiles []string
}

func (r *runner) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	_, _ = fmt.Fprintf(r.cfg.Log, "bench: "+format+"\n", args...)
}

func (r *runner) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.res.Errors = append(r.res.Errors, msg)
	r.logf("ERROR: %s", msg)
}

// Run runs the benchmark and returns its result (already written to
// cfg.Out when set). An error means the stack could not be set up; a
// phase that fails is recorded in Result.Errors instead.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	if cfg.Ksaga == "" {
		return nil, fmt.Errorf("bench: no ksaga binary to run")
	}
	if _, err := persistenceArgs(cfg.AOF); err != nil {
		return nil, err
	}
	if cfg.Mode != "choreography" && cfg.Mode != "orchestration" {
		return nil, fmt.Errorf("--mode %q: want choreography or orchestration", cfg.Mode)
	}
	w := cfg.Workload
	if len(cfg.Mix) != len(w.Kinds) {
		return nil, fmt.Errorf("bench: %d mix weights for %d kinds of saga (%s)", len(cfg.Mix), len(w.Kinds), strings.Join(w.kindNames(), ", "))
	}
	if cfg.RedisMasters > 0 {
		cfg.Floor, cfg.FromZeroRuns, cfg.ColdStartRuns = false, 0, 0
	}
	began := time.Now()
	r := &runner{cfg: cfg, w: w, self: os.Getpid(), res: &Result{Schema: 2, StartedAt: began.UTC(), Command: cfg.Command, CPUNote: w.CPUNote}}
	mix := map[string]float64{}
	for i, k := range w.Kinds {
		mix[k.Name] = cfg.Mix[i]
	}
	r.res.Settings = Settings{
		Saga: w.Def.Name, Kinds: w.kindNames(), Labels: w.kindLabels(), OIDC: cfg.OIDC, RedisACL: cfg.RedisACL,
		Mode: cfg.Mode, Inflight: cfg.Inflight, DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(),
		RatePerS: cfg.Rate, Mix: mix,
		FloorInflight: cfg.FloorInflight, ColdStartRuns: cfg.ColdStartRuns, FromZeroRuns: cfg.FromZeroRuns, AttributionSagas: cfg.AttributionSagas,
		SagaTimeoutS: cfg.SagaTimeout.Seconds(), QuietMinIdlePct: cfg.QuietIdle, QuietMaxWaitS: cfg.QuietWait.Seconds(), Seed: cfg.Seed,
	}
	var err error
	if r.tmp, err = os.MkdirTemp("", "ksaga-bench-"); err != nil {
		return nil, err
	}
	keepTmp := false
	defer func() {
		if !keepTmp {
			_ = os.RemoveAll(r.tmp)
		}
	}()
	defer r.teardown()
	if err := r.setup(ctx); err != nil {
		keepTmp = true
		return nil, fmt.Errorf("%w\n(bench files kept in %s)", err, r.tmp)
	}
	r.runPhases(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.res.TookS = round1(time.Since(began).Seconds())
	evaluate(r.res)
	if cfg.Out != "" {
		if err := write(r.res, cfg.Out); err != nil {
			return r.res, err
		}
	}
	if len(r.res.Errors) > 0 {
		keepTmp = true
		r.logf("errors occurred; ksaga dev's log is in %s", filepath.Join(r.tmp, "ksaga-dev.log"))
	}
	return r.res, nil
}

func (r *runner) setup(ctx context.Context) error {
	cfg := r.cfg
	r.res.Machine = machine()
	r.res.Tree = gitTree(cfg.Dir, cfg.Out)
	var err error
	redisURL := ""
	if cfg.RedisMasters > 0 {
		if redisURL, err = r.startCluster(ctx); err != nil {
			return err
		}
	} else {
		r.logf("redis-server (persistence: %s)", cfg.AOF)
		if r.redis, err = startRedis(ctx, r.tmp, cfg.AOF); err != nil {
			return err
		}
		r.res.Settings.Redis = redisSettingsText(cfg.AOF)
		r.rdb = redis.NewClient(&redis.Options{Addr: r.redis.Addr(), PoolSize: 4})
		r.nodes, r.data, redisURL = []*redis.Client{r.rdb}, r.rdb, r.redis.URL()
	}
	r.res.Machine.Redis = redisVersion(ctx, r.nodes[0])
	if err := r.w.Seed(ctx, r.data); err != nil {
		return err
	}
	if r.drv, err = newDriver(); err != nil {
		return err
	}
	if r.trig, err = writeTriggers(r.tmp, r.drv.receiverURL(), r.w); err != nil {
		return err
	}
	if cfg.Perf {
		if r.cfg.Ksaga, err = symbolizedKsaga(ctx, cfg.Dir, cfg.Ksaga, r.tmp); err != nil {
			return err
		}
		cfg.Ksaga = r.cfg.Ksaga
	}
	// One process per function, always, as in the runs the numbers are
	// compared with; the from-zero phase has its own ksaga dev.
	r.logf("ksaga dev --mode %s --oidc=%t --redis-acl=%t --scale=always-on (builds the functions if needed)", cfg.Mode, cfg.OIDC, cfg.RedisACL)
	r.dev, err = startDev(ctx, r.devOptions(redisURL, "ksaga-dev.log"), "--scale=always-on")
	if err != nil {
		return err
	}
	r.drv.brokerURL = r.dev.brokerURL(r.w)
	r.procs = []proc{{"ksaga-dev", r.dev.PID()}}
	for _, f := range r.dev.functions {
		r.procs = append(r.procs, proc{f.Name, f.PID})
	}
	if r.cluster != nil {
		for _, n := range r.cluster.Nodes { // one row: their CPU is summed
			r.procs = append(r.procs, proc{"redis-server", n.PID()})
		}
	} else {
		r.procs = append(r.procs, proc{"redis-server", r.redis.PID()})
	}
	r.procs = append(r.procs, proc{"bench", r.self})
	return nil
}

// devOptions are how the bench runs ksaga dev against redisURL, logging
// to logName in its temporary folder.
func (r *runner) devOptions(redisURL, logName string) devOptions {
	return devOptions{bin: r.cfg.Ksaga, dir: r.cfg.Dir, mode: r.cfg.Mode, w: r.w, redisURL: redisURL, benchTriggers: r.trig,
		oidc: r.cfg.OIDC, redisACL: r.cfg.RedisACL, logPath: filepath.Join(r.tmp, logName), readyTimeout: 5 * time.Minute}
}

func (r *runner) teardown() {
	if r.drv != nil {
		r.drv.close()
	}
	r.dev.stop()
	if r.rdb != nil {
		_ = r.rdb.Close()
	}
	if r.redis != nil {
		r.redis.Kill()
	}
	if r.cluster != nil {
		for _, n := range r.nodes {
			_ = n.Close()
		}
		_ = r.data.Close()
		r.cluster.Kill()
	}
}

func (r *runner) runPhases(ctx context.Context) {
	cfg := r.cfg
	usedBefore := usedMemory(ctx, r.nodes)
	// A short unmeasured run first: connections, scripts and goroutine
	// stacks get warm in every process.
	r.logf("settling: 1 s at inflight %d", cfg.Inflight)
	r.drv.closedLoop(ctx, newPhase("settle"), cfg.Inflight, 0, time.Second, cfg.SagaTimeout, r.w.Kinds, cfg.Mix, cfg.Seed+99, nil)

	if cfg.Unloaded {
		r.res.Unloaded = r.sagaPhase(ctx, "unloaded", 1, 0)
	}
	r.res.Loaded = r.sagaPhase(ctx, "loaded", cfg.Inflight, 0)
	if r.perfFiles != nil {
		r.res.Notes = append(r.res.Notes, "perf profiles of the loaded window: "+strings.Join(r.perfFiles, ", "))
	}
	if cfg.Floor {
		r.res.FloorReply = r.floorPhase(ctx, "reply")
		r.res.FloorEvalsha = r.floorPhase(ctx, "evalsha")
		// The box's speed drifts by several percent between phases, which
		// moves a ratio of one saga phase to one floor phase as much as a
		// change of ksaga would. More rounds of the three, back to back,
		// give the ratio targets a median and a spread.
		for i := 2; i <= cfg.Rounds && ctx.Err() == nil; i++ {
			n := strconv.Itoa(i)
			rd := Round{Loaded: r.sagaPhase(ctx, "loaded-"+n, cfg.Inflight, 0)}
			rd.FloorReply = r.floorPhase(ctx, "reply")
			rd.FloorEvalsha = r.floorPhase(ctx, "evalsha")
			r.res.MoreRounds = append(r.res.MoreRounds, rd)
		}
	}
	if cfg.Rate > 0 {
		r.res.OpenLoop = r.sagaPhase(ctx, "open-loop", 0, cfg.Rate)
	}
	for _, n := range cfg.Sweep {
		if ctx.Err() != nil {
			return
		}
		r.res.Sweep = append(r.res.Sweep, r.sagaPhase(ctx, "sweep-"+strconv.Itoa(n), n, 0))
	}
	if cfg.AttributionSagas > 0 && ctx.Err() == nil {
		r.res.Attribution = r.attribution(ctx, cfg.AttributionSagas)
	}
	for _, p := range r.procs {
		mem, err := processMem(p.pid)
		if err != nil {
			r.errorf("RSS of %s: %v", p.name, err)
			continue
		}
		r.res.RSS = append(r.res.RSS, ProcRSS{Process: p.name, PID: p.pid, Bytes: mem.RSS})
	}
	r.res.Restarts = r.dev.restarts(ctx)
	for _, s := range r.res.Restarts {
		r.errorf("function restarted during the run: %s", s)
	}
	var started int64
	for _, p := range r.res.phases() {
		started += p.Accepted
	}
	r.logf("Redis memory per finished saga (MEMORY USAGE on %d sagas)", cfg.MemorySample)
	m := measureMemory(ctx, r.data, r.nodes, r.w, cfg.MemorySample, usedBefore, started)
	r.res.Memory = &m
	if m.Error != "" {
		r.errorf("memory: %s", m.Error)
	}
	r.res.Notes = append(r.res.Notes, fmt.Sprintf("ksaga dev's log: %s (removed unless the run had errors)", filepath.Join(r.tmp, "ksaga-dev.log")))

	// The always-on ksaga dev is done: a cold start is measured on an idle
	// box, and the from-zero phase runs its own ksaga dev. Cold starts come
	// first: they run each function with the environment this ksaga dev
	// gave it, whose Redis ACL password the next ksaga dev replaces.
	r.dev.stop()
	if cfg.ColdStartRuns > 0 && ctx.Err() == nil {
		r.coldStarts(ctx)
	}
	if cfg.FromZeroRuns > 0 && ctx.Err() == nil {
		r.res.FromZero = r.fromZero(ctx)
	}
}

// snapshot is what the bench reads at the edges of a measured window.
type snapshot struct {
	at       time.Time
	cpu      map[string]time.Duration
	sys      sysCPU
	redis    redisSnapshot
	steps    stepCounts // ksaga_step_events_total by service and type
	received int64
}

// snap reads the counters. At the start of a window the slow reads
// (metrics, INFO) come first and CPU last; at the end CPU comes first.
func (r *runner) snap(ctx context.Context, procs []proc, start, steps bool) snapshot {
	var s snapshot
	slow := func() {
		if steps {
			s.steps = r.scrapeSteps(ctx)
		}
		var err error
		if s.redis, err = takeRedisSnapshots(ctx, r.nodes); err != nil {
			r.errorf("redis snapshot: %v", err)
		}
	}
	fast := func() {
		s.cpu = map[string]time.Duration{}
		for _, p := range procs {
			if d, err := processCPU(p.pid); err == nil {
				s.cpu[p.name] += d // the nodes of a cluster share a name
			}
		}
		s.sys, _ = readSysCPU()
		s.at = time.Now()
		if r.drv != nil {
			s.received = r.drv.received.Load()
		}
	}
	if start {
		slow()
		fast()
	} else {
		fast()
		slow()
	}
	return s
}

// stepCounts are ksaga_step_events_total by service, then event type.
type stepCounts map[string]map[string]float64

func (c stepCounts) service(s string) float64 {
	var n float64
	for _, v := range c[s] {
		n += v
	}
	return n
}

// total is every service's count.
func (c stepCounts) total() float64 {
	var n float64
	for svc := range c {
		n += c.service(svc)
	}
	return n
}

// finalSteps counts the events of the saga's final step handled between
// two scrapes.
func (r *runner) finalSteps(now, before stepCounts) int64 {
	var n float64
	for svc, types := range now {
		for t, v := range types {
			if r.w.isFinal(t) {
				n += v - before[svc][t]
			}
		}
	}
	return int64(n)
}

// delta is c − before by service (only services that handled events).
func (c stepCounts) delta(before stepCounts) map[string]int64 {
	out := map[string]int64{}
	for svc := range c {
		if d := int64(c.service(svc) - before.service(svc)); d > 0 {
			out[svc] = d
		}
	}
	return out
}

// scrapeSteps reads ksaga_step_events_total of every function, for the
// workload's event types only (the sweeper's pings are not steps).
func (r *runner) scrapeSteps(ctx context.Context) stepCounts {
	out := stepCounts{}
	c := &http.Client{Timeout: 2 * time.Second}
	for _, f := range r.dev.functions {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(f.Port)+"/metrics", nil)
		resp, err := c.Do(req)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for svc, types := range parseStepMetrics(string(b)) {
			if out[svc] == nil {
				out[svc] = map[string]float64{}
			}
			for t, v := range types {
				if r.w.isStep(t) {
					out[svc][t] += v
				}
			}
		}
	}
	return out
}

// parseStepMetrics sums ksaga_step_events_total by its service and type
// labels (over every outcome).
func parseStepMetrics(text string) stepCounts {
	out := stepCounts{}
	sc := lineScanner(text)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "ksaga_step_events_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		var svc, typ string
		for kv := range strings.SplitSeq(labels, ",") {
			if s, ok := strings.CutPrefix(kv, `service="`); ok {
				svc = strings.TrimSuffix(s, `"`)
			}
			if s, ok := strings.CutPrefix(kv, `type="`); ok {
				typ = strings.TrimSuffix(s, `"`)
			}
		}
		if out[svc] == nil {
			out[svc] = map[string]float64{}
		}
		out[svc][typ] += v
	}
	return out
}

// sagaPhase runs one closed-loop (inflight > 0) or open-loop (rate > 0)
// phase: quiet gate, warm-up, measured window.
func (r *runner) sagaPhase(ctx context.Context, name string, inflight int, rate float64) *SagaPhase {
	cfg := r.cfg
	if rate > 0 {
		r.logf("phase %s: %.0f sagas/s open loop; quiet gate…", name, rate)
	} else {
		r.logf("phase %s: inflight %d; quiet gate…", name, inflight)
	}
	q := waitQuiet(ctx, cfg.QuietWait, cfg.QuietIdle)
	if !q.Quiet {
		r.logf("  not quiet (%.0f%% idle after %.0f s); measuring anyway", q.IdlePct, q.WaitedS)
	}
	p := newPhase(name)
	var s0, s1 snapshot
	var prof *perfSession
	mark := func(start bool) {
		if start {
			s0 = r.snap(ctx, r.procs, true, true)
			if cfg.Perf && name == "loaded" {
				var err error
				if prof, err = startPerf(ctx, r.tmp, r.procs, cfg.Duration.Seconds()); err != nil {
					r.errorf("%v", err)
				}
			}
		} else {
			s1 = r.snap(ctx, r.procs, false, true)
		}
	}
	late0 := r.drv.late.Load()
	if rate > 0 {
		r.drv.openLoop(ctx, p, rate, cfg.Warmup, cfg.Duration, cfg.SagaTimeout, r.w.Kinds, cfg.Mix, cfg.Seed, int64(rate*cfg.SagaTimeout.Seconds())+1000, mark)
	} else {
		r.drv.closedLoop(ctx, p, inflight, cfg.Warmup, cfg.Duration, cfg.SagaTimeout, r.w.Kinds, cfg.Mix, cfg.Seed, mark)
	}
	sp := r.sagaResult(p, q, s0, s1)
	sp.Inflight, sp.RatePerS = inflight, rate
	if prof != nil {
		out := cfg.Out
		if out == "" {
			out = r.tmp
		}
		if err := os.MkdirAll(out, 0o755); err == nil {
			r.perfFiles = append([]string{}, prof.finish(out)...)
		}
	}
	sp.DrainS, sp.Backlog = r.waitBrokerIdle(ctx, 2*time.Minute)
	sp.Errors.Late = r.drv.late.Load() - late0
	r.logf("  %.0f sagas/s, p50 %.2f ms, p99 %.2f ms, %d errors, %.0f µs CPU/saga, box %.0f%% busy",
		sp.SagasPerS, sp.Latency.P50Ms, sp.Latency.P99Ms, sp.Errors.Total, sp.CPUUsPerSaga, sp.BoxBusyPct)
	if sp.Backlog > 0 || sp.DrainS > 1 {
		r.logf("  broker backlog after the phase: %d entries, drained in %.1f s", sp.Backlog, sp.DrainS)
	}
	if sp.Errors.First != "" {
		r.logf("  first error: %s", sp.Errors.First)
	}
	return sp
}

// waitBrokerIdle waits (at most limit) until the broker's streams are
// empty: every accepted event has been delivered (entries are deleted once
// every Trigger is done with them). It returns the time waited and the
// backlog found first.
func (r *runner) waitBrokerIdle(ctx context.Context, limit time.Duration) (float64, int64) {
	start := time.Now()
	var keys []string
	for _, node := range r.nodes {
		iter := node.Scan(ctx, 0, "ksaga:broker:{*}", 100).Iterator()
		for iter.Next(ctx) {
			if k := iter.Val(); !strings.Contains(k, ":done:") {
				keys = append(keys, k)
			}
		}
	}
	var first int64 = -1
	for ctx.Err() == nil {
		var n int64
		for _, k := range keys {
			n += r.data.XLen(ctx, k).Val()
		}
		if first < 0 {
			first = n
		}
		if n == 0 || time.Since(start) > limit {
			if n > 0 {
				r.errorf("broker backlog of %d entries still there after %s", n, limit)
			}
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return round1(time.Since(start).Seconds()), max(first, 0)
}

func (r *runner) sagaResult(p *phase, q Quiet, s0, s1 snapshot) *SagaPhase {
	sp := &SagaPhase{Name: p.name, Quiet: q, WindowS: round3(p.windowSeconds()), Accepted: p.accepted.Load(),
		Ended: p.endedInWindow.Load(), ByKind: map[string]Latency{}, Steps: map[string]int64{}}
	sp.SagasPerS = round1(div(float64(sp.Ended), sp.WindowS))
	p.mu.Lock()
	sp.Latency = summarize(p.samples)
	for k, v := range p.byKind {
		sp.ByKind[k] = summarize(v)
	}
	if len(p.lags) > 0 {
		sp.SendLagP99 = summarize(p.lags).P99Ms
	}
	sp.Errors.First = p.firstEr
	p.mu.Unlock()
	sp.Errors.Post, sp.Errors.Status, sp.Errors.Timeouts = p.postErrors.Load(), p.badStatus.Load(), p.timeouts.Load()
	sp.Errors.Unexpected, sp.Errors.Dropped = p.unexpected.Load(), p.dropped.Load()
	sp.Errors.Total = p.errors()

	sagas := float64(sp.Ended)
	sp.Steps = s1.steps.delta(s0.steps)
	for _, d := range sp.Steps {
		sp.StepsTotal += d
	}
	sp.TerminalDeliveries = s1.received - s0.received
	sp.StepsPerSaga = round3(div(float64(sp.StepsTotal), sagas))
	sp.DeliveriesPerSaga = round3(div(float64(sp.StepsTotal+sp.TerminalDeliveries), sagas))
	sp.CPU, sp.CPUUsPerSaga = cpuRows(r.procs, s0, s1, sagas, sp.Steps)
	sp.BoxBusyPct = round1(busyPct(s0.sys, s1.sys))
	boxUs := sp.BoxBusyPct / 100 * s1.at.Sub(s0.at).Seconds() * 1e6 * float64(runtime.NumCPU())
	sp.UnaccountedUsPerSaga = round1(div(boxUs, sagas) - sp.CPUUsPerSaga)
	sp.Redis = redisWindow(s0.redis, s1.redis, float64(sp.StepsTotal), sagas)
	return sp
}

// cpuRows computes each process's CPU per unit (saga or event) and per
// step, and the total per unit.
func cpuRows(procs []proc, s0, s1 snapshot, units float64, steps map[string]int64) ([]ProcCPU, float64) {
	var rows []ProcCPU
	var total float64
	seen := map[string]bool{} // a cluster's nodes: one row, their CPU summed by snap
	for _, p := range procs {
		if seen[p.name] {
			continue
		}
		seen[p.name] = true
		a, ok0 := s0.cpu[p.name]
		b, ok1 := s1.cpu[p.name]
		if !ok0 || !ok1 {
			continue
		}
		d := b - a
		us := float64(d) / float64(time.Microsecond)
		row := ProcCPU{Process: p.name, PID: p.pid, CPUMs: round1(us / 1000), PerUnit: round1(div(us, units))}
		if n := steps[p.name]; n > 0 {
			row.PerStep = round1(us / float64(n))
		}
		total += row.PerUnit
		rows = append(rows, row)
	}
	for i := range rows {
		rows[i].SharePct = round1(100 * div(rows[i].PerUnit, total))
	}
	return rows, round1(total)
}

func redisWindow(a, b redisSnapshot, steps, sagas float64) *RedisWindow {
	if a.cmds == nil || b.cmds == nil {
		return nil
	}
	w := &RedisWindow{}
	var calls, usec int64
	for name, d := range diffCommandStats(a.cmds, b.cmds) {
		switch name {
		case "info", "monitor":
			continue // the bench's own
		}
		calls += d.Calls
		usec += d.Usec
		w.Commands = append(w.Commands, CmdRow{Command: name, Calls: d.Calls, PerStep: round3(div(float64(d.Calls), steps)),
			PerSaga: round3(div(float64(d.Calls), sagas)), UsecPerCall: round3(div(float64(d.Usec), float64(d.Calls)))})
	}
	sort.Slice(w.Commands, func(i, j int) bool {
		if w.Commands[i].Calls != w.Commands[j].Calls {
			return w.Commands[i].Calls > w.Commands[j].Calls
		}
		return w.Commands[i].Command < w.Commands[j].Command
	})
	delta := func(k string) float64 { return float64(infoInt(b.stats, k) - infoInt(a.stats, k)) }
	w.CallsPerStep = round3(div(float64(calls), steps))
	w.CallsPerSaga = round3(div(float64(calls), sagas))
	w.ReadsPerStep = round3(div(delta("total_reads_processed"), steps))
	w.ReadsPerSaga = round3(div(delta("total_reads_processed"), sagas))
	w.NetInPerSaga = round1(div(delta("total_net_input_bytes"), sagas))
	w.NetOutPerSaga = round1(div(delta("total_net_output_bytes"), sagas))
	w.ServerUsecPerSaga = round1(div(float64(usec), sagas))
	return w
}

// floorPhase runs one floor server under the bench's closed-loop load.
func (r *runner) floorPhase(ctx context.Context, mode string) *FloorPhase {
	cfg := r.cfg
	r.logf("floor %s: sdk-go receiver%s, inflight %d; quiet gate…", mode, map[string]string{"evalsha": " + 1 EVALSHA"}[mode], cfg.FloorInflight)
	srv, err := startFloorServer(ctx, cfg.Ksaga, mode, r.redis.URL())
	if err != nil {
		r.errorf("floor %s: %v", mode, err)
		return nil
	}
	defer srv.stop()
	procs := []proc{{"floor-server", srv.pid()}, {"redis-server", r.redis.PID()}, {"bench", r.self}}
	fp := &FloorPhase{Mode: mode, Inflight: cfg.FloorInflight}
	fp.Quiet = waitQuiet(ctx, cfg.QuietWait, cfg.QuietIdle)
	var s0, s1 snapshot
	mark := func(start bool) {
		if start {
			s0 = r.snap(ctx, procs, true, false)
		} else {
			s1 = r.snap(ctx, procs, false, false)
		}
	}
	run := floorLoad(ctx, "http://"+srv.addr+"/", r.w.EventData, cfg.FloorInflight, cfg.Warmup, cfg.Duration, cfg.Seed, mark)
	fp.WindowS = round3(run.window)
	fp.EventsPerS = round1(div(float64(run.ended), run.window))
	fp.Latency = summarize(run.samples)
	fp.Errors, fp.FirstError = run.errors, run.firstEr
	fp.CPU, _ = cpuRows(procs, s0, s1, float64(run.ended), nil)
	fp.BoxBusyPct = round1(busyPct(s0.sys, s1.sys))
	if w := redisWindow(s0.redis, s1.redis, float64(run.ended), float64(run.ended)); w != nil {
		fp.Redis.CallsPerEvent, fp.Redis.ReadsPerEvent = w.CallsPerStep, w.ReadsPerStep
	}
	r.logf("  %.0f events/s, p50 %.2f ms, p99 %.2f ms, %d errors, server %.1f µs CPU/event",
		fp.EventsPerS, fp.Latency.P50Ms, fp.Latency.P99Ms, fp.Errors, cpuOf(fp.CPU, "floor-server"))
	return fp
}

func cpuOf(rows []ProcCPU, name string) float64 {
	for _, r := range rows {
		if r.Process == name {
			return r.PerUnit
		}
	}
	return 0
}

// attribution runs n sagas at inflight 4 under MONITOR and attributes the
// Redis commands to processes.
func (r *runner) attribution(ctx context.Context, n int) *Attribution {
	r.logf("Redis attribution: %d sagas under MONITOR (not timed)", n)
	a := &Attribution{}
	var mons []*monitor
	for _, node := range r.nodes { // every node of a cluster
		mon, err := startMonitor(node.Options().Addr)
		if err != nil {
			a.Error = err.Error()
			r.errorf("MONITOR: %v", err)
			for _, m := range mons {
				m.stop()
			}
			return a
		}
		mons = append(mons, mon)
	}
	steps0 := r.scrapeSteps(ctx)
	p := newPhase("attribution")
	p.wStart.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(n))
	for i := range 4 {
		m := newMixer(r.w.Kinds, r.cfg.Mix, r.cfg.Seed+7, uint64(i)+1)
		wg.Go(func() {
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				rec := r.drv.newSaga(p, m.next(), true)
				if !r.drv.post(ctx, rec) {
					continue
				}
				select {
				case <-rec.done:
				case <-time.After(r.cfg.SagaTimeout):
					r.drv.timeout(rec)
				}
			}
		})
	}
	wg.Wait()
	a.Sagas = p.endedInWindow.Load()
	// A saga's final step runs after the terminal event the bench waits
	// for: poll until the final steps have run for every saga and the step
	// counts have stopped moving (in orchestration the orchestrator hears
	// the terminal event before the final step runs).
	steps1 := r.scrapeSteps(ctx)
	for deadline, still := time.Now().Add(5*time.Second), 0; time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(50 * time.Millisecond) // poll interval
		next := r.scrapeSteps(ctx)
		if next.total() == steps1.total() {
			still++
		} else {
			still = 0
		}
		steps1 = next
		if still >= 4 && (r.w.Def.Finally == nil || r.finalSteps(steps1, steps0) >= a.Sagas) {
			break
		}
	}
	byProc := map[string]*ProcRedis{}
	for i, mon := range mons {
		_, port, _ := net.SplitHostPort(r.nodes[i].Options().Addr)
		n, _ := strconv.Atoi(port)
		mergeProcRedis(byProc, byProcess(mon.stop(), clientOwners(n, r.procs)))
	}
	stepsOf := steps1.delta(steps0)
	for _, d := range stepsOf {
		a.StepsTotal += d
	}
	sagas := float64(a.Sagas)
	callees := map[string]bool{} // functions a step calls synchronously: their lookups are on its path
	for _, e := range r.w.Extras {
		for _, c := range e.Callees {
			callees[c] = true
		}
	}
	var fnRT int64
	for _, name := range sortedKeys(byProc) {
		pr := byProc[name]
		if name == "bench" {
			continue
		}
		pr.Steps = stepsOf[name]
		switch {
		case name == "ksaga-dev":
			pr.StepPath = pr.RoundTrips // stream reads and acks are the broker's data path
		case name != "other" && pr.Steps == 0 && !callees[name]:
			pr.StepPath = 0 // a function without steps (the sweeper's passes, the console's gauges) is on no step's path
		}
		var cmds int64
		for _, v := range pr.TopLevel {
			cmds += v
		}
		for _, v := range pr.Lua {
			cmds += v
		}
		pr.RoundTripsPerSaga = round3(div(float64(pr.RoundTrips), sagas))
		pr.StepPathPerSaga = round3(div(float64(pr.StepPath), sagas))
		pr.CommandsPerSaga = round3(div(float64(cmds), sagas))
		if pr.Steps > 0 {
			pr.StepPathPerStep = round3(float64(pr.StepPath) / float64(pr.Steps))
		}
		if name != "ksaga-dev" && name != "other" {
			fnRT += pr.StepPath
		}
		if len(pr.Lua) == 0 {
			pr.Lua = nil
		}
		a.Processes = append(a.Processes, pr)
	}
	a.FunctionRoundTripsPerStep = round3(div(float64(fnRT), float64(a.StepsTotal)))
	if b := byProc["ksaga-dev"]; b != nil {
		a.BrokerRoundTripsStep = round3(div(float64(b.RoundTrips), float64(a.StepsTotal)))
	}
	a.StepTypes = stepTypeRoundTrips(r.w.Extras, byProc, steps0, steps1)
	for _, st := range a.StepTypes {
		if st.RoundTrips > a.WorstStepRoundTrips {
			a.WorstStepRoundTrips, a.WorstStepPath = st.RoundTrips, st.Function+", "+st.Step+" step"
			if st.Step == "" {
				a.WorstStepPath = st.Function + ", every step"
			}
		}
	}
	slices.SortFunc(a.Processes, func(x, y *ProcRedis) int { return int(y.RoundTrips - x.RoundTrips) })
	r.logf("  function step-path round trips per step %.2f (worst: %s %.2f), broker %.2f", a.FunctionRoundTripsPerStep,
		a.WorstStepPath, a.WorstStepRoundTrips, a.BrokerRoundTripsStep)
	return a
}

// coldStarts builds the functions like container images and measures
// each one's cold start and idle RSS.
func (r *runner) coldStarts(ctx context.Context) {
	r.logf("cold start: building stripped function binaries (CGO_ENABLED=0 -trimpath -ldflags='-s -w')")
	dir := filepath.Join(r.tmp, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.errorf("cold start: %v", err)
		return
	}
	bins, err := buildStripped(ctx, r.cfg.Dir, dir)
	if err != nil {
		r.errorf("cold start: %v", err)
		return
	}
	q := waitQuiet(ctx, r.cfg.QuietWait, r.cfg.QuietIdle)
	if !q.Quiet {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("cold start measured on a box that was not quiet (%.0f%% idle)", q.IdlePct))
	}
	for _, f := range r.dev.functions {
		bin, ok := bins[f.Name]
		if !ok {
			continue
		}
		probe, ok := r.w.Probes[f.Name]
		if !ok {
			probe = Probe{Get: "/readyz"}
		}
		cs := coldStart(ctx, f.Name, bin, f.Env, probe, r.w.EventData, r.cfg.ColdStartRuns)
		r.logf("  %-13s %5.1f MB  median %.2f ms (%d runs)  idle RSS %.1f MB %s", f.Name, float64(cs.BinaryBytes)/1e6,
			cs.MedianMs, cs.Runs, float64(cs.IdleRSSBytes)/(1<<20), cs.Error)
		if cs.Error != "" {
			r.errorf("cold start %s: %s", f.Name, cs.Error)
		}
		r.res.ColdStart = append(r.res.ColdStart, cs)
	}
}

func redisSettingsText(aof string) string {
	if aof == "off" {
		return `no persistence (--save "" --appendonly no); the saga and the floor share this server`
	}
	return fmt.Sprintf(`AOF appendfsync %s (--save "" --appendonly yes); the saga and the floor share this server`, aof)
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemTotalBytes = kb << 10
				}
			}
		}
	}
	return m
}

// gitTree records the commit and the uncommitted changes of dir, leaving
// out the results folder out (earlier runs' results are not the code
// being measured).
func gitTree(dir, out string) Tree {
	var t Tree
	if head, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output(); err == nil {
		t.Commit = strings.TrimSpace(string(head))
	}
	results := ""
	if out != "" {
		if abs, err := filepath.Abs(out); err == nil {
			if root, err := filepath.Abs(dir); err == nil {
				if rel, err := filepath.Rel(root, abs); err == nil && !strings.HasPrefix(rel, "..") {
					results = filepath.ToSlash(rel) + "/"
				}
			}
		}
	}
	if st, err := exec.Command("git", "-C", dir, "status", "--porcelain").Output(); err == nil {
		// "XY path" lines.
		for l := range strings.SplitSeq(strings.TrimRight(string(st), "\n"), "\n") {
			if len(l) < 4 || (results != "" && strings.HasPrefix(l[3:], results)) {
				continue
			}
			t.Dirty = append(t.Dirty, strings.TrimSpace(l))
		}
	}
	return t
}
