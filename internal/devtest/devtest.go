// Package devtest runs `ksaga dev` as a real process for end-to-end tests:
// the real broker, the real function processes, the repo's own manifests.
package devtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// RepoRoot is the module root (where brokers/, triggers/ and manifests/ are).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary builds the ksaga CLI once per test binary.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ksaga-devtest-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "ksaga")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/ksaga")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ksaga: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// Dev is a running `ksaga dev`.
type Dev struct {
	Port int
	Out  *Buffer
	cmd  *exec.Cmd
	done chan error
	http *http.Client
}

// Buffer collects the process's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }

// String returns everything written so far.
func (b *Buffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// Start runs `ksaga dev --port <free> args...` from the repo root with extra
// environment, and waits until it is ready. It is stopped (SIGINT) at the end
// of the test.
func Start(t testing.TB, env []string, args ...string) *Dev {
	t.Helper()
	d := &Dev{Port: freePort(t), Out: &Buffer{}, done: make(chan error, 1),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	d.cmd = exec.Command(Binary(t), append([]string{"dev", "--port", strconv.Itoa(d.Port)}, args...)...)
	d.cmd.Dir = RepoRoot()
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.Out, d.Out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.Stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(d.Out.String(), "ksaga dev is ready") {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("ksaga dev exited: %v\n%s", err, d.Out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ksaga dev not ready:\n%s", d.Out.String())
		}
	}
	return d
}

// Stop interrupts ksaga dev and waits for it (and its children) to exit.
func (d *Dev) Stop(t testing.TB) {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-d.done:
		d.done <- err
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("ksaga dev did not stop on SIGINT")
	}
}

// BrokerURL is the ingress of broker ns/name.
func (d *Dev) BrokerURL(ns, name string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s/%s", d.Port, ns, name)
}

// Do sends a request to a service through the dev ingress (Host routing).
func (d *Dev) Do(t testing.TB, service, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", d.Port, path), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = service + ".saga.localhost"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, service, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Publish POSTs e to the saga/default broker (binary mode, or structured).
func (d *Dev) Publish(t testing.TB, e event.Event, structured bool) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.BrokerURL("saga", "default"), nil)
	ctx := context.Background()
	if structured {
		ctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// Lines returns the JSON lines a service logged ("<service> | {...}").
func (d *Dev) Lines(t testing.TB, service string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(d.Out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), "|")
		if !ok || strings.TrimSpace(name) != service {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), &m); err != nil {
			t.Fatalf("%s logged a line that is not JSON: %s", service, rest)
		}
		out = append(out, m)
	}
	return out
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
