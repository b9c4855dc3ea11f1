package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleResult is a run where some targets pass and some miss.
func sampleResult() *Result {
	cpu := []ProcCPU{
		{Process: "ksaga-dev", PerUnit: 2000}, {Process: "order", PerUnit: 800, PerStep: 400}, {Process: "payment", PerUnit: 300, PerStep: 300},
		{Process: "redis-server", PerUnit: 600}, {Process: "bench", PerUnit: 300},
	}
	res := &Result{
		StartedAt: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC), Command: "ksaga bench",
		Machine: Machine{CPUs: 2, Hostname: "vm"},
		Settings: Settings{Mode: "choreography", Saga: "order", Kinds: []string{"happy", "payment_fail", "inventory_fail"},
			Labels: []string{"happy", "payment fails", "inventory fails"}, Mix: map[string]float64{"happy": 80, "payment_fail": 10, "inventory_fail": 10}},
		Unloaded: &SagaPhase{Name: "unloaded", Inflight: 1, Latency: Latency{Count: 100, P50Ms: 2.5, P99Ms: 7}, Quiet: Quiet{Quiet: true}},
		Loaded: &SagaPhase{Name: "loaded", Inflight: 32, Ended: 4000, SagasPerS: 400, WindowS: 10, StepsPerSaga: 5, DeliveriesPerSaga: 6,
			Latency: Latency{Count: 4000, P50Ms: 70, MeanMs: 80, P99Ms: 120}, BoxBusyPct: 97, CPU: cpu, CPUUsPerSaga: 4000,
			Steps: map[string]int64{"order": 8000, "payment": 4000}, ByKind: map[string]Latency{"happy": {P50Ms: 70}},
			Redis: &RedisWindow{CallsPerStep: 20, ReadsPerStep: 3, Commands: []CmdRow{{Command: "evalsha", PerStep: 1, PerSaga: 5}}}},
		FloorReply:   &FloorPhase{Mode: "reply", Inflight: 32, EventsPerS: 10000, CPU: []ProcCPU{{Process: "floor-server", PerUnit: 100}}},
		FloorEvalsha: &FloorPhase{Mode: "evalsha", Inflight: 32, EventsPerS: 6000, CPU: []ProcCPU{{Process: "floor-server", PerUnit: 150}, {Process: "redis-server", PerUnit: 40}}},
		Attribution:  &Attribution{Sagas: 100, StepsTotal: 500, WorstStepRoundTrips: 3, WorstStepPath: "order, create step", FunctionRoundTripsPerStep: 1.4},
		ColdStart: []ColdStart{{Function: "order", BinaryBytes: 14_600_000, Runs: 20, MedianMs: 7.5, IdleRSSBytes: 14_000_000, IdleAnonBytes: 1_700_000, IdleFileBytes: 12_300_000},
			{Function: "payment", BinaryBytes: 14_100_000, Runs: 20, MedianMs: 6.5, IdleRSSBytes: 11_000_000}},
		Memory: &Memory{Sampled: 300, SagaHash: SizeStats{Mean: 850, P95: 960}, Total: SizeStats{Mean: 1300, P95: 1330},
			Encoding: map[string]int{"listpack": 300}, HashTTL: TTLStats{MinS: 86000, MaxS: 86400},
			Related: []RelatedKeys{{Pattern: "order:o:<order id>", Present: 300, Mean: 300, TTL: TTLStats{NoExpiry: 300}}}},
	}
	evaluate(res)
	return res
}

func TestEvaluate(t *testing.T) {
	res := sampleResult()
	r := res.Ratios
	// floor = 1 / (5/6000 + 2/10000) = 967.7
	if r == nil || r.HopsPerSaga != 7 || r.FloorSagasPerS != 967.7 || r.ThroughputVsFloor != 0.413 {
		t.Fatalf("ratios: %+v", r)
	}
	if r.BrokerUsPerHop != 285.7 || r.BrokerVsPlain != 2.857 || r.FunctionUsPerStep != 220 || r.FunctionVsEvalsha != 1.467 || r.RedisUsPerStep != 120 {
		t.Errorf("per-hop ratios: %+v", r)
	}
	got := map[string]*bool{}
	for _, tg := range res.Targets {
		got[tg.Name] = tg.Pass
	}
	want := map[string]bool{
		"sustained throughput (closed loop, 32 in flight)":                              false,
		"throughput vs the same-run floor":                                              false,
		"unloaded saga latency p50 (1 in flight)":                                       true,
		"unloaded saga latency p99 (1 in flight)":                                       false,
		"Redis round trips per step, on the step's own path":                            false,
		"broker CPU per hop vs a plain sdk-go receiver per event":                       false,
		"function cold start, exec → first 2xx (median, slowest function)":              true,
		"function idle RSS (largest)":                                                   false,
		"Redis memory per finished saga, all the keys it leaves, with retention expiry": false,
		"… of which the saga's own record (one hash)":                                   true,
	}
	for name, w := range want {
		if p, ok := got[name]; !ok || p == nil || *p != w {
			t.Errorf("target %q: pass = %v, want %v", name, p, w)
		}
	}
	if p, ok := got["function binary, stripped (largest)"]; !ok || p != nil {
		t.Errorf("binary size: reported without a goal, got %v %v", ok, p)
	}
	if p, ok := got["saga latency p99 at 1,000 sagas/s"]; !ok || p != nil {
		t.Errorf("open loop not run: want an unmeasured target, got %v %v", ok, p)
	}
	// A missed throughput target says where the CPU went.
	for _, tg := range res.Targets {
		if strings.HasPrefix(tg.Name, "sustained throughput") && !strings.Contains(tg.Note, "ksaga-dev 50% (2000 µs)") {
			t.Errorf("throughput miss note: %q", tg.Note)
		}
	}
	// A missed idle RSS splits private from file-backed pages.
	for _, tg := range res.Targets {
		if tg.Name == "function idle RSS (largest)" && !strings.Contains(tg.Note, "1.7 MB private (heap, stacks, runtime), 12.3 MB file-backed: 84% of its 14.6 MB binary") {
			t.Errorf("idle RSS miss note: %q", tg.Note)
		}
	}
	if len(res.Limits) == 0 || !strings.Contains(res.Limits[0], "CPU-bound") {
		t.Errorf("limits: %q", res.Limits)
	}
}

func TestMarkdownAndWrite(t *testing.T) {
	res := sampleResult()
	res.Sweep = []*SagaPhase{{Name: "sweep-1", Inflight: 1, SagasPerS: 150, Latency: Latency{P50Ms: 6, P99Ms: 9}},
		{Name: "sweep-8", Inflight: 8, SagasPerS: 400, Latency: Latency{P50Ms: 20, P99Ms: 40}}}
	md := Markdown(res)
	for _, want := range []string{"# ksaga bench — choreography", "| **MISS** | sustained throughput", "| pass | function cold start",
		"## CPU per saga by process", "## Floor, same run", "## Cold start", "## Redis memory per finished saga", "**none**", "| order | 14.6 MB | 7.50 ms (0.00–0.00), 20 | 14.0 MB | 1.7 MB | 12.3 MB |",
		"## What limits throughput", "| sweep-8 | 8 in flight | 400 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	if err := write(res, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"latest.json", "latest.md", "latest-sweep.svg", "20261125T200000Z-choreography.json",
		"20261125T200000Z-choreography.md", "20261125T200000Z-choreography-sweep.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	var back Result
	b, _ := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err := json.Unmarshal(b, &back); err != nil || back.Loaded.SagasPerS != 400 || len(back.Targets) != len(res.Targets) {
		t.Errorf("latest.json round trip: %v", err)
	}
}

// With --rounds, the floor share and the broker ratio are judged on the
// median round, not on round 1 alone.
func TestRoundsJudgeTheMedian(t *testing.T) {
	res := sampleResult() // round 1: 41.3 % of the floor, broker 2.86×
	round := func(name string, sagasPerS, brokerUs float64) Round {
		return Round{
			Loaded: &SagaPhase{Name: name, Inflight: 32, Ended: 4000, SagasPerS: sagasPerS, StepsPerSaga: 5, DeliveriesPerSaga: 6,
				CPU: []ProcCPU{{Process: "ksaga-dev", PerUnit: brokerUs}, {Process: "payment", PerUnit: 300}}},
			FloorReply:   &FloorPhase{Mode: "reply", Inflight: 32, EventsPerS: 10000, CPU: []ProcCPU{{Process: "floor-server", PerUnit: 100}}},
			FloorEvalsha: &FloorPhase{Mode: "evalsha", Inflight: 32, EventsPerS: 6000, CPU: []ProcCPU{{Process: "floor-server", PerUnit: 150}}},
		}
	}
	res.MoreRounds = []Round{round("loaded-2", 600, 900), round("loaded-3", 500, 1000)}
	res.Notes = nil
	evaluate(res)

	if len(res.RoundRatios) != 3 || res.RoundRatios[0].Round != 1 || res.RoundRatios[2].Round != 3 ||
		res.RoundRatios[1].ThroughputVsFloor != 0.62 || res.RoundRatios[2].BrokerVsPlain != 1.429 {
		t.Fatalf("round ratios: %+v", res.RoundRatios)
	}
	byName := map[string]Target{}
	for _, tg := range res.Targets {
		byName[tg.Name] = tg
	}
	share := byName["throughput vs the same-run floor"]
	if share.Pass == nil || !*share.Pass || !strings.Contains(share.Measured, "51.7 %, the median of 3 rounds (41.3 / 62.0 / 51.7 %") {
		t.Errorf("floor share target: %+v", share)
	}
	broker := byName["broker CPU per hop vs a plain sdk-go receiver per event"]
	if broker.Pass == nil || !*broker.Pass || !strings.Contains(broker.Measured, "1.43×, the median of 3 rounds (2.86 / 1.29 / 1.43") {
		t.Errorf("broker target: %+v", broker)
	}
	// Round 1 alone still misses both: the ratios of the detail tables are round 1's.
	if res.Ratios.ThroughputVsFloor != 0.413 || res.Ratios.BrokerVsPlain != 2.857 {
		t.Errorf("round 1 ratios changed: %+v", res.Ratios)
	}

	md := Markdown(res)
	for _, want := range []string{"| loaded-2 | 32 in flight | 600 |", "| reply (round 1) |", "| evalsha (round 3) |",
		"Round 1's ratios:", "Rounds (3, each a loaded phase", "| 2 | 600 | 968 | 62.0 % | 128.6 | 100.0 | 1.29× |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}
