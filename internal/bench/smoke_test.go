package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/bench"
	"github.com/ksaga/ksaga/internal/devtest"
)

// TestSmoke runs `ksaga bench --duration 2s --warmup 1s --inflight 4
// --rounds 2` end to end — a real redis-server, ksaga dev and its
// functions, the floors twice, a cold start per function — and checks the
// JSON it writes. The open-loop
// rate is lowered (the stack cannot be assumed to sustain 1,000/s on every
// test machine) and the quiet gate shortened.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: starts redis-server and ksaga dev")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not on PATH")
	}
	ksaga := devtest.Binary(t)
	out := t.TempDir()
	// The bench builds every function twice (ksaga dev's build, and the
	// stripped one for cold starts, which shares little of the build cache):
	// on a fresh machine that alone takes minutes. Bound it by the test's
	// own deadline, with time left to report.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	if dl, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), dl.Add(-30*time.Second))
	}
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := bench.Command(ctx, []string{"--duration", "2s", "--warmup", "1s", "--inflight", "4",
		"--rate", "100", "--rounds", "2", "--quiet-wait", "1s", "--coldstart-runs", "2", "--attribution-sagas", "20", "--from-zero-runs", "1",
		"--out", out, "--dir", devtest.RepoRoot()}, ksaga, &stdout, &stderr)
	if err != nil {
		t.Fatalf("ksaga bench: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*bench.SagaPhase{res.Unloaded, res.Loaded, res.OpenLoop} {
		if p == nil {
			t.Fatalf("a phase is missing: %s", b)
		}
		if p.SagasPerS <= 0 || p.Latency.Count == 0 || p.Latency.P50Ms <= 0 || p.Latency.P99Ms < p.Latency.P50Ms {
			t.Errorf("%s: sagas/s %v, latency %+v", p.Name, p.SagasPerS, p.Latency)
		}
		if p.Errors.Total != 0 {
			t.Errorf("%s: %d errors, first: %s", p.Name, p.Errors.Total, p.Errors.First)
		}
	}
	l := res.Loaded
	if l.StepsPerSaga < 4 || l.CPUUsPerSaga <= 0 || l.Redis == nil || l.Redis.CallsPerStep <= 0 {
		t.Errorf("loaded: steps/saga %v, CPU %v µs/saga, redis %+v", l.StepsPerSaga, l.CPUUsPerSaga, l.Redis)
	}
	if res.FloorReply == nil || res.FloorReply.EventsPerS <= 0 || res.FloorEvalsha == nil || res.FloorEvalsha.EventsPerS <= 0 {
		t.Errorf("floors: %+v %+v", res.FloorReply, res.FloorEvalsha)
	}
	if res.Ratios == nil || res.Ratios.FloorSagasPerS <= 0 {
		t.Errorf("ratios: %+v", res.Ratios)
	}
	if len(res.MoreRounds) != 1 || res.MoreRounds[0].Loaded == nil || res.MoreRounds[0].Loaded.Ended == 0 ||
		len(res.RoundRatios) != 2 || res.RoundRatios[1].FloorSagasPerS <= 0 {
		t.Errorf("round 2: %+v, ratios %+v", res.MoreRounds, res.RoundRatios)
	}
	if len(res.ColdStart) == 0 || res.Memory == nil || res.Memory.Sampled == 0 || res.Attribution == nil || res.Attribution.StepsTotal == 0 {
		t.Errorf("cold start %d functions, memory %+v, attribution %+v", len(res.ColdStart), res.Memory, res.Attribution)
	}
	for _, c := range res.ColdStart {
		if c.Error != "" || c.MedianMs <= 0 || c.BinaryBytes == 0 {
			t.Errorf("cold start %+v", c)
		}
	}
	if fz := res.FromZero; fz == nil || fz.Cold.Count != 1 || fz.Warm.Count != 3 || len(fz.Activations) == 0 || !slices.Contains(fz.AtZero, "payment") {
		t.Errorf("from zero: %+v", fz)
	}
	if len(res.Errors) > 0 {
		t.Errorf("errors: %q", res.Errors)
	}
	if !strings.Contains(stdout.String(), "## Targets") {
		t.Errorf("markdown not printed:\n%s", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(out, "latest.md")); err != nil {
		t.Error(err)
	}
}
