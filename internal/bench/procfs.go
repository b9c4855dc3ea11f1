package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU accounting from /proc, as the floors were first measured: a process's CPU is
// utime+stime of /proc/<pid>/stat (all its threads, including exited ones),
// read at the start and the end of a measured window.

// clockTicks is USER_HZ, the unit of utime and stime: AT_CLKTCK of the
// auxiliary vector, or 100 (what Linux uses on every common architecture).
var clockTicks = func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	const atClkTck = 17
	for len(b) >= 16 {
		k, v := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
		if k == atClkTck && v > 0 {
			return int64(v)
		}
		b = b[16:]
	}
	return 100
}()

// parseProcStat returns utime and stime (in clock ticks) from the contents
// of /proc/<pid>/stat. The command name (field 2) is in parentheses and may
// itself contain spaces and parentheses, so fields are counted from the last
// ')'.
func parseProcStat(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("proc stat: no ')' after the command name")
	}
	// After ") ": field 3 (state) is index 0; utime is field 14, stime 15.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("proc stat: utime %q: %w", f[11], err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("proc stat: stime %q: %w", f[12], err)
	}
	return utime, stime, nil
}

// ticksToDuration converts clock ticks to a duration.
func ticksToDuration(t uint64) time.Duration {
	return time.Duration(int64(t) * int64(time.Second) / clockTicks)
}

// processCPU is the CPU time (user+system) a process has used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	u, s, err := parseProcStat(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return ticksToDuration(u + s), nil
}

// statusBytes returns a "<field>: <n> kB" line of /proc/<pid>/status in
// bytes (VmRSS, RssAnon, RssFile, …).
func statusBytes(b []byte, field string) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: %s line %q", field, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status: %s %q: %w", field, f[0], err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("proc status: no %s (a zombie or a kernel thread?)", field)
}

// memUsage is a process's resident set and its two parts: private
// (anonymous: heap, stacks, the Go runtime's data) and file-backed (the
// pages of its executable and libraries it has mapped in).
type memUsage struct {
	RSS, Anon, File int64
}

func parseMemUsage(b []byte) (memUsage, error) {
	var m memUsage
	var err error
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"VmRSS", &m.RSS}, {"RssAnon", &m.Anon}, {"RssFile", &m.File}} {
		if *f.dst, err = statusBytes(b, f.name); err != nil {
			return memUsage{}, err
		}
	}
	return m, nil
}

// processMem is a process's resident set, split into private and
// file-backed pages.
func processMem(pid int) (memUsage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memUsage{}, err
	}
	return parseMemUsage(b)
}

// sysCPU is the first line of /proc/stat: the whole machine's CPU time in
// clock ticks.
type sysCPU struct {
	Idle  uint64 // idle + iowait
	Total uint64 // every field except guest and guest_nice (already in user and nice)
}

// parseSysStat parses the "cpu " line of /proc/stat.
func parseSysStat(b []byte) (sysCPU, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "cpu ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 4 {
			return sysCPU{}, fmt.Errorf("proc stat: cpu line %q", line)
		}
		var c sysCPU
		for i, s := range f {
			if i >= 8 { // guest, guest_nice are counted in user, nice
				break
			}
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return sysCPU{}, fmt.Errorf("proc stat: cpu field %d %q: %w", i, s, err)
			}
			c.Total += v
			if i == 3 || i == 4 { // idle, iowait
				c.Idle += v
			}
		}
		return c, nil
	}
	return sysCPU{}, errors.New("proc stat: no cpu line")
}

func readSysCPU() (sysCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return sysCPU{}, err
	}
	return parseSysStat(b)
}

// busyPct is the share of CPU time that was not idle between a and b.
func busyPct(a, b sysCPU) float64 {
	dt := float64(b.Total - a.Total)
	if dt <= 0 {
		return 0
	}
	return 100 * (1 - float64(b.Idle-a.Idle)/dt)
}

// Quiet records the quiet gate before a measured phase: a 1-s window with
// at least MinIdle% idle CPU.
type Quiet struct {
	Quiet   bool    `json:"quiet"`
	IdlePct float64 `json:"idle_pct"` // of the last 1-s window looked at
	WaitedS float64 `json:"waited_s"`
}

// waitQuiet waits, at most maxWait, for a 1-s window in which the machine
// was at least minIdle% idle. With maxWait ≤ 0 it looks at one window.
func waitQuiet(ctx context.Context, maxWait time.Duration, minIdle float64) Quiet {
	start := time.Now()
	var q Quiet
	for {
		a, err := readSysCPU()
		if err != nil {
			return q
		}
		select {
		case <-ctx.Done():
			return q
		case <-time.After(time.Second):
		}
		b, err := readSysCPU()
		if err != nil {
			return q
		}
		q.IdlePct = 100 - busyPct(a, b)
		q.WaitedS = time.Since(start).Seconds()
		if q.IdlePct >= minIdle {
			q.Quiet = true
			return q
		}
		if time.Since(start) >= maxWait {
			return q
		}
	}
}
