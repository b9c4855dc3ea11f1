package devscale

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"
)

// Target is the set of replicas of one Knative Service: what an Autoscaler
// scales (the Deployment's replicas in a cluster).
type Target interface {
	// Scale asks for n replicas, starting or ready, not counting those
	// being stopped. It returns at once; a replica joins the Pool once it
	// is ready.
	Scale(n int)
}

// Intervals of Knative's autoscaler.
const (
	// DecideInterval is how often the decider runs (scaling.MultiScaler's
	// tickInterval).
	DecideInterval = 2 * time.Second
	// ReportInterval is how often the activator reports its stats
	// (pkg/activator/handler reportInterval).
	ReportInterval = time.Second
)

// Autoscaler scales one Knative Service's replicas as Knative Serving's KPA
// would. Decisions are Knative's code: the stats of the Pool go to
// Knative's MetricCollector (pkg/autoscaler/metrics), whose stable and panic
// window averages feed Knative's decider (pkg/autoscaler/scaling: target,
// panic mode, max scale-up and scale-down rates, scale-down delay,
// activation-scale). The decider's desired scale then goes through the
// KPA reconciler's rules, ported from pkg/reconciler/autoscaling/kpa (scale
// bounds, initial scale, and scale to zero only after the revision has
// been active for the stable window and inactive for the
// scale-to-zero-pod-retention-period), with the PodAutoscaler's own status
// methods (active, activating, inactive and how long).
type Autoscaler struct {
	s       *Settings
	pool    *Pool
	target  Target
	log     *slog.Logger
	metrics *serviceMetrics
	decide  time.Duration

	collector *asmetrics.MetricCollector
	uni       scaling.UniScaler
	zlog      *zap.SugaredLogger
	firsts    chan asmetrics.Stat // the activator's immediate stats
	changes   chan struct{}       // the ready replicas changed

	started time.Time

	mu          sync.Mutex // guards what Status reads
	decided     int32      // the decider's desired scale; -1 before its first decision
	spec        int32      // replicas asked from the target
	want        int32      // the last KPA decision (-1: unknown)
	scaleUpAt   time.Time  // when a scale from zero began (zero: none pending)
	initial     bool       // that scale-up is the initial scale, not an activation
	activations int64
	lastEvent   string
	condition   string // the PodAutoscaler's Active condition, as of the last tick
}

// AutoscalerConfig configures NewAutoscaler.
type AutoscalerConfig struct {
	Settings *Settings
	Target   Target
	Logger   *slog.Logger
	Metrics  *Metrics // nil: not exported
	// DecideInterval is how often the decider runs (default
	// DecideInterval; shorter with a shortened window).
	DecideInterval time.Duration
}

// NewAutoscaler returns the Autoscaler of one service and the Pool its
// requests go through. Run starts it.
func NewAutoscaler(cfg AutoscalerConfig) (*Autoscaler, *Pool) {
	s := cfg.Settings
	a := &Autoscaler{
		s: s, target: cfg.Target, log: cfg.Logger, decide: cfg.DecideInterval,
		firsts: make(chan asmetrics.Stat, 8), changes: make(chan struct{}, 1),
		decided: -1, want: -1, zlog: zap.NewNop().Sugar(), condition: "activating",
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.decide <= 0 {
		a.decide = DecideInterval
	}
	a.metrics = cfg.Metrics.forService(s.Service.String())
	a.pool = NewPool(PoolConfig{
		ContainerConcurrency: s.ContainerConcurrency,
		HoldTimeout:          s.Timeout,
		OnFirst: func(st asmetrics.Stat) {
			select {
			case a.firsts <- st:
			default: // a burst of first stats: the next report carries them
			}
		},
		OnChange: func() {
			select {
			case a.changes <- struct{}{}:
			default:
			}
		},
		Held: a.metrics.held,
	})
	// The collector scrapes nothing (no scrape target: the activator is
	// always in the path); the stats arrive through Record, as the
	// activator's reach the autoscaler's stat server.
	a.collector = asmetrics.NewMetricCollector(
		func(*autoscalingv1alpha1.Metric, *zap.SugaredLogger) (asmetrics.StatsScraper, error) { return nil, nil }, a.zlog)
	return a, a.pool
}

// Run starts the initial replicas and scales until ctx is done; it returns
// then, leaving the replicas as they are.
func (a *Autoscaler) Run(ctx context.Context) {
	s := a.s
	if err := a.collector.CreateOrUpdate(s.Metric); err != nil {
		a.log.Error("autoscaler: metric collection", "service", s.Service.String(), "error", err)
	}
	defer a.collector.Delete(s.Revision.Namespace, s.Revision.Name)
	a.uni = scaling.New(attribute.NewSet(), metricnoop.NewMeterProvider(), s.Revision.Namespace, s.Revision.Name,
		a.collector, podCounter{a.pool}, &s.Decider.Spec)
	defer a.uni.OnDelete()

	a.started = time.Now()
	a.mu.Lock()
	a.spec = s.InitialReplicas() // the Deployment is created with the initial scale
	if a.spec > 0 {
		a.scaleUpAt, a.initial = a.started, true
	}
	a.mu.Unlock()
	a.metrics.desired(a.spec)
	a.target.Scale(int(a.spec))

	report := time.NewTicker(ReportInterval)
	defer report.Stop()
	decide := time.NewTicker(a.decide)
	defer decide.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-report.C:
			if st, ok := a.pool.report(now); ok {
				a.record(now, st)
			}
		case st := <-a.firsts:
			a.record(time.Now(), st)
		case now := <-decide.C:
			a.tick(now, true)
		case <-a.changes:
			a.tick(time.Now(), false)
		}
	}
}

// record hands a stat to the collector and, like the MultiScaler's Poke,
// runs the decider at once when the revision is at zero and the stat shows
// requests: that is how a request to a service at zero activates it.
func (a *Autoscaler) record(now time.Time, st asmetrics.Stat) {
	a.collector.Record(a.s.Revision, now, st)
	a.mu.Lock()
	atZero := a.decided == 0
	a.mu.Unlock()
	if atZero && st.AverageConcurrentRequests != 0 {
		a.tick(now, true)
	}
}

// tick runs the decider (when decide is set) and then the KPA's
// reconciliation, which applies a new scale to the target.
func (a *Autoscaler) tick(now time.Time, decide bool) {
	if !a.s.KPA {
		a.updateMetrics()
		return
	}
	if decide {
		if sr := a.uni.Scale(a.zlog, now); sr.ScaleValid {
			a.mu.Lock()
			a.decided = sr.DesiredPodCount
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	decided := a.decided
	a.mu.Unlock()
	want, apply := a.scale(now, decided)
	ready := a.pool.Ready()
	a.computeActiveCondition(want, ready)

	a.mu.Lock()
	a.want = want
	a.condition = condition(a.s.PA)
	from := a.spec
	var event string
	if apply && want >= 0 && want != from {
		a.spec = want
		if from == 0 {
			a.scaleUpAt, a.initial = now, false
			a.activations++
			a.metrics.activated()
		} else {
			event = fmt.Sprintf("%s %d→%d (%s)", a.s.Service.Name, from, want, a.reason(now, from, want, decided))
		}
	}
	if !a.scaleUpAt.IsZero() && ready > 0 {
		took := now.Sub(a.scaleUpAt)
		if a.initial {
			event = fmt.Sprintf("%s 0→%d (initial scale, ready in %s)", a.s.Service.Name, a.spec, roundDuration(took))
		} else {
			event = fmt.Sprintf("%s 0→%d (activation, ready in %s)", a.s.Service.Name, a.spec, roundDuration(took))
			a.metrics.activationTime(took)
		}
		a.scaleUpAt = time.Time{}
	}
	if event != "" {
		a.lastEvent = event
	}
	spec := a.spec
	a.mu.Unlock()

	if event != "" {
		a.log.Info(event, "service", a.s.Service.String(), "desired", spec, "ready", ready)
	}
	if spec != from {
		a.target.Scale(int(spec))
	}
	a.updateMetrics()
}

func (a *Autoscaler) updateMetrics() {
	a.mu.Lock()
	spec := a.spec
	a.mu.Unlock()
	st := a.pool.Status()
	a.metrics.update(spec, st)
}

// scale is the KPA scaler's scale (pkg/reconciler/autoscaling/kpa
// scaler.go): the decider's desired scale within the scale bounds (and the
// initial scale until it was reached), then through handleScaleToZero. It
// returns the scale to apply and whether to apply it.
func (a *Autoscaler) scale(now time.Time, desired int32) (int32, bool) {
	pa := a.s.PA
	if desired < 0 && !pa.Status.IsActivating() {
		return desired, false // metrics are not yet being collected
	}
	minScale, maxScale := a.s.Min, a.s.Max
	if a.s.Initial > 1 && !pa.Status.IsScaleTargetInitialized() {
		minScale = max(a.s.Initial, minScale)
	}
	desired = applyBounds(minScale, maxScale, desired)
	return a.handleScaleToZero(now, desired)
}

// pre: 0 <= min <= max && 0 <= x
func applyBounds(minScale, maxScale, x int32) int32 {
	if x < minScale {
		return minScale
	}
	if maxScale != 0 && x > maxScale {
		return maxScale
	}
	return x
}

// handleScaleToZero is the KPA's rule (kpa/scaler.go) with ksaga dev's
// network: the activator (the Pool) is always in the request path, and
// routing changes at once. So the probe of the activator always succeeds,
// and the serverless service has been in proxy mode since ksaga dev
// started.
func (a *Autoscaler) handleScaleToZero(now time.Time, desired int32) (int32, bool) {
	if desired != 0 {
		return desired, true
	}
	cfg, pa := a.s.Config, a.s.PA
	if !cfg.EnableScaleToZero {
		return 1, true
	}
	switch {
	case pa.Status.IsActivating():
		if pa.Status.CanFailActivation(now, a.s.activationTimeout()) {
			a.log.Warn("autoscaler: activation timed out; scaling to zero", "service", a.s.Service.String(), "after", a.s.activationTimeout())
			return desired, true
		}
		return -1, false
	case pa.Status.IsActive():
		// Active for at least the stable window: mark it inactive first
		// (want 0, not applied); else at most one replica for the rest of
		// the window.
		if pa.Status.ActiveFor(now) >= a.s.Metric.Spec.StableWindow {
			return desired, false
		}
		return 1, true
	default:
		lastPod := a.s.Retention
		if pa.Status.InactiveFor(now) >= max(cfg.ScaleToZeroGracePeriod, lastPod) {
			return desired, true
		}
		if lastPod > 0 && pa.Status.InactiveFor(now) < lastPod {
			return desired, false
		}
		if now.Sub(a.started) >= cfg.ScaleToZeroGracePeriod {
			return desired, true
		}
		return desired, false
	}
}

// computeActiveCondition is the KPA's (kpa/kpa.go): want is the scale
// decided (-1: unknown), ready the replicas ready.
func (a *Autoscaler) computeActiveCondition(want int32, ready int) {
	pa := a.s.PA
	minReady := a.activeThreshold()
	if ready >= minReady && pa.Status.ServiceName != "" {
		pa.Status.MarkScaleTargetInitialized()
	}
	switch {
	case want == 0 || minReady == 0:
		if pa.Status.IsActivating() && minReady > 0 {
			pa.Status.MarkInactive("TimedOut", "The target could not be activated.")
		} else {
			pa.Status.MarkInactive("NoTraffic", "The target is not receiving traffic.")
		}
	case ready < minReady:
		if want > 0 || !pa.Status.IsInactive() {
			pa.Status.MarkActivating("Queued", "Requests to the target are being buffered as resources are provisioned.")
		} else {
			pa.Status.MarkInactive("NoTraffic", "The target is not receiving traffic.")
		}
	default:
		if want > 0 || !pa.Status.IsInactive() {
			pa.Status.MarkActive()
		}
	}
}

// activeThreshold is the ready replicas needed to be active (kpa/kpa.go).
func (a *Autoscaler) activeThreshold() int {
	if !a.s.PA.Status.IsScaleTargetInitialized() {
		return int(max(a.s.Min, a.s.Initial))
	}
	return int(max(a.s.Min, 1))
}

// condition names the PodAutoscaler's Active condition.
func condition(pa *autoscalingv1alpha1.PodAutoscaler) string {
	switch {
	case pa.Status.IsActive():
		return "active"
	case pa.Status.IsInactive():
		return "inactive"
	default:
		return "activating"
	}
}

// reason explains a scale change (not from zero) for the log.
func (a *Autoscaler) reason(now time.Time, from, to, decided int32) string {
	var parts []string
	switch {
	case to == 0:
		idle := a.pool.Status().IdleFor
		parts = append(parts, "idle "+roundDuration(idle))
	case decided == 0:
		parts = append(parts, fmt.Sprintf("idle: %d until the stable window (%s) has passed", to, a.s.Metric.Spec.StableWindow))
	default:
		name := a.s.MetricName()
		var stable, panicV float64
		var err error
		if name == autoscaling.RPS {
			stable, panicV, err = a.collector.StableAndPanicRPS(a.s.Revision, now)
		} else {
			name = autoscaling.Concurrency
			stable, panicV, err = a.collector.StableAndPanicConcurrency(a.s.Revision, now)
		}
		if err == nil {
			v, window := stable, "stable"
			if math.Ceil(panicV/a.s.Target()) > math.Ceil(stable/a.s.Target()) {
				v, window = panicV, "panic"
			}
			op := ">"
			if to < from {
				op = "<"
			}
			parts = append(parts, fmt.Sprintf("%s %.3g %s target %.3g × %d, %s window", name, v, op, a.s.Target(), from, window))
		}
	}
	if decided >= 0 && to != decided && to > 0 && decided > 0 {
		switch {
		case a.s.Max > 0 && to == a.s.Max:
			parts = append(parts, fmt.Sprintf("max-scale %d", a.s.Max))
		case to == a.s.Min || to == a.s.Initial:
			parts = append(parts, fmt.Sprintf("min-scale %d", max(a.s.Min, a.s.Initial)))
		}
	}
	if len(parts) == 0 {
		return "decided"
	}
	return strings.Join(parts, "; ")
}

// roundDuration prints d to the millisecond under a second, else to the
// second.
func roundDuration(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return d.Round(time.Second).String()
}

// podCounter gives the decider the ready replicas (a cluster's endpoints).
type podCounter struct{ p *Pool }

func (c podCounter) ReadyCount() (int, error)    { return c.p.Ready(), nil }
func (c podCounter) NotReadyCount() (int, error) { return 0, nil }

// Status is a snapshot of one service's autoscaling, for the index page and
// the JSON API.
type Status struct {
	Desired     int32  // replicas asked for
	Decided     int32  // the decider's last desired scale (-1: none yet)
	Condition   string // active, activating or inactive
	Activations int64
	LastEvent   string
	Pool        PoolStatus
}

// Status returns a snapshot.
func (a *Autoscaler) Status() Status {
	a.mu.Lock()
	st := Status{Desired: a.spec, Decided: a.decided, Activations: a.activations, LastEvent: a.lastEvent, Condition: a.condition}
	a.mu.Unlock()
	st.Pool = a.pool.Status()
	return st
}
