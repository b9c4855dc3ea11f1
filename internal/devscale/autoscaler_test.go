package devscale

import (
	"log/slog"
	"testing"
	"time"

	"knative.dev/pkg/apis"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
)

// setActive sets the PodAutoscaler's Active condition as if it changed ago.
func setActive(pa *autoscalingv1alpha1.PodAutoscaler, status string, ago time.Duration) {
	switch status {
	case "active":
		pa.Status.MarkActive()
	case "inactive":
		pa.Status.MarkInactive("NoTraffic", "The target is not receiving traffic.")
	default:
		pa.Status.MarkActivating("Queued", "Requests to the target are being buffered as resources are provisioned.")
	}
	c := pa.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive)
	c.LastTransitionTime = apis.VolatileTime{Inner: c.LastTransitionTime.Inner}
	c.LastTransitionTime.Inner.Time = time.Now().Add(-ago)
	pa.Status.SetConditions(replaceCondition(pa.Status.GetConditions(), *c))
}

func replaceCondition(cs apis.Conditions, c apis.Condition) apis.Conditions {
	out := apis.Conditions{}
	for _, o := range cs {
		if o.Type == c.Type {
			o = c
		}
		out = append(out, o)
	}
	return out
}

// TestScaleToZeroRules: the KPA's rules as ported: a service the decider
// wants at zero keeps one replica until it has been active for the stable
// window, is then marked inactive, keeps its replica for the
// scale-to-zero-pod-retention-period, and only then goes to zero; the
// scale bounds and the initial scale win over the decider.
func TestScaleToZeroRules(t *testing.T) {
	cfg, _ := ParseConfig(nil)
	svcs := repoServices(t)
	payment, err := NewSettings(svcs["payment"], cfg, Override{}) // window 60s, retention 2m
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		status  string
		ago     time.Duration
		decided int32
		want    int32
		apply   bool
	}{
		{"demand from zero", "inactive", time.Hour, 3, 3, true},
		{"above max-scale", "active", time.Hour, 40, 10, true},
		{"active, within the stable window", "active", 30 * time.Second, 0, 1, true},
		{"active for the stable window: mark inactive first", "active", 61 * time.Second, 0, 0, false},
		{"inactive, within the retention period", "inactive", time.Minute, 0, 0, false},
		{"inactive for the retention period", "inactive", 2*time.Minute + time.Second, 0, 0, true},
		{"activating, no decision yet", "activating", time.Second, -1, -1, false},
		{"activating past the progress deadline", "activating", 11 * time.Minute, 0, 0, true},
	} {
		a := &Autoscaler{s: payment, started: now.Add(-time.Hour), log: slog.New(slog.DiscardHandler)}
		s := *payment
		s.PA = payment.PA.DeepCopy()
		a.s = &s
		setActive(s.PA, tc.status, tc.ago)
		s.PA.Status.MarkScaleTargetInitialized()
		want, apply := a.scale(now, tc.decided)
		if want != tc.want || apply != tc.apply {
			t.Errorf("%s: scale(%d) = %d, %v; want %d, %v", tc.name, tc.decided, want, apply, tc.want, tc.apply)
		}
	}

	// order-api has min-scale 1: never below one replica.
	api, _ := NewSettings(svcs["order-api"], cfg, Override{})
	a := &Autoscaler{s: api, started: now.Add(-time.Hour), log: slog.New(slog.DiscardHandler)}
	setActive(api.PA, "active", time.Hour)
	if want, apply := a.scale(now, 0); want != 1 || !apply {
		t.Errorf("order-api at zero demand: %d, %v; want 1, true", want, apply)
	}
	// enable-scale-to-zero: false keeps one replica.
	noZero, _ := ParseConfig(nil)
	noZero.EnableScaleToZero = false
	s, _ := NewSettings(svcs["payment"], noZero, Override{})
	a = &Autoscaler{s: s, started: now.Add(-time.Hour), log: slog.New(slog.DiscardHandler)}
	setActive(s.PA, "inactive", time.Hour)
	if want, apply := a.scale(now, 0); want != 1 || !apply {
		t.Errorf("scale to zero disabled: %d, %v; want 1, true", want, apply)
	}
}

// TestActiveCondition: the KPA's computeActiveCondition as ported.
func TestActiveCondition(t *testing.T) {
	cfg, _ := ParseConfig(nil)
	s, _ := NewSettings(repoServices(t)["payment"], cfg, Override{})
	a := &Autoscaler{s: s}
	if got := condition(s.PA); got != "activating" {
		t.Fatalf("a new revision is %s", got)
	}
	a.computeActiveCondition(1, 1)
	if got := condition(s.PA); got != "active" || !s.PA.Status.IsScaleTargetInitialized() {
		t.Errorf("want 1, 1 ready: %s", got)
	}
	a.computeActiveCondition(0, 1)
	if got := condition(s.PA); got != "inactive" {
		t.Errorf("want 0: %s", got)
	}
	a.computeActiveCondition(1, 0)
	if got := condition(s.PA); got != "activating" {
		t.Errorf("want 1, none ready: %s", got)
	}
}
