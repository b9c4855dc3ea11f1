package devscale

import (
	"fmt"
	"maps"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/kmap"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/autoscaler/config/autoscalerconfig"
	"knative.dev/serving/pkg/autoscaler/scaling"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
)

// ConfigMap names where Knative Serving reads its cluster-wide autoscaling
// settings (the system namespace).
const (
	ConfigNamespace = "knative-serving"
	ConfigName      = "config-autoscaler"
)

// Defaults that come from other Knative ConfigMaps than config-autoscaler,
// which ksaga dev does not read.
const (
	// DefaultProgressDeadline is config-deployment's progress-deadline:
	// a revision that cannot activate within it (plus the KPA's 30 s buffer)
	// is scaled back to zero.
	DefaultProgressDeadline = 600 * time.Second
	// activationTimeoutBuffer is the KPA's buffer on top of the progress
	// deadline (pkg/reconciler/autoscaling/kpa/scaler.go).
	activationTimeoutBuffer = 30 * time.Second
	// DefaultQueueDepth is the activator's queue of held requests per
	// revision (a request beyond it is refused with 503).
	DefaultQueueDepth = 10000
)

// ParseConfig parses the data of a config-autoscaler ConfigMap with
// Knative's own parser and validation (pkg/autoscaler/config); nil or
// missing keys give Knative's defaults.
func ParseConfig(cm *corev1.ConfigMap) (*autoscalerconfig.Config, error) {
	var data map[string]string
	if cm != nil {
		data = cm.Data
	}
	cfg, err := asconfig.NewConfigFromMap(data)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", ConfigNamespace, ConfigName, err)
	}
	return cfg, nil
}

// Settings are the autoscaling of one Knative Service's revision, derived by
// Knative's own code from the Service's revision template and
// config-autoscaler: the PodAutoscaler the revision reconciler would create
// (its annotations and containerConcurrency), and the Decider and Metric the
// KPA reconciler would make of it.
type Settings struct {
	// Service is the Knative Service; Revision names its (only) revision,
	// <name>-00001 unless the template names it.
	Service, Revision types.NamespacedName
	// Config is config-autoscaler (Knative's defaults without one), after
	// the Override.
	Config *autoscalerconfig.Config
	// PA is the revision's PodAutoscaler (its Status is the Autoscaler's).
	PA *autoscalingv1alpha1.PodAutoscaler
	// Decider is the input of Knative's scaling algorithm (kpa/resources
	// MakeDecider); Metric its windows (MakeMetric, with no scrape target:
	// in ksaga dev the activator is always in the request path).
	Decider *scaling.Decider
	Metric  *autoscalingv1alpha1.Metric
	// Min and Max are the scale bounds (PodAutoscaler.ScaleBounds; Max 0 is
	// unbounded), Initial the initial scale (GetInitialScale).
	Min, Max, Initial int32
	// ContainerConcurrency is the hard limit of requests in flight per
	// replica (0: none).
	ContainerConcurrency int
	// Timeout is the revision's timeoutSeconds: it bounds how long a request
	// is held and how long a replica being removed may drain.
	Timeout time.Duration
	// Retention is the scale-to-zero-pod-retention-period in effect.
	Retention time.Duration
	// KPA is false for another autoscaler class (HPA scales on CPU, which
	// ksaga dev does not measure: the replica count stays at its initial
	// value, at least 1).
	KPA bool
}

// Override shortens Knative's time windows, for demos and tests. A zero
// Override changes nothing.
type Override struct {
	// Window, if positive, replaces every stable window (the window
	// annotation and stable-window), and caps the scale-down delay, the
	// scale-to-zero-pod-retention-period and the scale-to-zero grace period
	// (annotations and config-autoscaler alike). Below 6 s it is shorter than
	// Knative allows; the panic window stays at least 1 s (one bucket).
	Window time.Duration
}

// NewSettings derives the Settings of svc (already defaulted and validated
// by Knative's webhook code) under cfg (ParseConfig), with ov applied.
func NewSettings(svc *servingv1.Service, cfg *autoscalerconfig.Config, ov Override) (*Settings, error) {
	cfg = new(*cfg)
	rev := svc.Spec.Template.Name
	if rev == "" {
		rev = svc.Name + "-00001"
	}
	// The revision inherits the template's annotations, and its
	// PodAutoscaler the revision's (revision/resources MakePA).
	ann := maps.Clone(svc.Spec.Template.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	if ov.Window > 0 {
		cfg.StableWindow = ov.Window
		cfg.ScaleDownDelay = min(cfg.ScaleDownDelay, ov.Window)
		cfg.ScaleToZeroPodRetentionPeriod = min(cfg.ScaleToZeroPodRetentionPeriod, ov.Window)
		cfg.ScaleToZeroGracePeriod = min(cfg.ScaleToZeroGracePeriod, ov.Window)
		deleteKeys(ann, autoscaling.WindowAnnotation)
		capDuration(ann, autoscaling.ScaleDownDelayAnnotation, ov.Window)
		capDuration(ann, autoscaling.ScaleToZeroPodRetentionPeriodAnnotation, ov.Window)
	}
	pa := &autoscalingv1alpha1.PodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: rev, Annotations: ann, Labels: maps.Clone(svc.Spec.Template.Labels)},
		Spec: autoscalingv1alpha1.PodAutoscalerSpec{
			ContainerConcurrency: svc.Spec.Template.Spec.GetContainerConcurrency(),
			Reachability:         autoscalingv1alpha1.ReachabilityReachable, // every revision is routed
		},
	}
	pa.Status.InitializeConditions() // Active Unknown: activating
	pa.Status.ServiceName = rev      // "the SKS exists": the activator always is in the path
	s := &Settings{
		Service:              types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		Revision:             types.NamespacedName{Namespace: svc.Namespace, Name: rev},
		Config:               cfg,
		PA:                   pa,
		Decider:              kparesources.MakeDecider(pa, cfg),
		Metric:               aresources.MakeMetric(pa, "", cfg),
		Initial:              kparesources.GetInitialScale(cfg, pa),
		ContainerConcurrency: int(pa.Spec.ContainerConcurrency),
		KPA:                  pa.Class() == autoscaling.KPA,
	}
	s.Min, s.Max = pa.ScaleBounds(cfg)
	if s.Max > 0 && s.Min > s.Max {
		return nil, fmt.Errorf("service %s: min-scale %d above max-scale %d", s.Service, s.Min, s.Max)
	}
	s.Retention = cfg.ScaleToZeroPodRetentionPeriod
	if d, ok := pa.ScaleToZeroPodRetention(); ok {
		s.Retention = d
	}
	s.Timeout = time.Duration(servingv1DefaultTimeout) * time.Second
	if ts := svc.Spec.Template.Spec.TimeoutSeconds; ts != nil && *ts > 0 {
		s.Timeout = time.Duration(*ts) * time.Second
	}
	return s, nil
}

// InitialReplicas is the replica count a new revision starts with: the
// initial scale (at least 1 and the min-scale for another autoscaler class
// than KPA).
func (s *Settings) InitialReplicas() int32 {
	if !s.KPA {
		return max(s.Initial, s.Min, 1)
	}
	return s.Initial
}

// servingv1DefaultTimeout is revision-timeout-seconds of config-defaults,
// which the webhook's defaulting puts on every Service that has none.
const servingv1DefaultTimeout = 300

// DefaultHoldTimeout bounds holds and drains without Settings: the default
// revision timeout.
const DefaultHoldTimeout = servingv1DefaultTimeout * time.Second

// activationTimeout is how long a revision may stay activating before the
// KPA gives up and scales it to zero.
func (s *Settings) activationTimeout() time.Duration {
	if d, ok := s.PA.ProgressDeadline(); ok {
		return d + activationTimeoutBuffer
	}
	return DefaultProgressDeadline + activationTimeoutBuffer
}

// Target is the metric's target per replica, as the Decider has it.
func (s *Settings) Target() float64 { return s.Decider.Spec.TargetValue }

// MetricName is concurrency or rps.
func (s *Settings) MetricName() string { return s.Decider.Spec.ScalingMetric }

func deleteKeys(ann map[string]string, k kmap.KeyPriority) {
	for _, key := range k {
		delete(ann, key)
	}
}

// capDuration lowers a duration annotation (Knative's syntax: a Go
// duration, or whole seconds for some keys) to at most d.
func capDuration(ann map[string]string, k kmap.KeyPriority, d time.Duration) {
	key, v, ok := k.Get(ann)
	if !ok {
		return
	}
	cur, err := time.ParseDuration(v)
	if err != nil {
		if secs, serr := strconv.Atoi(v); serr == nil {
			cur, err = time.Duration(secs)*time.Second, nil
		}
	}
	if err == nil && cur > d {
		ann[key] = d.String()
	}
}
