package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ksaga/ksaga/internal/devproc"
)

// The bench's own subscription: one Trigger per terminal event type, whose
// subscriber is a uri to the bench's HTTP receiver. It is loaded by ksaga dev
// with -f next to the repo's folders, so the terminal events reach the bench
// the Knative way (a delivery, no polling).
const triggerTemplate = `# Written by ksaga bench: the bench's own subscription to the saga's terminal events.
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: ksaga-bench-%[1]s
  namespace: %[4]s
spec:
  broker: %[5]s
  filter:
    attributes:
      type: %[2]s
  subscriber:
    uri: %[3]s
---
`

// writeTriggers writes the bench Triggers of w's Broker, one per terminal
// event type, for receiverURL into dir.
func writeTriggers(dir, receiverURL string, w *Workload) (string, error) {
	var b strings.Builder
	for _, t := range w.terminalTypes() {
		fmt.Fprintf(&b, triggerTemplate, t[strings.LastIndexByte(t, '.')+1:], t, receiverURL, w.Namespace, w.Broker)
	}
	p := filepath.Join(dir, "bench-triggers.yaml")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// devProcess is the running `ksaga dev`.
type devProcess struct {
	*devproc.Process
	functions []function
	log       *os.File // its output; open until it has exited (see stop)
}

// function is one function process of ksaga dev.
type function struct {
	Name string // the Knative Service name
	PID  int
	Port int
	Env  []string // read from /proc/<pid>/environ at start
}

// brokerURL is the ingress of w's Broker.
func (d *devProcess) brokerURL(w *Workload) string {
	return d.URL("/" + w.Namespace + "/" + w.Broker)
}

// devOptions say how the bench runs `ksaga dev`.
type devOptions struct {
	bin, dir, mode string
	w              *Workload
	redisURL       string
	benchTriggers  string // the bench's Triggers file
	// oidc turns sender identity on (ksaga dev --oidc, and the
	// EventPolicies of policies/); off, ksaga dev runs --oidc=false.
	oidc bool
	// redisACL has every function connect as its own Redis ACL user
	// (ksaga dev --redis-acl).
	redisACL     bool
	logPath      string // its output
	readyTimeout time.Duration
}

// startDev runs `<bin> dev` from dir with the workload's manifests for
// the mode and the bench triggers, against redisURL, with extra flags, and
// waits until its /readyz answers 200 (every function ready and the broker
// delivering). ksaga dev gets no --seed: the bench writes its own data
// first.
func startDev(ctx context.Context, o devOptions, extra ...string) (*devProcess, error) {
	bin, dir, logPath := o.bin, o.dir, o.logPath
	paths := o.w.Manifests(o.mode, o.oidc)
	for _, p := range paths {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s not found under %s: run ksaga bench from the project folder (or pass --dir)", p, dir)
		}
	}
	args := append([]string{"--redis-url", o.redisURL, "--oidc=" + strconv.FormatBool(o.oidc), "--redis-acl=" + strconv.FormatBool(o.redisACL)}, extra...)
	for _, p := range append(paths, o.benchTriggers) {
		args = append(args, "-f", p)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Its stderr is copied to logf by a goroutine of os/exec (devproc also
	// reads it): closing logf while ksaga dev runs would end that copy and
	// close the pipe, and ksaga dev would die of SIGPIPE at its next log
	// line.
	proc, err := devproc.Start(ctx, devproc.Options{Binary: bin, Dir: dir, Args: args,
		Stdout: logf, Stderr: logf, ReadyTimeout: o.readyTimeout})
	if err != nil {
		_ = logf.Close()
		return nil, err
	}
	d := &devProcess{Process: proc, log: logf}
	fs, err := d.readFunctions(ctx)
	if err != nil {
		d.stop()
		return nil, err
	}
	d.functions = fs
	return d, nil
}

// devServices is the part of ksaga dev's GET /.ksaga/services the bench
// reads.
type devServices struct {
	Services []struct {
		Name        string `json:"name"`
		Desired     int    `json:"desired"`
		Ready       int    `json:"ready"`
		Autoscaling *struct {
			MinScale int `json:"min_scale"`
		} `json:"autoscaling"`
		Replicas []struct {
			PID   int    `json:"pid"`
			Port  int    `json:"port"`
			State string `json:"state"`
		} `json:"replicas"`
	} `json:"services"`
}

// functionsOf lists the first replica of every service, by name.
func functionsOf(doc devServices) []function {
	var fs []function
	for _, s := range doc.Services {
		if len(s.Replicas) == 0 {
			continue
		}
		fs = append(fs, function{Name: s.Name, PID: s.Replicas[0].PID, Port: s.Replicas[0].Port})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

func (d *devProcess) services(ctx context.Context) (devServices, error) {
	var doc devServices
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL("/.ksaga/services"), nil)
	if err != nil {
		return doc, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doc, fmt.Errorf("ksaga dev services: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return doc, fmt.Errorf("ksaga dev services: %w", err)
	}
	return doc, nil
}

func (d *devProcess) readFunctions(ctx context.Context) ([]function, error) {
	doc, err := d.services(ctx)
	if err != nil {
		return nil, err
	}
	fs := functionsOf(doc)
	if len(fs) == 0 {
		return nil, fmt.Errorf("no function processes in ksaga dev's services: %+v", doc)
	}
	for i := range fs {
		if fs[i].Env, err = devproc.Environ(fs[i].PID); err != nil {
			return nil, fmt.Errorf("environment of %s (pid %d): %w", fs[i].Name, fs[i].PID, err)
		}
	}
	return fs, nil
}

// restarts reports the functions whose pid changed since start (a crash
// and restart by ksaga dev's supervisor during the bench).
func (d *devProcess) restarts(ctx context.Context) []string {
	doc, err := d.services(ctx)
	if err != nil {
		return []string{"services unreadable: " + err.Error()}
	}
	now := map[string]int{}
	for _, f := range functionsOf(doc) {
		now[f.Name] = f.PID
	}
	var out []string
	for _, f := range d.functions {
		if now[f.Name] != f.PID {
			out = append(out, fmt.Sprintf("%s (pid %d → %d)", f.Name, f.PID, now[f.Name]))
		}
	}
	return out
}

// stop interrupts ksaga dev (it drains and stops its functions) and waits,
// killing its process group after 20 s.
func (d *devProcess) stop() {
	if d == nil {
		return
	}
	_, _ = d.Interrupt(20 * time.Second) // a stopped run's exit status is of no interest
	_ = d.log.Close()
}
