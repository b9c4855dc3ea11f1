//go:build !race

// The reference this test compares with, Knative's SubjectAndFiltersPass,
// builds Knative's all/any filters, whose reordering goroutine races with
// Filter in eventing v0.50.0 (the reason the dev broker and Policies use
// their own all/any): under the race detector the test would flag
// Knative's code, so it runs without it (go test ./internal/devoidc/).

package devoidc_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/eventing/pkg/auth"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/manifest"
)

// TestAuthorizeIsKnatives: Authorize, with its filters built once, decides
// as Knative's SubjectAndFiltersPass (which builds them per call) for the
// shipped policies, every sender and every event type of the saga.
func TestAuthorizeIsKnatives(t *testing.T) {
	oidc := manifest.WithFeatures(map[string]string{feature.OIDCAuthentication: "enabled"})
	set, err := manifest.Load([]string{filepath.Join("..", "..", "policies"), filepath.Join("..", "..", "brokers", "mt-channel"),
		filepath.Join("..", "..", "triggers", "choreography")}, oidc)
	if err != nil {
		t.Fatal(err)
	}
	orch, err := manifest.Load([]string{filepath.Join("..", "..", "triggers", "orchestration")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := devoidc.NewPolicies(set.EventPolicies(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	br := set.Brokers()[0]
	gvk := eventingv1.SchemeGroupVersion.WithKind("Broker")
	applying, err := p.Applying(gvk, br.ObjectMeta)
	if err != nil || len(applying) == 0 {
		t.Fatalf("applying: %v, %v", applying, err)
	}
	var swf []auth.SubjectsWithFilters
	for _, ep := range applying {
		subs, _ := devoidc.ResolveSubjects(ep)
		swf = append(swf, auth.SubjectsWithFilters{Subjects: subs, Filters: ep.Spec.Filters})
	}
	subjects := []string{devoidc.ProducerSubject("saga"), devoidc.ServiceAccountSubject("saga", "intruder"),
		devoidc.ResourceSubject(sourcesv1.SchemeGroupVersion.WithKind("SinkBinding"), "saga", "order-to-broker"),
		devoidc.ResourceSubject(sourcesv1.SchemeGroupVersion.WithKind("SinkBinding"), "saga", "deadletter-to-broker")}
	for _, tr := range append(set.Triggers(), orch.Triggers()...) {
		subjects = append(subjects, devoidc.TriggerSubject(tr.Namespace, tr.Name))
	}
	types := []string{"io.ksaga.order.create", "io.ksaga.order.created", "io.ksaga.payment.authorized", "io.ksaga.payment.refund",
		"io.ksaga.inventory.reserved", "io.ksaga.inventory.failed", "io.ksaga.notification.sent", "io.ksaga.saga.completed", "com.example.other"}
	allowed := 0
	for _, sub := range subjects {
		for _, typ := range types {
			e := ev(typ)
			want := auth.SubjectAndFiltersPass(context.Background(), sub, swf, e, zap.NewNop().Sugar())
			got := p.Authorize(context.Background(), gvk, br.ObjectMeta, sub, e) == nil
			if got != want {
				t.Errorf("%s sends %s: Authorize %v, Knative %v", sub, typ, got, want)
			}
			if got {
				allowed++
			}
		}
	}
	if allowed == 0 || allowed == len(subjects)*len(types) {
		t.Errorf("%d of %d allowed: the comparison proves nothing", allowed, len(subjects)*len(types))
	}
}
