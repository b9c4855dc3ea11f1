// Package devtest runs `ksaga dev` as a real process for end-to-end tests:
// the real broker, the real function processes, the repo's own manifests
// (internal/devproc does the work; this wraps it for testing.TB).
package devtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ksaga/ksaga/internal/devproc"
	"github.com/ksaga/ksaga/sagatest"
)

var build struct {
	once      sync.Once
	dir, path string
	err       error
}

// RepoRoot is the module root (where brokers/, triggers/ and manifests/ are).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Main runs a package's tests and removes the ksaga binary they built; call
// it from TestMain: os.Exit(devtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	return code
}

// Binary builds the ksaga CLI once per test binary. Under -short the
// calling test is skipped: end-to-end tests build and run everything.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the end-to-end tests build and run ksaga and every function")
	}
	build.once.Do(func() {
		if build.dir, build.err = os.MkdirTemp("", "ksaga-devtest-"); build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "ksaga")
		build.err = devproc.Build(RepoRoot(), build.path)
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// Dev is a running `ksaga dev`.
type Dev struct {
	// Namespace is where Do, Send and Publish find services and the
	// default Broker ("saga" unless set).
	Namespace string
	*devproc.Process
	Out  *sagatest.Buffer // the functions' output ("<service> | <JSON line>")
	http *http.Client
}

// Start runs `ksaga dev args...` from the repo root with extra environment
// and waits until it is ready. At the end of the test it is stopped with
// SIGINT and must exit 0 (unless the test stopped it); its output is logged
// if the test failed.
func Start(t testing.TB, env []string, args ...string) *Dev {
	t.Helper()
	d := &Dev{Out: &sagatest.Buffer{}, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	p, err := devproc.Start(context.Background(), devproc.Options{Binary: Binary(t), Dir: RepoRoot(), Args: args, Env: env, Stdout: d.Out,
		ReadyTimeout: 4 * time.Minute}) // covers a cold build of every function
	if err != nil {
		t.Fatal(err)
	}
	d.Process = p
	t.Cleanup(func() {
		if d.Running() {
			if code, err := d.Interrupt(60 * time.Second); err != nil || code != 0 {
				t.Errorf("ksaga dev after SIGINT: exit %d, %v", code, err)
			}
		}
		if t.Failed() {
			t.Logf("ksaga dev log:\n%s", devproc.Tail(d.Log(), 150))
			t.Logf("functions:\n%s", devproc.Tail(d.Out.String(), 150))
		}
	})
	return d
}

func (d *Dev) ns() string {
	if d.Namespace == "" {
		return "saga"
	}
	return d.Namespace
}

// BrokerURL is the ingress of broker ns/name.
func (d *Dev) BrokerURL(ns, name string) string {
	return d.URL("/" + ns + "/" + name)
}

// Do sends a request to a service through the dev ingress (Host routing).
func (d *Dev) Do(t testing.TB, service, method, path string, body any) (int, []byte) {
	t.Helper()
	return d.DoHeader(t, service, method, path, body, nil)
}

// TryDo is Do for requests that may fail (a fault under test): it returns
// the transport error instead of failing the test.
func (d *Dev) TryDo(service, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.URL(path), rd)
	if err != nil {
		return 0, nil, err
	}
	req.Host = service + "." + d.ns() + ".localhost"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// DoHeader is Do with extra request headers.
func (d *Dev) DoHeader(t testing.TB, service, method, path string, body any, header http.Header) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = service + "." + d.ns() + ".localhost"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, service, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Publish POSTs e to the default broker of the namespace (binary mode, or structured).
func (d *Dev) Publish(t testing.TB, e event.Event, structured bool) int {
	t.Helper()
	return d.post(t, d.BrokerURL(d.ns(), "default"), "", e, structured, nil)
}

// PublishHeader is Publish (binary mode) with extra request headers, e.g.
// an Authorization token.
func (d *Dev) PublishHeader(t testing.TB, e event.Event, header http.Header) int {
	t.Helper()
	return d.post(t, d.BrokerURL(d.ns(), "default"), "", e, false, header)
}

// Send POSTs e straight to a service, bypassing the broker, and returns
// the status.
func (d *Dev) Send(t testing.TB, service string, e event.Event, structured bool) int {
	t.Helper()
	return d.post(t, d.URL("/"), service+"."+d.ns()+".localhost", e, structured, nil)
}

// SendHeader is Send (binary mode) with extra request headers.
func (d *Dev) SendHeader(t testing.TB, service string, e event.Event, header http.Header) int {
	t.Helper()
	return d.post(t, d.URL("/"), service+"."+d.ns()+".localhost", e, false, header)
}

func (d *Dev) post(t testing.TB, url, host string, e event.Event, structured bool, header http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header[k] = v
	}
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

// FirePingSource sends the event of PingSource name (in the namespace) to
// its sink now, through ksaga dev's POST /.ksaga/pingsources/<ns>/<name>,
// with its identity's token when sender identity is on, and returns the
// status: 202 once the sink took it.
func (d *Dev) FirePingSource(t testing.TB, name string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.URL("/.ksaga/pingsources/"+d.ns()+"/"+name), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatalf("fire PingSource %s: %v", name, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// Lines returns the JSON lines a service logged ("<service> | {...}", or
// "<service>#<n> | {...}" from its replica n > 1).
func (d *Dev) Lines(t testing.TB, service string) []map[string]any {
	t.Helper()
	var out []map[string]any
	text := d.Out.String()
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[:i+1] // a last line still being copied from the pipe is not whole yet
	} else {
		text = ""
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), "|")
		name, _, _ = strings.Cut(strings.TrimSpace(name), "#") // "payment#2": a second replica
		if !ok || name != service {
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

// Environ returns a function process's environment by name; it skips the
// test where /proc cannot be read.
func Environ(t testing.TB, pid int) map[string]string {
	t.Helper()
	env, err := devproc.Environ(pid)
	if err != nil {
		t.Skipf("no /proc environ: %v", err)
	}
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
