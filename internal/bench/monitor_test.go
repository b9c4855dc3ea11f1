package bench

import (
	"testing"
)

func TestParseMonitorLine(t *testing.T) {
	for _, tc := range []struct {
		in     string
		client string
		cmd    string
		ok     bool
	}{
		{"+1795637924.687862 [0 127.0.0.1:54504] \"EVALSHA\" \"abc\" \"2\"\r\n", "127.0.0.1:54504", "evalsha", true},
		{"+1795637924.687910 [0 lua] \"HGET\" \"k\" \"f\"\r\n", "lua", "hget", true},
		{"1795637924.6 [3 unix:/tmp/redis.sock] \"ping\"", "unix:/tmp/redis.sock", "ping", true},
		{"+OK\r\n", "", "", false},
		{"+1.0 [0 127.0.0.1:1] garbage", "", "", false},
	} {
		l, ok := parseMonitorLine(tc.in)
		if ok != tc.ok || l.client != tc.client || l.cmd != tc.cmd {
			t.Errorf("parseMonitorLine(%q) = %+v %v", tc.in, l, ok)
		}
	}
}

func TestMonitorAgg(t *testing.T) {
	m := newMonitorAgg()
	fn, br := "127.0.0.1:1000", "127.0.0.1:2000"
	for _, l := range []monitorLine{
		{fn, "mget"},
		{fn, "evalsha"}, {"lua", "hget"}, {"lua", "hset"},
		{br, "multi"}, {br, "xadd"}, {br, "xack"}, {br, "xdel"}, {br, "exec"},
		{br, "xreadgroup"},
		{fn, "xautoclaim"}, // background (an outbox relay)
		{fn, "evalsha"}, {"lua", "hget"},
	} {
		m.add(l)
	}
	f, b := m.clients[fn], m.clients[br]
	if f.roundTrips != 4 || f.background != 1 || f.top["evalsha"] != 2 || f.lua["hget"] != 2 || f.lua["hset"] != 1 {
		t.Errorf("function client: %+v", f)
	}
	if b.roundTrips != 2 || b.top["xadd"] != 1 || b.top["multi"] != 1 || len(b.lua) != 0 {
		t.Errorf("broker client: MULTI…EXEC is one round trip: %+v", b)
	}
	procs := byProcess(m, map[int]string{1000: "payment"})
	if p := procs["payment"]; p == nil || p.RoundTrips != 4 || p.StepPath != 3 || p.Lua["hget"] != 2 {
		t.Errorf("payment: %+v", procs["payment"])
	}
	if o := procs["other"]; o == nil || o.RoundTrips != 2 {
		t.Errorf("unmapped client: %+v", procs["other"])
	}
}

func TestParseProcNetTCP(t *testing.T) {
	// Redis on port 6390 = 0x18F6; clients on 0xD4A8 (54440) and 0x9C40 (40000).
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:18F6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D4A8 0100007F:18F6 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:18F6 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 20 4 30 10 -1
`
	got := parseProcNetTCP(table, 6390)
	if len(got) != 2 || got[54440] != 222 || got[40000] != 333 {
		t.Errorf("parseProcNetTCP = %v", got)
	}
}
