package bench

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

const commandStatsBefore = `# Commandstats
cmdstat_evalsha:calls=100,usec=2000,usec_per_call=20.00,rejected_calls=0,failed_calls=0
cmdstat_xadd:calls=50,usec=400,usec_per_call=8.00,rejected_calls=0,failed_calls=0
cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0
cmdstat_xgroup|create:calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0
`

const commandStatsAfter = "# Commandstats\r\n" +
	"cmdstat_evalsha:calls=160,usec=3500,usec_per_call=21.88,rejected_calls=0,failed_calls=1\r\n" +
	"cmdstat_xadd:calls=50,usec=400,usec_per_call=8.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_info:calls=5,usec=150,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_xgroup|create:calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_HGETALL:calls=7,usec=35,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n"

func TestParseCommandStats(t *testing.T) {
	m, err := parseCommandStats(commandStatsAfter)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]CmdStat{"evalsha": {160, 3500}, "xadd": {50, 400}, "info": {5, 150}, "xgroup|create": {1, 5}, "hgetall": {7, 35}}
	if len(m) != len(want) {
		t.Fatalf("got %v", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %+v, want %+v", k, m[k], v)
		}
	}
	for _, bad := range []string{"cmdstat_get", "cmdstat_get:calls=x,usec=1"} {
		if _, err := parseCommandStats(bad); err == nil {
			t.Errorf("parseCommandStats(%q) accepted", bad)
		}
	}
}

func TestDiffCommandStats(t *testing.T) {
	a, _ := parseCommandStats(commandStatsBefore)
	b, _ := parseCommandStats(commandStatsAfter)
	d := diffCommandStats(a, b)
	want := map[string]CmdStat{"evalsha": {60, 1500}, "info": {2, 60}, "hgetall": {7, 35}}
	if len(d) != len(want) {
		t.Fatalf("diff = %v, want %v (unchanged commands left out)", d, want)
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %+v, want %+v", k, d[k], v)
		}
	}
	// CONFIG RESETSTAT between the snapshots: the after value is the delta.
	reset := diffCommandStats(b, map[string]CmdStat{"evalsha": {4, 80}})
	if reset["evalsha"] != (CmdStat{4, 80}) {
		t.Errorf("after a reset: %+v", reset)
	}
}

func TestRedisWindow(t *testing.T) {
	a := redisSnapshot{cmds: map[string]CmdStat{"evalsha": {100, 1000}, "info": {1, 10}},
		stats: map[string]string{"total_reads_processed": "1000", "total_net_input_bytes": "100"}}
	b := redisSnapshot{cmds: map[string]CmdStat{"evalsha": {150, 1600}, "xadd": {25, 100}, "info": {3, 30}},
		stats: map[string]string{"total_reads_processed": "1100", "total_net_input_bytes": "600"}}
	w := redisWindow(a, b, 50, 10)
	if len(w.Commands) != 2 || w.Commands[0].Command != "evalsha" || w.Commands[0].Calls != 50 || w.Commands[0].PerStep != 1 ||
		w.Commands[0].PerSaga != 5 || w.Commands[0].UsecPerCall != 12 || w.Commands[1].Command != "xadd" {
		t.Errorf("commands (INFO left out, most calls first): %+v", w.Commands)
	}
	if w.CallsPerStep != 1.5 || w.ReadsPerStep != 2 || w.ReadsPerSaga != 10 || w.NetInPerSaga != 50 || w.ServerUsecPerSaga != 70 {
		t.Errorf("window: %+v", w)
	}
}

func TestParseInfo(t *testing.T) {
	m := parseInfo("# Stats\r\ntotal_reads_processed:42\r\ninstantaneous_ops_per_sec:7\r\n\r\n# Memory\r\nused_memory:1048576\r\n")
	if infoInt(m, "total_reads_processed") != 42 || infoInt(m, "used_memory") != 1<<20 || infoInt(m, "missing") != 0 {
		t.Errorf("parseInfo = %v", m)
	}
}

func TestPersistenceArgs(t *testing.T) {
	if a, err := persistenceArgs("off"); err != nil || len(a) != 4 || a[3] != "no" {
		t.Errorf("off: %v %v", a, err)
	}
	if a, err := persistenceArgs("everysec"); err != nil || a[len(a)-1] != "everysec" {
		t.Errorf("everysec: %v %v", a, err)
	}
	if _, err := persistenceArgs("sometimes"); err == nil {
		t.Error("bad --aof accepted")
	}
}

func TestParseStepMetrics(t *testing.T) {
	text := `# HELP ksaga_step_events_total CloudEvents a step received
# TYPE ksaga_step_events_total counter
ksaga_step_events_total{outcome="applied",service="payment",type="io.ksaga.order.created"} 90
ksaga_step_events_total{outcome="business_failure",service="payment",type="io.ksaga.order.created"} 10
ksaga_step_events_total{outcome="applied",service="payment",type="io.ksaga.inventory.failed"} 5
ksaga_step_duration_seconds_count{service="payment",type="io.ksaga.order.created"} 100
ksaga_step_events_total{outcome="applied",service="order",type="io.ksaga.order.create"} 1e+06
`
	c := parseStepMetrics(text)
	if c.service("payment") != 105 || c["payment"]["io.ksaga.order.created"] != 100 || c.service("order") != 1e6 {
		t.Errorf("parsed %v", c)
	}
	before := stepCounts{"payment": {"io.ksaga.order.created": 40}}
	d := c.delta(before)
	if d["payment"] != 65 || d["order"] != 1000000 || len(d) != 2 {
		t.Errorf("delta %v", d)
	}
}

func TestFunctionsOf(t *testing.T) {
	var doc devServices
	err := json.Unmarshal([]byte(`{"scale":"always-on","services":[
	  {"name":"users","replicas":[{"id":1,"pid":13197,"port":37135,"state":"ready"}]},
	  {"name":"deadletter","replicas":[{"id":1,"pid":13200,"port":35365,"state":"ready"},{"id":2,"pid":13201,"port":35366,"state":"ready"}]},
	  {"name":"payment","replicas":[]},
	  {"name":"order","replicas":[{"id":1,"pid":13180,"port":36823,"state":"ready"}]}]}`), &doc)
	if err != nil {
		t.Fatal(err)
	}
	fs := functionsOf(doc)
	if len(fs) != 3 || fs[0].Name != "deadletter" || fs[0].PID != 13200 || fs[1].Name != "order" || fs[1].PID != 13180 || fs[1].Port != 36823 ||
		fs[2].Name != "users" || fs[2].Port != 37135 {
		t.Errorf("functionsOf = %+v", fs)
	}
}

func TestParseActivations(t *testing.T) {
	text := `# HELP ksaga_dev_activation_seconds Activations
ksaga_dev_activation_seconds_bucket{service="saga/payment",le="0.005"} 0
ksaga_dev_activation_seconds_sum{service="saga/payment"} 0.05
ksaga_dev_activation_seconds_count{service="saga/payment"} 2
ksaga_dev_activation_seconds_sum{service="saga/order"} 0
ksaga_dev_activation_seconds_count{service="saga/order"} 0
ksaga_dev_activation_seconds_sum{service="saga/users"} 0.012
ksaga_dev_activation_seconds_count{service="saga/users"} 1
`
	got := parseActivations(strings.NewReader(text))
	want := []Activation{{Service: "payment", Count: 2, MeanMs: 25}, {Service: "users", Count: 1, MeanMs: 12}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseActivations = %+v, want %+v", got, want)
	}
}
