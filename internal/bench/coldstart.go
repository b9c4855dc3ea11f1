package bench

import (
	"bytes"
	"context"
	"fmt"
	"github.com/ksaga/ksaga/internal/redisserver"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ksaga/ksaga/saga"
)

// ColdStart is one function's cold start: exec its stripped binary (built
// as for a container image) with its ksaga dev environment (on a fresh
// port, without sender identity), then poll it every 200 µs on a fresh
// connection until the first 2xx.
type ColdStart struct {
	Function     string  `json:"function"`
	BinaryBytes  int64   `json:"binary_bytes"`
	Runs         int     `json:"runs"`
	MedianMs     float64 `json:"median_ms"`
	MinMs        float64 `json:"min_ms"`
	MaxMs        float64 `json:"max_ms"`
	IdleRSSBytes int64   `json:"idle_rss_bytes"` // VmRSS 1 s after the first 2xx of the first run
	// IdleRSSBytes split: private pages (RssAnon: heap, stacks, runtime
	// data) and pages of the executable mapped in (RssFile). The kernel
	// maps file pages around each page fault from the page cache, so
	// RssFile depends on how much of the binary is cached, not on the
	// function's own memory.
	IdleAnonBytes int64  `json:"idle_rss_anon_bytes"`
	IdleFileBytes int64  `json:"idle_rss_file_bytes"`
	Probe         string `json:"probe"`
	Error         string `json:"error,omitempty"`
}

// buildStripped builds every main package under ./functions like a
// container image (CGO_ENABLED=0, -trimpath, -ldflags='-s -w') into outDir
// and returns the binary of each, by name.
func buildStripped(ctx context.Context, dir, outDir string) (map[string]string, error) {
	list := exec.CommandContext(ctx, "go", "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./functions/...")
	list.Dir = dir
	out, err := list.Output()
	if err != nil {
		return nil, fmt.Errorf("go list ./functions/...: %w", err)
	}
	var pkgs []string
	for l := range strings.SplitSeq(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			pkgs = append(pkgs, l)
		}
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("no main packages under %s/functions", dir)
	}
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", outDir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	bins := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		bins[path.Base(p)] = filepath.Join(outDir, path.Base(p))
	}
	return bins, nil
}

// withPort replaces PORT and LISTEN_ADDRESS in env, and leaves out the
// sender-identity settings (KSAGA_OIDC_*, KSAGA_SINK_TOKEN_FILE): the
// probe sends no token (a function that verifies tokens also fetches the
// issuer's discovery document and keys at its first token, which is not
// measured here), and the sink's token file went with ksaga dev.
func withPort(env []string, port int) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "PORT=") || strings.HasPrefix(kv, "LISTEN_ADDRESS=") || strings.HasPrefix(kv, "KSAGA_OIDC_") ||
			strings.HasPrefix(kv, "KSAGA_SINK_TOKEN_FILE=")
	})
	return append(out, "PORT="+strconv.Itoa(port), "LISTEN_ADDRESS=127.0.0.1:"+strconv.Itoa(port))
}

// coldStart measures runs cold starts of bin, probed with probe (data:
// the body of a CloudEvent probe).
func coldStart(ctx context.Context, name, bin string, env []string, probe Probe, data []byte, runs int) ColdStart {
	cs := ColdStart{Function: name}
	if st, err := os.Stat(bin); err == nil {
		cs.BinaryBytes = st.Size()
	}
	cs.Probe = probe.String()
	var times []float64
	for i := range runs {
		d, mem, err := coldStartOnce(ctx, bin, env, probe, data, i, i == 0)
		if err != nil {
			cs.Error = err.Error()
			break
		}
		times = append(times, float64(d)/float64(time.Millisecond))
		if i == 0 {
			cs.IdleRSSBytes, cs.IdleAnonBytes, cs.IdleFileBytes = mem.RSS, mem.Anon, mem.File
		}
	}
	cs.Runs = len(times)
	if len(times) > 0 {
		cs.MedianMs = round3(median(times))
		cs.MinMs = round3(slices.Min(times))
		cs.MaxMs = round3(slices.Max(times))
	}
	return cs
}

func coldStartOnce(ctx context.Context, bin string, env []string, probe Probe, data []byte, run int, readMem bool) (time.Duration, memUsage, error) {
	port, err := redisserver.FreePort()
	if err != nil {
		return 0, memUsage{}, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	cmd := exec.Command(bin)
	cmd.Env = withPort(env, port)
	var out tailBuffer // the function's log, for an error
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	done := make(chan struct{})
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, memUsage{}, fmt.Errorf("exec %s: %w", bin, err)
	}
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	sagaID := "bench-coldstart-" + strconv.Itoa(run)
	for {
		var req *http.Request
		if probe.Get != "" {
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+probe.Get, nil)
		} else {
			req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/", bytes.NewReader(data))
			h := req.Header
			h["Ce-Specversion"] = []string{"1.0"}
			h["Ce-Id"] = []string{sagaID + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)}
			h["Ce-Source"] = []string{"/ksaga/bench"}
			h["Ce-Type"] = []string{probe.Type}
			h["Ce-Correlationid"] = []string{sagaID}
			// Every saga event after the start carries the version it was
			// emitted at; the saga is unknown, so nothing is applied.
			h[http.CanonicalHeaderKey("ce-"+saga.ExtSagaVersion)] = []string{"1"}
			h["Content-Type"] = []string{"application/json"}
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				break
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		select {
		case <-done:
			return 0, memUsage{}, fmt.Errorf("%s exited before answering (%v): %s", filepath.Base(bin), err, out.String())
		case <-ctx.Done():
			return 0, memUsage{}, ctx.Err()
		default:
		}
		if time.Since(t0) > 15*time.Second {
			return 0, memUsage{}, fmt.Errorf("no 2xx after 15 s: %v", err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	d := time.Since(t0)
	var mem memUsage
	if readMem {
		sleepCtx(ctx, time.Second)
		mem, _ = processMem(cmd.Process.Pid)
	}
	return d, mem, nil
}

// tailBuffer keeps the last 1 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 1024 {
		t.b = append([]byte(nil), t.b[len(t.b)-1024:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
