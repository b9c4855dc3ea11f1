package dev

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/internal/manifest"
)

// repoRoot is the project folder, two levels up.
const repoRoot = "../.."

// copyProject copies brokers/, triggers/ and manifests/ of the repository
// into a temporary folder and returns it.
func copyProject(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	for _, d := range []string{BrokersDir, TriggersDir, ManifestsDir} {
		if err := os.CopyFS(filepath.Join(dst, d), os.DirFS(filepath.Join(repoRoot, d))); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCombinations(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"brokers/mt-channel", "brokers/kafka", "brokers/.hidden", "triggers/orchestration", "triggers/choreography", "manifests"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := Combinations(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
		if len(c.Paths) != 3 || !strings.HasPrefix(c.Paths[0], dir) {
			t.Errorf("%s: paths %q", c.Name, c.Paths)
		}
	}
	want := "brokers/kafka + triggers/choreography + manifests|brokers/kafka + triggers/orchestration + manifests|" +
		"brokers/mt-channel + triggers/choreography + manifests|brokers/mt-channel + triggers/orchestration + manifests"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("combinations:\n got %s\nwant %s", got, want)
	}

	// A folder without subfolders is one class or mode.
	flat := t.TempDir()
	for _, d := range []string{"brokers", "triggers/a", "manifests"} {
		_ = os.MkdirAll(filepath.Join(flat, d), 0o755)
	}
	if cs, err := Combinations(flat); err != nil || len(cs) != 1 || cs[0].Name != "brokers + triggers/a + manifests" {
		t.Errorf("flat brokers/: %v, %v", cs, err)
	}

	if _, err := Combinations(t.TempDir()); err == nil || !strings.Contains(err.Error(), "brokers not found") {
		t.Errorf("empty folder: %v", err)
	}
}

func TestDefaultPaths(t *testing.T) {
	paths, err := DefaultPaths(repoRoot, "mt-channel", "choreography")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(repoRoot, "triggers", "choreography"); paths[1] != want {
		t.Errorf("paths %q", paths)
	}
	_, err = DefaultPaths(repoRoot, "nats", "sideways")
	for _, s := range []string{`broker class "nats"`, "brokers/ has: ", "mt-channel", `mode "sideways"`, "choreography, orchestration"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not mention %q", err, s)
		}
	}
}

// TestValidateShippedManifests: every combination of the repository passes.
func TestValidateShippedManifests(t *testing.T) {
	cs, err := Combinations(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		r, err := Validate(c.Name, c.Paths)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		r.Write(&b)
		if r.Errors() > 0 {
			t.Errorf("%s:\n%s", c.Name, b.String())
		} else if len(r.Problems.Warnings()) > 0 {
			t.Logf("%s:\n%s", c.Name, b.String())
		}
	}
}

// TestSkippedSummary (issue 19 B6): what ksaga dev loads but does not run
// is one summary line, not a line per kustomization file and object.
func TestSkippedSummary(t *testing.T) {
	r, err := Validate("", []string{filepath.Join(repoRoot, "brokers", "rabbitmq"), filepath.Join(repoRoot, "triggers", "choreography"), filepath.Join(repoRoot, ManifestsDir)})
	if err != nil {
		t.Fatal(err)
	}
	want := "not run by ksaga dev: 4 Kustomizations (ksaga dev reads folders, not kustomize); " +
		"1 PodMonitor, 1 PrometheusRule, 1 RabbitmqBrokerConfig, 1 RabbitmqCluster, 2 Services, 1 StatefulSet (cluster-only kinds)"
	if len(r.Skipped) != 1 || r.Skipped[0] != want {
		t.Errorf("skipped lines:\n%s\nwant one:\n%s", strings.Join(r.Skipped, "\n"), want)
	}
}

// TestUnknownKindFails (issue 19 B6): an object of a kind ksaga does not
// know fails validation and stops ksaga dev before anything starts,
// instead of being skipped.
func TestUnknownKindFails(t *testing.T) {
	dir := copyProject(t)
	write(t, filepath.Join(dir, "triggers", "choreography", "99-typo.yaml"), `apiVersion: eventing.knative.dev/v1
kind: Triger
metadata:
  name: typo
  namespace: saga
spec:
  broker: default
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: order
`)
	paths, err := DefaultPaths(dir, DefaultBrokerClass, DefaultMode)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Validate("", paths)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.Write(&out)
	if r.Errors() != 1 || !strings.Contains(out.String(), "99-typo.yaml:2: Triger saga/typo: kind: unknown kind eventing.knative.dev/v1 Triger (did you mean Trigger?)") {
		t.Errorf("report:\n%s\nwant one error for the unknown kind", out.String())
	}
	err = Run(t.Context(), Config{Dir: dir, Port: 0, BinDir: t.TempDir()})
	var ps manifest.Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Code != manifest.CodeUnknownKind {
		t.Errorf("ksaga dev with an unknown kind: %v, want it refused", err)
	}
}

func TestValidateBrokenCopy(t *testing.T) {
	dir := copyProject(t)
	broken := filepath.Join(dir, "triggers", "choreography", "99-broken.yaml")
	write(t, broken, `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: ghost-on-nothing
  namespace: saga
spec:
  broker: default
  filter:
    attributes:
      type: io.ksaga.nobody.emits.this
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: ghost
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: bad-delivery
  namespace: saga
spec:
  broker: default
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: order
  delivery:
    retry: -1
`)
	write(t, filepath.Join(dir, "manifests", "99-image.yaml"), `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: saga
spec:
  template:
    spec:
      containers:
      - image: ghcr.io/example/hello:1.0
`)
	cs, err := Combinations(dir)
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]bool{}
	for _, c := range cs {
		r, err := Validate(c.Name, c.Paths)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		r.Write(&out)
		if r.Errors() > 0 {
			failed[c.Name] = true
		}
		if !strings.Contains(out.String(), "Service.serving.knative.dev saga/hello: spec.template.spec.containers[0].image: not runnable locally") ||
			strings.Contains(out.String(), "warning: Service.serving.knative.dev saga/hello: spec.template.spec.containers[0].image") {
			t.Errorf("%s: the non-ko image must be an error:\n%s", c.Name, out.String())
		}
		if !strings.Contains(c.Name, "choreography") {
			continue
		}
		for _, want := range []string{
			"99-broken.yaml:1: Trigger saga/ghost-on-nothing: spec.subscriber.ref: Service.serving.knative.dev saga/ghost is not defined",
			"99-broken.yaml:1: Trigger saga/ghost-on-nothing: spec.filter.attributes[type]: the Trigger filters on event type \"io.ksaga.nobody.emits.this\", which no function emits",
			"99-broken.yaml:17: Trigger saga/bad-delivery: spec.delivery.retry",
			"FAILED: ",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: report lacks %q:\n%s", c.Name, want, out.String())
			}
		}
	}
	for _, c := range cs { // the non-ko image fails every combination
		if !failed[c.Name] {
			t.Errorf("%s: passed; every problem must fail validation", c.Name)
		}
	}
}

func TestEmittedTypes(t *testing.T) {
	set := loadTestdata(t, filepath.Join(repoRoot, ManifestsDir))
	em := EmittedTypes(set)
	for _, typ := range []string{"io.ksaga.order.create", "io.ksaga.payment.authorized", "io.ksaga.notification.sent"} {
		if !em[typ] {
			t.Errorf("%s not emitted: %v", typ, em)
		}
	}
	if EmittedTypes(&manifest.Set{}) != nil {
		t.Error("no annotations should mean unknown (nil)")
	}
}

// TestValidateConfigAutoscaler: the manifests' config-autoscaler is parsed
// with Knative's code, which rejects what Knative's autoscaler would.
func TestValidateConfigAutoscaler(t *testing.T) {
	dir := copyProject(t)
	write(t, filepath.Join(dir, "manifests", "99-config-autoscaler.yaml"), `apiVersion: v1
kind: ConfigMap
metadata:
  name: config-autoscaler
  namespace: knative-serving
data:
  stable-window: "2s"
`)
	r, err := Validate("copy", []string{filepath.Join(dir, BrokersDir, "mt-channel"), filepath.Join(dir, TriggersDir, "choreography"), filepath.Join(dir, ManifestsDir)})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.Write(&out)
	if r.Errors() == 0 || !strings.Contains(out.String(), "99-config-autoscaler.yaml:1: ConfigMap knative-serving/config-autoscaler: knative-serving/config-autoscaler: stable-window = 2s, must be in [6s; 1h0m0s] range") {
		t.Errorf("report:\n%s", out.String())
	}
}
