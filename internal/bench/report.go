package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Markdown renders the short report (latest.md).
func Markdown(res *Result) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := res.Machine
	p("# ksaga bench — %s, %s\n\n", res.Settings.Mode, res.StartedAt.Format("2006-01-02 15:04 UTC"))
	p("`%s` on %s: %d × %s, Linux %s, %.1f GiB, %s, redis-server %s. Redis: %s.\n", res.Command, m.Hostname, m.CPUs, m.CPUModel,
		m.Kernel, float64(m.MemTotalBytes)/(1<<30), m.Go, m.Redis, res.Settings.Redis)
	tree := res.Tree.Commit
	if n := len(res.Tree.Dirty); n > 0 {
		tree += fmt.Sprintf(" + %d uncommitted changes (%s)", n, strings.Join(res.Tree.Dirty, "; "))
	}
	identity := "sender identity off"
	if res.Settings.OIDC {
		identity = "sender identity on (OIDC tokens, EventPolicies)"
	}
	if res.Settings.RedisACL {
		identity += ", a Redis ACL user per function"
	} else {
		identity += ", no Redis ACL users"
	}
	p("Tree: %s. Saga: %s, mix %s; %s. Warm-up %gs, window %gs per phase. Took %.0f s.\n\n",
		tree, res.Settings.Saga, mixText(res.Settings), identity, res.Settings.WarmupS, res.Settings.DurationS, res.TookS)

	p("## Targets (this machine; docs/benchmarks/README.md says where each comes from)\n\n| | target | goal | measured | note |\n|---|---|---|---|---|\n")
	for _, t := range res.Targets {
		mark := "–"
		if t.Pass != nil {
			mark = "pass"
			if !*t.Pass {
				mark = "**MISS**"
			}
		}
		p("| %s | %s | %s | %s | %s |\n", mark, t.Name, t.Goal, t.Measured, t.Note)
	}

	p("\n## Sagas (start event POSTed to the broker → terminal event delivered to the bench)\n\n")
	p("| phase | load | sagas/s | p50 ms | p95 ms | p99 ms | max ms | errors | CPU µs/saga | box busy | quiet |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range res.phases() {
		load := fmt.Sprintf("%d in flight", ph.Inflight)
		if ph.RatePerS > 0 {
			load = fmt.Sprintf("%s/s open loop", thousands(ph.RatePerS))
		}
		q := "yes"
		if !ph.Quiet.Quiet {
			q = fmt.Sprintf("no (%.0f%% idle)", ph.Quiet.IdlePct)
		}
		p("| %s | %s | %s | %.2f | %.2f | %.2f | %.1f | %d | %.0f | %.0f%% | %s |\n", ph.Name, load, thousands(ph.SagasPerS),
			ph.Latency.P50Ms, ph.Latency.P95Ms, ph.Latency.P99Ms, ph.Latency.MaxMs, ph.Errors.Total, ph.CPUUsPerSaga, ph.BoxBusyPct, q)
	}
	for _, ph := range res.phases() {
		if ph.Backlog > 0 && ph.DrainS >= 1 {
			p("\nAfter %s the broker still held %s undelivered events; they took %.1f s to drain before the next phase.\n", ph.Name, thousands(float64(ph.Backlog)), ph.DrainS)
		}
	}
	if l := res.Loaded; l != nil {
		var parts []string
		for _, k := range res.Settings.Kinds {
			if lat, ok := l.ByKind[k]; ok {
				parts = append(parts, fmt.Sprintf("%s p50 %.2f / p99 %.2f ms (%d)", k, lat.P50Ms, lat.P99Ms, lat.Count))
			}
		}
		p("\nLoaded, by kind: %s.\n", strings.Join(parts, "; "))
		for _, ph := range []*SagaPhase{res.Unloaded, l, res.OpenLoop} {
			if ph != nil && ph.Errors.First != "" {
				p("First error in %s: %s.\n", ph.Name, ph.Errors.First)
			}
		}

		p("\n## CPU per saga by process (loaded, %d in flight; /proc/<pid>/stat over the window)\n\n", l.Inflight)
		rss := map[string]int64{}
		for _, r := range res.RSS {
			rss[r.Process] = r.Bytes
		}
		p("| process | µs/saga | µs/step | share | RSS at end |\n|---|---|---|---|---|\n")
		rows := slices.Clone(l.CPU)
		slices.SortStableFunc(rows, func(a, b ProcCPU) int { return cmpDesc(a.PerUnit, b.PerUnit) })
		for _, c := range rows {
			step := ""
			if c.PerStep > 0 {
				step = fmt.Sprintf("%.0f", c.PerStep)
			}
			p("| %s | %.0f | %s | %.0f%% | %.1f MB |\n", c.Process, c.PerUnit, step, c.SharePct, float64(rss[c.Process])/1e6)
		}
		p("| **total** | **%.0f** | | | |\n| other processes (box busy − the above) | %.0f | | | |\n", l.CPUUsPerSaga, l.UnaccountedUsPerSaga)
		var steps []string
		for _, s := range sortedKeys(l.Steps) {
			steps = append(steps, fmt.Sprintf("%s %.2f", s, div(float64(l.Steps[s]), float64(l.Ended))))
		}
		p("\nA *step* is one delivered event of the saga handled by a function (its `ksaga_step_events_total`). Steps per saga: %.2f (%s); "+
			"deliveries per saga %.2f (steps + the terminal event to the bench); hops per saga %.2f (1 ingress POST + deliveries).",
			l.StepsPerSaga, strings.Join(steps, ", "), l.DeliveriesPerSaga, 1+l.DeliveriesPerSaga)
		if res.CPUNote != "" {
			p(" %s.", res.CPUNote)
		}
		p("\n")
	}

	if res.FloorReply != nil || res.FloorEvalsha != nil {
		p("\n## Floor, same run (an sdk-go receiver replying with an event; the same + 1 EVALSHA per event)\n\n")
		p("| receiver | in flight | events/s | p50 ms | p99 ms | server µs/event | redis µs/event | bench (client) µs/event | errors | quiet |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for i, rd := range res.rounds() {
			for _, f := range []*FloorPhase{rd.FloorReply, rd.FloorEvalsha} {
				if f == nil {
					continue
				}
				mode := f.Mode
				if len(res.MoreRounds) > 0 {
					mode = fmt.Sprintf("%s (round %d)", f.Mode, i+1)
				}
				q := "yes"
				if !f.Quiet.Quiet {
					q = fmt.Sprintf("no (%.0f%% idle)", f.Quiet.IdlePct)
				}
				p("| %s | %d | %s | %.2f | %.2f | %.1f | %.1f | %.1f | %d | %s |\n", mode, f.Inflight, thousands(f.EventsPerS), f.Latency.P50Ms,
					f.Latency.P99Ms, cpuOf(f.CPU, "floor-server"), cpuOf(f.CPU, "redis-server"), cpuOf(f.CPU, "bench"), f.Errors, q)
			}
		}
		if r := res.Ratios; r != nil {
			what := "Ratios"
			if len(res.MoreRounds) > 0 {
				what = "Round 1's ratios"
			}
			p("\n%s: throughput %.0f%% of the floor; broker %.1f µs/hop = %.2f× plain receiver; functions %.1f µs/step = %.2f× EVALSHA receiver; "+
				"Redis %.1f µs/step = %.2f× the floor's per EVALSHA.\n\n%s.\n", what, 100*r.ThroughputVsFloor, r.BrokerUsPerHop, r.BrokerVsPlain,
				r.FunctionUsPerStep, r.FunctionVsEvalsha, r.RedisUsPerStep, r.RedisVsFloor, r.Formula)
		}
		if rs := res.RoundRatios; len(rs) > 1 {
			p("\nRounds (%d, each a loaded phase and then the two floor phases; the floor-share and broker targets take the median):\n\n"+
				"| round | sagas/s | floor sagas/s | share of the floor | broker µs/hop | plain receiver µs/event | broker ÷ plain |\n|---|---|---|---|---|---|---|\n", len(rs))
			for _, r := range rs {
				p("| %d | %s | %s | %.1f %% | %.1f | %.1f | %.2f× |\n", r.Round, thousands(r.SagasPerS), thousands(r.FloorSagasPerS),
					100*r.ThroughputVsFloor, r.BrokerUsPerHop, r.PlainUsPerEvent, r.BrokerVsPlain)
			}
		}
	}

	if l := res.Loaded; l != nil && l.Redis != nil {
		w := l.Redis
		p("\n## Redis (loaded window, INFO deltas)\n\n%.2f commands per step (%.1f per saga; calls made inside Lua scripts are counted by Redis too), "+
			"%.2f socket reads per step (%.1f per saga: round trips from every client, a pipeline or MULTI…EXEC being one), %.0f µs inside commands per saga, "+
			"%.0f B in / %.0f B out per saga. µs/call is Redis's own wall-clock time inside the command (a script includes the commands it calls); "+
			"on a saturated box it includes the time Redis was preempted.\n\n| command | per step | per saga | µs/call |\n|---|---|---|---|\n",
			w.CallsPerStep, w.CallsPerSaga, w.ReadsPerStep, w.ReadsPerSaga, w.ServerUsecPerSaga, w.NetInPerSaga, w.NetOutPerSaga)
		for _, c := range w.Commands {
			if c.PerSaga < 0.01 {
				continue
			}
			p("| %s | %.2f | %.2f | %.2f |\n", c.Command, c.PerStep, c.PerSaga, c.UsecPerCall)
		}
	}
	if a := res.Attribution; a != nil && len(a.Processes) > 0 {
		p("\nBy process (%d sagas under MONITOR, %d steps). A round trip is a top-level command, or one MULTI…EXEC. "+
			"The step path excludes a function's background commands (%s).\n\n",
			a.Sagas, a.StepsTotal, strings.Join(sortedKeys(backgroundCommands), ", "))
		p("| process | steps/saga | step-path round trips/step | round trips/saga (all / step path) | top-level commands per saga | run inside its scripts per saga |\n|---|---|---|---|---|---|\n")
		for _, pr := range a.Processes {
			rtStep := ""
			if pr.Steps > 0 {
				rtStep = fmt.Sprintf("%.2f", pr.StepPathPerStep)
			}
			p("| %s | %.2f | %s | %.2f / %.2f | %s | %s |\n", pr.Process, div(float64(pr.Steps), float64(a.Sagas)), rtStep, pr.RoundTripsPerSaga,
				pr.StepPathPerSaga, perSaga(pr.TopLevel, a.Sagas), perSaga(pr.Lua, a.Sagas))
		}
		if len(a.StepTypes) > 0 {
			p("\nRound trips per step on each step's own path, by function and step type (a step type's own commands, and those of the " +
				"functions it calls, count toward it alone):\n\n| function | step | steps | round trips per step | top-level commands per step |\n|---|---|---|---|---|\n")
			for _, st := range a.StepTypes {
				step := st.Step
				if step == "" {
					step = "every step"
				}
				p("| %s | %s | %d | %.2f | %s |\n", st.Function, step, st.Steps, st.RoundTrips, perStepText(st.Commands))
			}
		}
	}

	if fz := res.FromZero; fz != nil && fz.Cold.Count > 0 {
		p("\n## From zero (Knative's autoscaling in ksaga dev, --scale-window %gs)\n\n", fz.WindowS)
		up := ""
		if len(fz.Up) > 0 {
			up = fmt.Sprintf(" (%s: min-scale ≥ 1, always up)", strings.Join(fz.Up, ", "))
		}
		p("Each saga started when %s had no process%s; the activator's hold, "+
			"the process start and its first readiness probe are in the saga's latency. Warm: %d sagas right after each, every function up.\n\n",
			strings.Join(fz.AtZero, ", "), up, warmPerRun)
		p("| saga latency | sagas | p50 | mean | max |\n|---|---|---|---|---|\n")
		p("| from zero | %d | %.1f ms | %.1f ms | %.1f ms |\n", fz.Cold.Count, fz.Cold.P50Ms, fz.Cold.MeanMs, fz.Cold.MaxMs)
		p("| warm, right after | %d | %.1f ms | %.1f ms | %.1f ms |\n", fz.Warm.Count, fz.Warm.P50Ms, fz.Warm.MeanMs, fz.Warm.MaxMs)
		if len(fz.Activations) > 0 {
			var parts []string
			for _, a := range fz.Activations {
				parts = append(parts, fmt.Sprintf("%s %.1f ms (%d)", a.Service, a.MeanMs, a.Count))
			}
			p("\nActivations, from the decision to the first ready replica (mean, count): %s. "+
				"Back at zero after each run in %.1f s on average (the stable window plus the retention, both capped by the window).\n",
				strings.Join(parts, ", "), fz.ZeroWaitS)
		}
	}

	if len(res.ColdStart) > 0 {
		p("\n## Cold start, idle RSS, binaries (stripped: CGO_ENABLED=0 -trimpath -ldflags='-s -w')\n\n")
		p("| function | binary | cold start median (min–max), runs | idle RSS (1 s after) | … private | … file-backed | probe |\n|---|---|---|---|---|---|---|\n")
		for _, c := range res.ColdStart {
			e := ""
			if c.Error != "" {
				e = " — " + c.Error
			}
			p("| %s | %.1f MB | %.2f ms (%.2f–%.2f), %d | %.1f MB | %.1f MB | %.1f MB | %s%s |\n", c.Function, float64(c.BinaryBytes)/1e6, c.MedianMs, c.MinMs, c.MaxMs,
				c.Runs, float64(c.IdleRSSBytes)/1e6, float64(c.IdleAnonBytes)/1e6, float64(c.IdleFileBytes)/1e6, c.Probe, e)
		}
	}

	if mem := res.Memory; mem != nil && mem.Sampled > 0 {
		p("\n## Redis memory per finished saga (MEMORY USAGE … SAMPLES 0, %d sagas)\n\n", mem.Sampled)
		p("| key | present | mean bytes | TTL |\n|---|---|---|---|\n")
		p("| the saga's record (one hash: state, history, stored replies) | %d | %.0f (p95 %.0f) | %s |\n", mem.Sampled, mem.SagaHash.Mean, mem.SagaHash.P95, ttlText(mem.HashTTL))
		for _, k := range mem.Related {
			p("| %s | %d | %.0f | %s |\n", k.Pattern, k.Present, k.Mean, ttlText(k.TTL))
		}
		for _, st := range mem.Streams {
			p("| %s | %d entries | %.0f | none (capped) |\n", st.About, st.Len, st.EntryBytes)
		}
		p("| **total per saga** | | **%.0f** (p95 %.0f) | |\n", mem.Total.Mean, mem.Total.P95)
		p("\nSaga hash encoding: %s. INFO used_memory grew %.0f B per saga started. %d sagas were unfinished after the run.\n",
			encodings(mem.Encoding), mem.UsedMemoryPerSaga, mem.ActiveIndexLen)
	}

	if len(res.Limits) > 0 {
		p("\n## What limits throughput\n\n")
		for _, l := range res.Limits {
			p("- %s\n", l)
		}
	}
	if len(res.Errors) > 0 {
		p("\n## Errors\n\n")
		for _, e := range res.Errors {
			p("- %s\n", e)
		}
	}
	if len(res.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range res.Notes {
			p("- %s\n", n)
		}
	}
	return b.String()
}

func cmpDesc(a, b float64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func perSaga(m map[string]int64, sagas int64) string {
	type kv struct {
		k string
		v int64
	}
	var kvs []kv
	for k, v := range m {
		kvs = append(kvs, kv{k, v})
	}
	slices.SortFunc(kvs, func(a, b kv) int {
		if a.v != b.v {
			return int(b.v - a.v)
		}
		return strings.Compare(a.k, b.k)
	})
	var parts []string
	for _, x := range kvs {
		if v := div(float64(x.v), float64(sagas)); v >= 0.01 {
			parts = append(parts, fmt.Sprintf("%s %.2f", strings.ToUpper(x.k), v))
		}
	}
	return strings.Join(parts, ", ")
}

// mixText is the mix's weights by kind label.
func mixText(s Settings) string {
	var parts []string
	for i, k := range s.Kinds {
		label := k
		if i < len(s.Labels) && s.Labels[i] != "" {
			label = s.Labels[i]
		}
		parts = append(parts, fmt.Sprintf("%.0f%% %s", s.Mix[k], label))
	}
	return strings.Join(parts, " / ")
}

// perStepText lists commands per step, largest first.
func perStepText(m map[string]float64) string {
	keys := sortedKeys(m)
	slices.SortStableFunc(keys, func(a, b string) int { return cmpDesc(m[a], m[b]) })
	var parts []string
	for _, k := range keys {
		if m[k] >= 0.01 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func ttlText(t TTLStats) string {
	switch {
	case t.NoExpiry > 0 && t.MaxS == 0:
		return "**none**"
	case t.NoExpiry > 0:
		return fmt.Sprintf("%d without expiry; others %d–%d s", t.NoExpiry, t.MinS, t.MaxS)
	}
	return fmt.Sprintf("%d–%d s", t.MinS, t.MaxS)
}

// write stores the result in dir: latest.json, latest.md, timestamped
// copies, and the sweep plot when there is a sweep.
func write(res *Result, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	js = append(js, '\n')
	md := []byte(Markdown(res))
	stamp := res.StartedAt.Format("20060102T150405Z") + "-" + res.Settings.Mode
	files := map[string][]byte{"latest.json": js, "latest.md": md, stamp + ".json": js, stamp + ".md": md}
	if len(res.Sweep) > 0 {
		var svg bytes.Buffer
		if err := writeSVG(&svg, sweepTitle(res), sweepPoints(res), sweepRefs(res)); err != nil {
			return err
		}
		files["latest-sweep.svg"] = svg.Bytes()
		files[stamp+"-sweep.svg"] = svg.Bytes()
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func sweepTitle(res *Result) string {
	return fmt.Sprintf("ksaga %s saga: throughput vs latency (%d cores, %s)", res.Settings.Mode, res.Machine.CPUs, res.StartedAt.Format("2006-01-02"))
}

func sweepPoints(res *Result) []plotPoint {
	var pts []plotPoint
	for _, s := range res.Sweep {
		pts = append(pts, plotPoint{X: s.SagasPerS, P50: s.Latency.P50Ms, P99: s.Latency.P99Ms, Label: fmt.Sprint(s.Inflight)})
	}
	return pts
}

func sweepRefs(res *Result) []vline {
	refs := []vline{{X: targetSagasPerS, Label: "target 1,200/s", Color: "#2ca02c"}}
	if r := res.Ratios; r != nil && r.FloorSagasPerS > 0 {
		refs = append(refs, vline{X: r.FloorSagasPerS, Label: fmt.Sprintf("same-run floor %s/s", thousands(r.FloorSagasPerS)), Color: "#7f7f7f"})
	}
	return refs
}
