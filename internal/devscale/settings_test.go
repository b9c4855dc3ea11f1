package devscale

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/manifest"
)

// repoServices loads the repository's Knative Services, defaulted and
// validated by Knative's webhook code (internal/manifest).
func repoServices(t *testing.T) map[string]*servingv1.Service {
	t.Helper()
	set, err := manifest.Load([]string{filepath.Join("..", "..", "manifests")})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Problems.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]*servingv1.Service{}
	for _, s := range set.Services() {
		out[s.Name] = s
	}
	return out
}

// TestSettingsOfTheManifests: the annotations of the repository's
// manifests become Knative's own scale bounds, targets (after the default
// target utilization of 70 %) and windows.
func TestSettingsOfTheManifests(t *testing.T) {
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	svcs := repoServices(t)
	for _, tc := range []struct {
		name             string
		metric           string
		target           float64
		cc               int
		min, max, initl  int32
		retention, to    time.Duration
		window, panicWin time.Duration
	}{
		{"order-api", "concurrency", 35, 100, 1, 20, 1, 0, 30 * time.Second, time.Minute, 6 * time.Second},
		{"order", "concurrency", 35, 100, 0, 20, 1, 2 * time.Minute, 30 * time.Second, time.Minute, 6 * time.Second},
		{"payment", "concurrency", 14, 50, 0, 10, 1, 2 * time.Minute, 30 * time.Second, time.Minute, 6 * time.Second},
		{"users", "rps", 350, 200, 0, 10, 1, 10 * time.Minute, 10 * time.Second, time.Minute, 6 * time.Second},
		{"deadletter", "concurrency", 7, 10, 0, 2, 1, 0, 30 * time.Second, time.Minute, 6 * time.Second},
	} {
		s, err := NewSettings(svcs[tc.name], cfg, Override{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := []any{s.MetricName(), s.Target(), s.ContainerConcurrency, s.Min, s.Max, s.Initial, s.Retention, s.Timeout,
			s.Metric.Spec.StableWindow, s.Metric.Spec.PanicWindow, s.KPA, s.Revision.Name}
		want := []any{tc.metric, tc.target, tc.cc, tc.min, tc.max, tc.initl, tc.retention, tc.to, tc.window, tc.panicWin, true, tc.name + "-00001"}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: got %v, want %v", tc.name, got, want)
				break
			}
		}
		if s.Metric.Spec.ScrapeTarget != "" {
			t.Errorf("%s: scrape target %q: the activator is always in the path", tc.name, s.Metric.Spec.ScrapeTarget)
		}
	}
}

// TestSettingsFromConfigAutoscaler: config-autoscaler's keys reach the
// decider and the bounds, through Knative's parser; invalid data fails with
// the ConfigMap's name.
func TestSettingsFromConfigAutoscaler(t *testing.T) {
	cfg, err := ParseConfig(&corev1.ConfigMap{Data: map[string]string{
		"stable-window": "30s",
		"container-concurrency-target-percentage": "50",
		"enable-scale-to-zero":                    "false",
		"scale-to-zero-pod-retention-period":      "1m",
		"max-scale-down-rate":                     "4",
	}})
	if err != nil {
		t.Fatal(err)
	}
	svcs := repoServices(t)
	s, err := NewSettings(svcs["payment"], cfg, Override{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Target() != 10 || s.Metric.Spec.StableWindow != 30*time.Second || s.Metric.Spec.PanicWindow != 3*time.Second ||
		s.Config.EnableScaleToZero || s.Decider.Spec.MaxScaleDownRate != 4 || s.Retention != 2*time.Minute {
		t.Errorf("payment: target %v, windows %v/%v, scale to zero %v, down rate %v, retention %v (the annotation wins)",
			s.Target(), s.Metric.Spec.StableWindow, s.Metric.Spec.PanicWindow, s.Config.EnableScaleToZero, s.Decider.Spec.MaxScaleDownRate, s.Retention)
	}
	if s, _ := NewSettings(svcs["order-api"], cfg, Override{}); s.Retention != time.Minute {
		t.Errorf("order-api without the annotation: retention %v, want config-autoscaler's 1m", s.Retention)
	}
	for data, want := range map[string]string{
		"stable-window=1s":           "stable-window = 1s",
		"max-scale-down-rate=0.5":    "max-scale-down-rate",
		"enable-scale-to-zero=maybe": "enable-scale-to-zero",
	} {
		k, v, _ := strings.Cut(data, "=")
		_, err := ParseConfig(&corev1.ConfigMap{Data: map[string]string{k: v}})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "knative-serving/config-autoscaler") {
			t.Errorf("%s: err = %v, want one naming %q and the ConfigMap", data, err, want)
		}
	}
}

// TestSettingsOverride: a shortened window replaces every stable window
// and caps retention, grace period and scale-down delay, whether they
// come from annotations or config-autoscaler.
func TestSettingsOverride(t *testing.T) {
	cfg, err := ParseConfig(&corev1.ConfigMap{Data: map[string]string{"scale-to-zero-pod-retention-period": "5m", "scale-down-delay": "10m"}})
	if err != nil {
		t.Fatal(err)
	}
	svc := repoServices(t)["users"].DeepCopy()
	svc.Spec.Template.Annotations["autoscaling.knative.dev/window"] = "120s"
	svc.Spec.Template.Annotations["autoscaling.knative.dev/scale-down-delay"] = "30s"
	s, err := NewSettings(svc, cfg, Override{Window: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.Metric.Spec.StableWindow != 3*time.Second || s.Retention != 3*time.Second || s.Decider.Spec.ScaleDownDelay != 3*time.Second ||
		s.Config.ScaleToZeroGracePeriod != 3*time.Second || s.Metric.Spec.PanicWindow != time.Second {
		t.Errorf("window %v, retention %v, scale-down delay %v, grace %v, panic window %v", s.Metric.Spec.StableWindow, s.Retention,
			s.Decider.Spec.ScaleDownDelay, s.Config.ScaleToZeroGracePeriod, s.Metric.Spec.PanicWindow)
	}
	if svc.Spec.Template.Annotations["autoscaling.knative.dev/window"] != "120s" || cfg.ScaleDownDelay != 10*time.Minute {
		t.Error("the override changed the Service or the config it was given")
	}
	order, _ := NewSettings(repoServices(t)["order"], cfg, Override{Window: 3 * time.Second})
	if order.Retention != 3*time.Second || order.Decider.Spec.ScaleDownDelay != 3*time.Second {
		t.Errorf("order: config values not capped: retention %v, delay %v", order.Retention, order.Decider.Spec.ScaleDownDelay)
	}
}

// TestSettingsOtherClass: an HPA-class Service is not scaled on load; it
// keeps at least one replica.
func TestSettingsOtherClass(t *testing.T) {
	cfg, _ := ParseConfig(nil)
	svc := repoServices(t)["payment"].DeepCopy()
	svc.Spec.Template.Annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev"
	svc.Spec.Template.Annotations["autoscaling.knative.dev/metric"] = "cpu"
	svc.Spec.Template.Annotations["autoscaling.knative.dev/min-scale"] = "2"
	s, err := NewSettings(svc, cfg, Override{})
	if err != nil {
		t.Fatal(err)
	}
	if s.KPA || s.InitialReplicas() != 2 {
		t.Errorf("KPA %v, initial replicas %d; want false, 2", s.KPA, s.InitialReplicas())
	}
}
