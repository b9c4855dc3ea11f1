package bench

import (
	"os"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/devproc"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		utime, stim uint64
	}{
		{"plain", "1234 (redis-server) S 1 1234 1234 0 -1 4194560 2156 0 0 0 731 286 0 0 20 0 5 0 4821 58912768 2331 18446744073709551615 1 1 0 0 0 0 0 4097 17642 0 0 0 17 1 0 0 0 0 0\n", 731, 286},
		// A command name may hold spaces and parentheses; fields count from the last ')'.
		{"odd comm", "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 12 34 0 0 20 0 1 0 1 1 1 1\n", 12, 34},
	} {
		u, s, err := parseProcStat([]byte(tc.in))
		if err != nil || u != tc.utime || s != tc.stim {
			t.Errorf("%s: got %d %d %v, want %d %d", tc.name, u, s, err, tc.utime, tc.stim)
		}
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 3 0"} {
		if _, _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
}

func TestTicksToDuration(t *testing.T) {
	if clockTicks <= 0 {
		t.Fatalf("clockTicks = %d", clockTicks)
	}
	if got := ticksToDuration(uint64(clockTicks)); got != time.Second {
		t.Errorf("one second of ticks = %v", got)
	}
}

func TestProcessCPUAndRSSOfSelf(t *testing.T) {
	a, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU; the counter must not go backwards and should move.
	deadline := time.Now().Add(60 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	b, err := processCPU(os.Getpid())
	if err != nil || b < a {
		t.Fatalf("CPU went from %v to %v (%v)", a, b, err)
	}
	// The test binary runs from its file: it has both kinds of pages.
	if m, err := processMem(os.Getpid()); err != nil || m.RSS < 1<<20 || m.Anon <= 0 || m.File <= 0 || m.Anon+m.File > m.RSS+m.RSS/10 {
		t.Errorf("own memory = %+v, %v", m, err)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Error("CPU of a missing pid: no error")
	}
	env, err := devproc.Environ(os.Getpid())
	if err != nil || len(env) == 0 {
		t.Errorf("own environ: %d entries, %v", len(env), err)
	}
	_ = x
}

func TestParseMemUsage(t *testing.T) {
	in := "Name:\tksaga\nVmPeak:\t  200000 kB\nVmRSS:\t    9216 kB\nRssAnon:\t    1024 kB\nRssFile:\t    8192 kB\nRssShmem:\t       0 kB\nThreads:\t7\n"
	got, err := parseMemUsage([]byte(in))
	if want := (memUsage{RSS: 9216 << 10, Anon: 1024 << 10, File: 8192 << 10}); err != nil || got != want {
		t.Errorf("parseMemUsage = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\nRssAnon:\t1 kB\nRssFile:\t1 kB\n", "VmRSS:\tx kB\n", "VmRSS:\t12 kB\nRssAnon:\t1 kB\n"} {
		if _, err := parseMemUsage([]byte(bad)); err == nil {
			t.Errorf("parseMemUsage(%q) accepted", bad)
		}
	}
}

func TestParseSysStatAndBusy(t *testing.T) {
	a, err := parseSysStat([]byte("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n"))
	if err != nil || a.Total != 1000 || a.Idle != 850 {
		t.Fatalf("a = %+v, %v", a, err)
	}
	// guest time (fields 9, 10) is already in user and must not be added twice.
	b, err := parseSysStat([]byte("cpu  400 0 150 1200 50 0 0 0 77 77\n"))
	if err != nil || b.Total != 1800 || b.Idle != 1250 {
		t.Fatalf("b = %+v, %v", b, err)
	}
	// 800 ticks passed, 400 of them idle.
	if got := busyPct(a, b); got != 50 {
		t.Errorf("busyPct = %v, want 50", got)
	}
	if got := busyPct(a, a); got != 0 {
		t.Errorf("no time passed: %v", got)
	}
	if _, err := parseSysStat([]byte("intr 1\n")); err == nil {
		t.Error("no cpu line accepted")
	}
	if _, err := readSysCPU(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}
