package devbroker

import (
	"testing"
	"time"

	"k8s.io/utils/ptr"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/eventing/pkg/kncloudevents"
)

// The reclaim threshold is the longest delivery a Trigger can make (see
// reclaim.go), here for the project's own delivery policy.
func TestIdleThreshold(t *testing.T) {
	policy := func(d eventingduckv1.DeliverySpec) kncloudevents.RetryConfig {
		rc, err := kncloudevents.RetryConfigFromDeliverySpec(d)
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	exp := eventingduckv1.BackoffPolicyExponential
	project := policy(eventingduckv1.DeliverySpec{Retry: ptr.To[int32](5), BackoffPolicy: &exp, BackoffDelay: ptr.To("PT0.2S"), Timeout: ptr.To("PT10S")})
	// 6 attempts of 10 s, waits 0.2+0.4+0.8+1.6+3.2 s
	if got, want := policyBudget(project), 66200*time.Millisecond; got != want {
		t.Errorf("project policy budget %v, want %v", got, want)
	}
	noTimeout := policy(eventingduckv1.DeliverySpec{Retry: ptr.To[int32](2)})
	if got, want := policyBudget(noTimeout), 3*unboundedAttempt; got != want {
		t.Errorf("without timeout %v, want %v", got, want)
	}
	retryAfter := policy(eventingduckv1.DeliverySpec{Retry: ptr.To[int32](1), Timeout: ptr.To("PT1S"), RetryAfterMax: ptr.To("PT30S")})
	if got, want := policyBudget(retryAfter), 32*time.Second; got != want {
		t.Errorf("with retryAfterMax %v, want %v", got, want)
	}
	huge := policy(eventingduckv1.DeliverySpec{Retry: ptr.To[int32](200), BackoffPolicy: &exp, BackoffDelay: ptr.To("PT1S"), Timeout: ptr.To("PT1S")})
	if got := policyBudget(huge); got != maxReclaimIdle {
		t.Errorf("200 exponential retries: %v, want the cap %v", got, maxReclaimIdle)
	}
	withDLS := &triggerState{retry: project, dlsRetry: project, dls: &duckv1.Addressable{}}
	short := &triggerState{retry: policy(eventingduckv1.DeliverySpec{Timeout: ptr.To("PT1S")})}
	if got, want := idleThreshold([]*triggerState{short, withDLS}), 2*66200*time.Millisecond+reclaimMargin; got != want {
		t.Errorf("threshold %v, want %v (delivery + dead letter sink + margin of the longest Trigger)", got, want)
	}
}
