package devoidc_test

import (
	"context"
	"path/filepath"
	"testing"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/manifest"
)

// BenchmarkAuthorizeReply is the policy check of one Trigger reply against
// the shipped policies (CESQL filters included).
func BenchmarkAuthorizeReply(b *testing.B) {
	set, err := manifest.Load([]string{filepath.Join("..", "..", "policies"), filepath.Join("..", "..", "brokers", "mt-channel")},
		manifest.WithFeatures(map[string]string{feature.OIDCAuthentication: "enabled"}))
	if err != nil {
		b.Fatal(err)
	}
	p, err := devoidc.NewPolicies(set.EventPolicies(), "")
	if err != nil {
		b.Fatal(err)
	}
	br := set.Brokers()[0]
	sub := devoidc.TriggerSubject("saga", "payment-on-order-created")
	e := ev("io.ksaga.payment.authorized")
	gvk := eventingv1.SchemeGroupVersion.WithKind("Broker")
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Authorize(context.Background(), gvk, br.ObjectMeta, sub, e); err != nil {
			b.Fatal(err)
		}
	}
}
