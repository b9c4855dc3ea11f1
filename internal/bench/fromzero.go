package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FromZero is the "from zero" phase: the latency of a saga started when
// every step function that may scale to zero has no process (Knative's
// autoscaling in ksaga dev, with a short window), next to the same saga run
// right after, with every function up, in the same ksaga dev.
type FromZero struct {
	Runs    int      `json:"runs"`
	WindowS float64  `json:"window_s"` // ksaga dev's --scale-window
	AtZero  []string `json:"at_zero"`  // the services at zero before each cold saga
	Up      []string `json:"up"`       // the services that stay up (min-scale ≥ 1)
	Cold    Latency  `json:"cold"`     // started with those at zero
	Warm    Latency  `json:"warm"`     // warmPerRun sagas right after each cold one
	// ZeroWaitS is the mean wait, after a run, until every service that
	// may was at zero again (the stable window plus the retention).
	ZeroWaitS   float64      `json:"zero_wait_s"`
	Activations []Activation `json:"activations"`
	Error       string       `json:"error,omitempty"`
}

// Activation is one service's scale-ups from zero during the phase, from
// ksaga dev's ksaga_dev_activation_seconds (decision to first ready
// replica).
type Activation struct {
	Service string  `json:"service"`
	Count   int     `json:"count"`
	MeanMs  float64 `json:"mean_ms"`
}

// warmPerRun is how many warm sagas follow each cold one.
const warmPerRun = 3

// fromZero runs the phase with a ksaga dev of its own (Knative's
// autoscaling, --scale-window), on the bench's Redis and Triggers. The
// workload's first kind is used throughout: its path reaches every step
// function.
func (r *runner) fromZero(ctx context.Context) *FromZero {
	cfg := r.cfg
	fz := &FromZero{Runs: cfg.FromZeroRuns, WindowS: cfg.FromZeroWindow.Seconds()}
	r.logf("from zero: ksaga dev --scale-window %s; %d sagas started with every step function at zero, each followed by %d warm ones",
		cfg.FromZeroWindow, cfg.FromZeroRuns, warmPerRun)
	d, err := startDev(ctx, r.devOptions(r.redis.URL(), "ksaga-dev-from-zero.log"), "--scale-window", cfg.FromZeroWindow.String())
	if err != nil {
		fz.Error = err.Error()
		r.errorf("from zero: %v", err)
		return fz
	}
	defer d.stop()
	r.drv.brokerURL = d.brokerURL(r.w)
	cold, warm := newPhase("from-zero"), newPhase("from-zero-warm")
	now := time.Now().UnixNano()
	cold.wStart.Store(now)
	warm.wStart.Store(now)
	var waited time.Duration
	for i := 0; i < cfg.FromZeroRuns && ctx.Err() == nil; i++ {
		t0 := time.Now()
		atZero, up, err := waitZero(ctx, d, 2*time.Minute)
		if err != nil {
			fz.Error = err.Error()
			r.errorf("from zero: %v", err)
			break
		}
		waited += time.Since(t0)
		fz.AtZero, fz.Up = atZero, up
		r.oneSaga(ctx, cold)
		for range warmPerRun {
			r.oneSaga(ctx, warm)
		}
	}
	cold.mu.Lock()
	fz.Cold = summarize(cold.samples)
	cold.mu.Unlock()
	warm.mu.Lock()
	fz.Warm = summarize(warm.samples)
	warm.mu.Unlock()
	fz.ZeroWaitS = round1(div(waited.Seconds(), float64(max(fz.Cold.Count, 1))))
	if n := cold.errors() + warm.errors(); n > 0 {
		first := cold.firstEr
		if first == "" {
			first = warm.firstEr
		}
		r.errorf("from zero: %d sagas failed, the first: %s", n, first)
	}
	fz.Activations = activations(ctx, d)
	r.logf("  from zero p50 %.1f ms (max %.1f), warm p50 %.1f ms; at zero before each: %s",
		fz.Cold.P50Ms, fz.Cold.MaxMs, fz.Warm.P50Ms, strings.Join(fz.AtZero, ", "))
	return fz
}

// oneSaga runs one saga of the workload's first kind in p and waits for
// its end.
func (r *runner) oneSaga(ctx context.Context, p *phase) {
	rec := r.drv.newSaga(p, &r.w.Kinds[0], true)
	if !r.drv.post(ctx, rec) {
		return
	}
	t := time.NewTimer(r.cfg.SagaTimeout)
	defer t.Stop()
	select {
	case <-rec.done:
	case <-t.C:
		r.drv.timeout(rec)
	case <-ctx.Done():
		r.drv.timeout(rec)
	}
}

// waitZero polls until every service whose min-scale is 0 has no replica,
// and returns their names, and those of the services that stay up.
func waitZero(ctx context.Context, d *devProcess, limit time.Duration) (zero, up []string, err error) {
	deadline := time.Now().Add(limit)
	for {
		doc, err := d.services(ctx)
		if err != nil {
			return nil, nil, err
		}
		var busy []string
		zero, up = nil, nil
		for _, s := range doc.Services {
			if s.Autoscaling == nil || s.Autoscaling.MinScale > 0 {
				up = append(up, s.Name)
				continue
			}
			if s.Desired == 0 && s.Ready == 0 && len(s.Replicas) == 0 {
				zero = append(zero, s.Name)
			} else {
				busy = append(busy, fmt.Sprintf("%s (%d replicas)", s.Name, len(s.Replicas)))
			}
		}
		if len(busy) == 0 {
			slices.Sort(zero)
			slices.Sort(up)
			return zero, up, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("not at zero after %s: %s", limit, strings.Join(busy, ", "))
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// activations reads ksaga_dev_activation_seconds from ksaga dev's metrics.
func activations(ctx context.Context, d *devProcess) []Activation {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL("/metrics"), nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	return parseActivations(resp.Body)
}

// parseActivations reads the _sum and _count of ksaga_dev_activation_seconds
// by service (those with at least one activation).
func parseActivations(rd io.Reader) []Activation {
	sums, counts := map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]float64
		switch {
		case strings.HasPrefix(line, "ksaga_dev_activation_seconds_sum{"):
			m = sums
		case strings.HasPrefix(line, "ksaga_dev_activation_seconds_count{"):
			m = counts
		default:
			continue
		}
		_, rest, _ := strings.Cut(line, `service="`)
		svc, rest, _ := strings.Cut(rest, `"`)
		_, val, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err == nil {
			m[strings.TrimPrefix(svc, "saga/")] = v
		}
	}
	var out []Activation
	for svc, n := range counts {
		if n > 0 {
			out = append(out, Activation{Service: svc, Count: int(n), MeanMs: round1(1000 * sums[svc] / n)})
		}
	}
	slices.SortFunc(out, func(a, b Activation) int { return strings.Compare(a.Service, b.Service) })
	return out
}
