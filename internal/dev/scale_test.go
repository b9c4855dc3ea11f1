package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/devscale"
	"github.com/ksaga/ksaga/sagatest"
)

// The autoscaling tests run real processes (this test binary as testFn)
// behind a real ingress, with Knative's autoscaler and a short window.

const testWindow = 2 * time.Second

// fleet is functions under their autoscalers, behind an ingress.
type fleet struct {
	t       *testing.T
	fs      map[string]*function
	reg     *prometheus.Registry
	logs    *sagatest.Buffer
	ingress string // base URL
	client  *http.Client
}

// scaledFunction is a testFn function with the given revision template
// annotations and containerConcurrency, autoscaled with testWindow.
func scaledFunction(t *testing.T, name string, ann map[string]string, cc int64, m *devscale.Metrics, log *slog.Logger, env ...string) *function {
	t.Helper()
	svc := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: name}}
	svc.Spec.Template.Annotations = ann
	svc.Spec.Template.Spec.ContainerConcurrency = ptr.To(cc)
	svc.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(30))
	cfg, err := devscale.ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := devscale.NewSettings(svc, cfg, devscale.Override{Window: testWindow})
	if err != nil {
		t.Fatal(err)
	}
	f := testFunction(t, name, env...)
	f.alwaysOn, f.settings = false, s
	f.scaler, f.pool = devscale.NewAutoscaler(devscale.AutoscalerConfig{Settings: s, Target: f, Logger: log, Metrics: m,
		DecideInterval: decideInterval(testWindow)})
	return f
}

// startFleet runs the functions built by mk under their autoscalers and an
// ingress, until the test ends.
func startFleet(t *testing.T, mk func(m *devscale.Metrics, log *slog.Logger) []*function) *fleet {
	t.Helper()
	sup, logs, _ := testSupervisor(t, 5*time.Second, DefaultBackoff())
	fl := &fleet{t: t, fs: map[string]*function{}, reg: prometheus.NewRegistry(), logs: logs,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}}
	fs := mk(devscale.NewMetrics(fl.reg), sup.log)
	ctx, cancel := context.WithCancel(context.Background())
	var reps, scalers sync.WaitGroup
	for _, f := range fs {
		fl.fs[f.nn.Name] = f
		f.attach(ctx, sup, &reps)
		scalers.Go(func() { f.scaler.Run(ctx) })
	}
	in := newIngress(sup.log, fs, http.NotFoundHandler(), func(io.Writer) {})
	fl.ingress = serveIngress(t, in).URL
	t.Cleanup(func() {
		cancel()
		scalers.Wait()
		reps.Wait()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	if err := waitReady(context.Background(), fs, time.Minute); err != nil {
		t.Fatal(err)
	}
	return fl
}

// work sends GET /work?ms=ms to a service through the ingress.
func (fl *fleet) work(service string, ms int) (testFnReply, error) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/work?ms=%d", fl.ingress, ms), nil)
	req.Host = service + ".saga.localhost"
	resp, err := fl.client.Do(req)
	if err != nil {
		return testFnReply{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return testFnReply{}, fmt.Errorf("%s: %d %s", service, resp.StatusCode, b)
	}
	var r testFnReply
	return r, json.Unmarshal(b, &r)
}

// metric returns the value of a series of ksaga dev's autoscaling metrics
// for service (a histogram's sample count).
func (fl *fleet) metric(name, service string) float64 {
	fl.t.Helper()
	mfs, err := fl.reg.Gather()
	if err != nil {
		fl.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "service") != "saga/"+service {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestScaleToZeroAndActivation: after the stable window without traffic a
// min-scale 0 service has no process left while a min-scale 1 service
// keeps one; a request to the service at zero is held while a process
// starts, and answered by it; the hold and the activation are in the
// metrics and in the log.
func TestScaleToZeroAndActivation(t *testing.T) {
	fl := startFleet(t, func(m *devscale.Metrics, log *slog.Logger) []*function {
		return []*function{
			scaledFunction(t, "zero", map[string]string{"autoscaling.knative.dev/min-scale": "0"}, 0, m, log),
			scaledFunction(t, "warm", map[string]string{"autoscaling.knative.dev/min-scale": "1"}, 0, m, log),
		}
	})
	zero, warm := fl.fs["zero"], fl.fs["warm"]
	reps, _ := zero.status()
	pid, oldPort := reps[0].PID, reps[0].Port
	sagatest.Eventually(t, 30*time.Second, func() error {
		if reps, _ := zero.status(); len(reps) != 0 {
			return fmt.Errorf("zero still has %+v", reps)
		}
		return nil
	})
	if processAlive(pid) {
		t.Errorf("zero's process %d is still alive at zero replicas", pid)
	}
	if reps, _ := warm.status(); len(reps) != 1 || reps[0].State != "ready" {
		t.Errorf("min-scale 1: replicas %+v", reps)
	}
	if !strings.Contains(fl.logs.String(), `msg="zero 1→0 (idle `) || strings.Contains(fl.logs.String(), "warm 1→0") {
		t.Errorf("scale events in the log:\n%s", fl.logs.String())
	}
	if st := zero.scaler.Status(); st.Desired != 0 || st.Condition != "inactive" {
		t.Errorf("zero's status %+v", st)
	}

	// Another process takes the port zero's replica left free: the next
	// replica must not depend on it.
	// (If the port is taken already, someone else is the squatter.)
	if squatter, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(oldPort))); err == nil {
		defer func() { _ = squatter.Close() }()
	}
	r, err := fl.work("zero", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.PID == pid || !processAlive(r.PID) {
		t.Errorf("answered by pid %d (the old one was %d)", r.PID, pid)
	}
	// The held request is answered as soon as the replica is ready; the
	// autoscaler logs and counts the activation right after, concurrently.
	sagatest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(fl.logs.String(), `msg="zero 0→1 (activation, ready in `) {
			return fmt.Errorf("no activation in the log:\n%s", fl.logs.String())
		}
		for _, m := range []string{"ksaga_dev_activations_total", "ksaga_dev_request_hold_seconds", "ksaga_dev_activation_seconds"} {
			if v := fl.metric(m, "zero"); v != 1 {
				return fmt.Errorf("%s{service=saga/zero} = %v, want 1", m, v)
			}
		}
		return nil
	})
	if v := fl.metric("ksaga_dev_request_hold_seconds", "warm"); v != 0 {
		t.Errorf("warm had %v held requests", v)
	}
}

// TestBurstScalesOutWithinLimits: a burst at four times the target
// concurrency runs more than one replica and never more than max-scale,
// the requests spread over them, and no process ever has more requests in
// flight than its containerConcurrency (each counts its own).
func TestBurstScalesOutWithinLimits(t *testing.T) {
	const (
		target = 5
		cc     = 5
		max    = 3
	)
	fl := startFleet(t, func(m *devscale.Metrics, log *slog.Logger) []*function {
		return []*function{scaledFunction(t, "burst", map[string]string{
			"autoscaling.knative.dev/target":                        fmt.Sprint(target),
			"autoscaling.knative.dev/target-utilization-percentage": "100",
			"autoscaling.knative.dev/max-scale":                     fmt.Sprint(max),
		}, cc, m, log)}
	})
	f := fl.fs["burst"]
	var peakProcs, peakReady atomic.Int32
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			reps, _ := f.status()
			peak(&peakProcs, int32(len(reps)))
			peak(&peakReady, int32(f.readyCount()))
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond): // sampling period
			}
		}
	}()
	var (
		mu      sync.Mutex
		byPID   = map[int]int{}
		maxSeen int
		errs    []error
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second)
	for range 4 * target {
		wg.Go(func() {
			for time.Now().Before(deadline) && peakReady.Load() < max {
				r, err := fl.work("burst", 100)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					byPID[r.PID]++
					maxSeen = maxOf(maxSeen, r.InFlight)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-watched
	if len(errs) > 0 {
		t.Fatalf("%d requests failed, the first: %v", len(errs), errs[0])
	}
	if n := peakReady.Load(); n < 2 {
		t.Errorf("at most %d replica ready during the burst", n)
	}
	if n := peakProcs.Load(); n > max {
		t.Errorf("%d replicas at once, max-scale is %d", n, max)
	}
	if maxSeen > cc {
		t.Errorf("a process had %d requests in flight, containerConcurrency is %d", maxSeen, cc)
	}
	if len(byPID) < 2 {
		t.Errorf("requests answered by %v: not spread", byPID)
	}
	if !strings.Contains(fl.logs.String(), `msg="burst 1→`) || !strings.Contains(fl.logs.String(), "concurrency ") {
		t.Errorf("no scale-out in the log:\n%s", fl.logs.String())
	}
	if st := f.scaler.Status(); st.Desired > max {
		t.Errorf("desired %d above max-scale", st.Desired)
	}
}

func peak(p *atomic.Int32, v int32) {
	for {
		old := p.Load()
		if v <= old || p.CompareAndSwap(old, v) {
			return
		}
	}
}

func maxOf(a, b int) int {
	if a > b {
		return a
	}
	return b
}
