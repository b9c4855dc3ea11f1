package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Attribution of Redis commands to processes, from a short run under
// MONITOR (not timed: MONITOR slows Redis down). Each MONITOR line names
// the client address; the bench maps client ports to its processes through
// /proc/net/tcp and the processes' socket descriptors. Commands that Lua
// scripts run are shown by MONITOR as client "lua" right after the
// EVAL/EVALSHA that runs them and are attributed to that caller.
//
// Round trips: every top-level command outside MULTI is one, and
// MULTI…EXEC is one. A pipeline that is not a transaction (the broker's
// batched ingress XADDs) counts one per command here; at the low
// concurrency of this run such batches hold about one command.

// monitorLine is one parsed MONITOR line.
type monitorLine struct {
	client string // "127.0.0.1:54321", "lua", "unix:…"
	cmd    string // lower case
}

// parseMonitorLine parses `+1700000000.123456 [0 127.0.0.1:54321] "EVALSHA" "…"`.
func parseMonitorLine(s string) (monitorLine, bool) {
	s = strings.TrimPrefix(strings.TrimRight(s, "\r\n"), "+")
	i := strings.IndexByte(s, '[')
	j := strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return monitorLine{}, false
	}
	_, client, ok := strings.Cut(s[i+1:j], " ")
	if !ok {
		return monitorLine{}, false
	}
	rest := strings.TrimSpace(s[j+1:])
	if len(rest) < 2 || rest[0] != '"' {
		return monitorLine{}, false
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return monitorLine{}, false
	}
	return monitorLine{client: client, cmd: strings.ToLower(rest[1 : 1+end])}, true
}

// backgroundCommands are what a function process sends to Redis outside
// the handling of a step: an outbox relay's stream reads (XGROUP CREATE,
// XAUTOCLAIM, XREADGROUP, XACK), the saga gauges computed when /metrics is
// scraped (ZCARD, ZCOUNT, ZREMRANGEBYSCORE on the store's indexes),
// readiness PINGs, connection set-up.
var backgroundCommands = map[string]bool{
	"xgroup": true, "xautoclaim": true, "xreadgroup": true, "xack": true,
	"zcard": true, "zcount": true, "zremrangebyscore": true,
	"lrange": true, "ping": true, "hello": true, "client": true, "script": true, "info": true, "select": true,
}

// clientAgg counts one client connection's commands.
type clientAgg struct {
	top, lua   map[string]int64
	roundTrips int64
	background int64 // round trips of backgroundCommands
	inMulti    bool
}

// monitorAgg aggregates MONITOR lines per client.
type monitorAgg struct {
	clients  map[string]*clientAgg
	lastEval string
}

func newMonitorAgg() *monitorAgg { return &monitorAgg{clients: map[string]*clientAgg{}} }

func (m *monitorAgg) client(addr string) *clientAgg {
	c := m.clients[addr]
	if c == nil {
		c = &clientAgg{top: map[string]int64{}, lua: map[string]int64{}}
		m.clients[addr] = c
	}
	return c
}

func (m *monitorAgg) add(l monitorLine) {
	if l.client == "lua" {
		if m.lastEval != "" {
			m.client(m.lastEval).lua[l.cmd]++
		}
		return
	}
	c := m.client(l.client)
	c.top[l.cmd]++
	switch l.cmd {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		m.lastEval = l.client
	}
	switch {
	case l.cmd == "multi":
		c.inMulti = true
		c.roundTrips++
	case l.cmd == "exec" || l.cmd == "discard":
		c.inMulti = false
	case !c.inMulti:
		c.roundTrips++
		if backgroundCommands[l.cmd] {
			c.background++
		}
	}
}

// monitor is a running MONITOR connection.
type monitor struct {
	conn net.Conn
	agg  *monitorAgg
	wg   sync.WaitGroup
}

func startMonitor(addr string) (*monitor, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(conn, "MONITOR\r\n"); err != nil {
		_ = conn.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(conn, 1<<20)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	ok, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(ok, "+OK") {
		_ = conn.Close()
		return nil, fmt.Errorf("MONITOR: %q %v", ok, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	m := &monitor{conn: conn, agg: newMonitorAgg()}
	m.wg.Go(func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if l, ok := parseMonitorLine(line); ok {
				m.agg.add(l)
			}
		}
	})
	return m, nil
}

// stop ends MONITOR and returns the counts per client address.
func (m *monitor) stop() *monitorAgg {
	time.Sleep(50 * time.Millisecond) // let the last lines arrive
	_ = m.conn.Close()
	m.wg.Wait()
	return m.agg
}

// parseProcNetTCP returns, for the sockets of a /proc/net/tcp{,6} table
// connected to remotePort, local port → socket inode.
func parseProcNetTCP(table string, remotePort int) map[int]uint64 {
	out := map[int]uint64{}
	sc := lineScanner(table)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		lp, ok1 := hexPort(f[1])
		rp, ok2 := hexPort(f[2])
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if !ok1 || !ok2 || err != nil || rp != remotePort {
			continue
		}
		out[lp] = inode
	}
	return out
}

func hexPort(addr string) (int, bool) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return 0, false
	}
	p, err := strconv.ParseUint(addr[i+1:], 16, 32)
	return int(p), err == nil
}

// socketInodes lists the socket inodes a process holds.
func socketInodes(pid int) map[uint64]bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

// clientOwners maps the client ports of connections to redisPort to the
// names of the processes (of procs) that own them.
func clientOwners(redisPort int, procs []proc) map[int]string {
	ports := map[int]uint64{}
	for _, t := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if b, err := os.ReadFile(t); err == nil {
			for p, ino := range parseProcNetTCP(string(b), redisPort) {
				ports[p] = ino
			}
		}
	}
	owner := map[uint64]string{}
	for _, p := range procs {
		for ino := range socketInodes(p.pid) {
			owner[ino] = p.name
		}
	}
	out := map[int]string{}
	for port, ino := range ports {
		if name, ok := owner[ino]; ok {
			out[port] = name
		}
	}
	return out
}

// ProcRedis is one process's Redis traffic in the attribution run.
type ProcRedis struct {
	Process    string           `json:"process"`
	Steps      int64            `json:"steps"` // the saga's events it handled (0 for the broker and functions without steps)
	TopLevel   map[string]int64 `json:"top_level"`
	Lua        map[string]int64 `json:"in_scripts,omitempty"`
	RoundTrips int64            `json:"round_trips"`
	// StepPath are the round trips made while handling steps: all but the
	// backgroundCommands.
	StepPath int64 `json:"step_path_round_trips"`
	// Per step of this function (functions only).
	StepPathPerStep   float64 `json:"step_path_round_trips_per_step,omitempty"`
	RoundTripsPerSaga float64 `json:"round_trips_per_saga"`
	StepPathPerSaga   float64 `json:"step_path_round_trips_per_saga"`
	CommandsPerSaga   float64 `json:"commands_per_saga"` // top level + in scripts
}

// byProcess folds per-client counts into per-process ones.
func byProcess(agg *monitorAgg, owners map[int]string) map[string]*ProcRedis {
	out := map[string]*ProcRedis{}
	for addr, c := range agg.clients {
		name := "other"
		if _, p, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.Atoi(p); err == nil && owners[n] != "" {
				name = owners[n]
			}
		}
		pr := out[name]
		if pr == nil {
			pr = &ProcRedis{Process: name, TopLevel: map[string]int64{}, Lua: map[string]int64{}}
			out[name] = pr
		}
		for k, v := range c.top {
			pr.TopLevel[k] += v
		}
		for k, v := range c.lua {
			pr.Lua[k] += v
		}
		pr.RoundTrips += c.roundTrips
		pr.StepPath += c.roundTrips - c.background
	}
	return out
}

// StepRoundTrips are the step-path round trips of one step type of a
// function, or of all its steps.
type StepRoundTrips struct {
	Function string `json:"function"`
	// Step is a StepExtra's step, "other" (the function's other steps) or
	// "" (all its steps: it has no StepExtra).
	Step       string  `json:"step"`
	Steps      int64   `json:"steps"`
	RoundTrips float64 `json:"round_trips_per_step"`
	// Commands are the top-level commands behind them, per step of that
	// type (a callee's as "<callee> <command>").
	Commands map[string]float64 `json:"commands_per_step"`
}

// stepTypeRoundTrips splits every function's step-path round trips by step
// type: a StepExtra's commands (and its callees' step paths) count toward
// its step type only; the rest is shared by all the function's steps.
func stepTypeRoundTrips(extras []StepExtra, byProc map[string]*ProcRedis, steps0, steps1 stepCounts) []StepRoundTrips {
	var out []StepRoundTrips
	for _, name := range sortedKeys(byProc) {
		pr := byProc[name]
		if pr.Steps == 0 || name == "ksaga-dev" || name == "other" || name == "bench" {
			continue
		}
		var mine []StepExtra
		for _, e := range extras {
			if e.Function == name {
				mine = append(mine, e)
			}
		}
		own := map[string]bool{} // commands of a step type only
		for _, e := range mine {
			for _, c := range e.Commands {
				own[c] = true
			}
		}
		var shared int64 // round trips of all its steps
		base := map[string]float64{}
		for c, n := range pr.TopLevel {
			if own[c] || backgroundCommands[c] {
				continue
			}
			if c != "exec" && c != "discard" {
				base[strings.ToUpper(c)] += float64(n)
			}
		}
		shared = pr.StepPath
		for c := range own {
			shared -= pr.TopLevel[c]
		}
		perStep := func(m map[string]float64, n float64) map[string]float64 {
			out := map[string]float64{}
			for k, v := range m {
				if x := round3(div(v, n)); x > 0 {
					out[k] = x
				}
			}
			return out
		}
		baseRT := div(float64(shared), float64(pr.Steps))
		if len(mine) == 0 {
			out = append(out, StepRoundTrips{Function: name, Steps: pr.Steps, RoundTrips: round3(baseRT), Commands: perStep(base, float64(pr.Steps))})
			continue
		}
		var typed int64
		for _, e := range mine {
			var n float64
			for _, t := range e.Types {
				n += steps1[name][t] - steps0[name][t]
			}
			if n <= 0 {
				continue
			}
			typed += int64(n)
			extra := map[string]float64{}
			var rt float64
			for _, c := range e.Commands {
				extra[strings.ToUpper(c)] += float64(pr.TopLevel[c])
				rt += float64(pr.TopLevel[c])
			}
			for _, callee := range e.Callees {
				if cp := byProc[callee]; cp != nil {
					rt += float64(cp.StepPath)
					for c, v := range cp.TopLevel {
						if !backgroundCommands[c] && c != "exec" && c != "discard" {
							extra[callee+" "+strings.ToUpper(c)] += float64(v)
						}
					}
				}
			}
			cmds := perStep(base, float64(pr.Steps))
			for k, v := range perStep(extra, n) {
				cmds[k] = v
			}
			out = append(out, StepRoundTrips{Function: name, Step: e.Step, Steps: int64(n), RoundTrips: round3(baseRT + rt/n), Commands: cmds})
		}
		if rest := pr.Steps - typed; rest > 0 {
			out = append(out, StepRoundTrips{Function: name, Step: "other", Steps: rest, RoundTrips: round3(baseRT), Commands: perStep(base, float64(pr.Steps))})
		}
	}
	return out
}
