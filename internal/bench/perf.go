package bench

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Optional CPU profiles of the loaded window with Linux perf (--perf): the
// profiled processes need no profiling support of their own (ksaga dev and
// the functions have no pprof endpoint). Go binaries keep frame pointers, so
// call graphs work; the function binaries ksaga dev builds are not stripped.
// perf samples at 499 Hz, a cost of about 1% of the measured CPU.

// hasSymbols reports whether an ELF binary has a symbol table (`go run`
// links with -s -w: perf could not name the functions of ksaga dev).
func hasSymbols(bin string) bool {
	f, err := elf.Open(bin)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	return f.Section(".symtab") != nil
}

// symbolizedKsaga returns bin, or a ksaga built with symbols into dir when
// bin has none.
func symbolizedKsaga(ctx context.Context, projectDir, bin, dir string) (string, error) {
	if hasSymbols(bin) {
		return bin, nil
	}
	out := filepath.Join(dir, "ksaga")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/ksaga")
	cmd.Dir = projectDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("--perf: build a ksaga with symbols: %v\n%s", err, b)
	}
	return out, nil
}

// perfSession records one perf per process.
type perfSession struct {
	dir   string
	cmds  map[string]*exec.Cmd
	order []string
}

func startPerf(ctx context.Context, dir string, procs []proc, seconds float64) (*perfSession, error) {
	bin, err := exec.LookPath("perf")
	if err != nil {
		return nil, fmt.Errorf("--perf: the perf tool is not installed (Debian: apt-get install linux-perf)")
	}
	s := &perfSession{dir: dir, cmds: map[string]*exec.Cmd{}}
	for _, p := range procs {
		if p.name == "bench" || p.name == "deadletter" || p.name == "orchestrator" {
			continue
		}
		out := filepath.Join(dir, "perf-"+p.name+".data")
		cmd := exec.CommandContext(ctx, bin, "record", "-F", "499", "-g", "-o", out, "-p", strconv.Itoa(p.pid),
			"--", "sleep", strconv.FormatFloat(seconds, 'f', 1, 64))
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("perf record: %w", err)
		}
		s.cmds[p.name] = cmd
		s.order = append(s.order, p.name)
	}
	return s, nil
}

// finish waits for the recordings and writes perf-<process>.txt (the 40
// heaviest symbols, children included) into outDir.
func (s *perfSession) finish(outDir string) []string {
	var files []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range s.order {
		cmd := s.cmds[name]
		wg.Go(func() {
			_ = cmd.Wait()
			data := filepath.Join(s.dir, "perf-"+name+".data")
			rep, err := exec.Command("perf", "report", "-i", data, "--children", "--sort", "symbol", "--stdio", "-g", "none").Output()
			if err != nil {
				return
			}
			var lines []string
			for l := range strings.SplitSeq(string(rep), "\n") {
				if strings.Contains(l, "%") && !strings.HasPrefix(strings.TrimSpace(l), "#") {
					lines = append(lines, strings.TrimRight(l, " -"))
				}
				if len(lines) == 40 {
					break
				}
			}
			txt := fmt.Sprintf("# perf record -F 499 -g on %s during the loaded window (%s)\n# columns: children%%, self%%, symbol\n%s\n",
				name, time.Now().UTC().Format(time.RFC3339), strings.Join(lines, "\n"))
			f := filepath.Join(outDir, "perf-"+name+".txt")
			if os.WriteFile(f, []byte(txt), 0o644) == nil {
				mu.Lock()
				files = append(files, f)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return files
}
