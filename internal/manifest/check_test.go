package manifest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/internal/manifest"
)

func TestCheck(t *testing.T) {
	type want struct {
		object, field, message string
		code                   manifest.Code
		severity               manifest.Severity
	}
	tests := []struct {
		dir  string
		opts manifest.CheckOptions
		want []want
	}{
		{"missing-key", manifest.CheckOptions{}, []want{
			{"Service.serving.knative.dev saga/order", "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
				`ConfigMap saga/saga-config has no key "REDIS_URL" (it has: LOG_LEVEL)`, manifest.CodeReference, manifest.SeverityError},
			{"Service.serving.knative.dev saga/order", "spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef.name",
				"Secret saga/redis-auth is not defined", manifest.CodeReference, manifest.SeverityError},
			{"Service.serving.knative.dev saga/order", "spec.template.spec.containers[0].envFrom[0].configMapRef.name",
				"ConfigMap saga/extra-config is not defined", manifest.CodeReference, manifest.SeverityError},
		}},
		{"dangling", manifest.CheckOptions{}, []want{
			{"Broker saga/default", "spec.delivery.deadLetterSink.ref",
				"Service.serving.knative.dev saga/saga-dlq is not defined", manifest.CodeReference, manifest.SeverityError},
			{"SinkBinding saga/order-sink", "spec.sink.ref",
				"Broker saga/orders is not defined", manifest.CodeReference, manifest.SeverityError},
			{"SinkBinding saga/order-sink", "spec.subject",
				"Service.serving.knative.dev saga/order is not defined", manifest.CodeReference, manifest.SeverityError},
			{"Trigger saga/on-order", "spec.subscriber.ref",
				"Service.serving.knative.dev saga/payment is not defined", manifest.CodeReference, manifest.SeverityError},
			{"Trigger saga/on-audit", "spec.broker",
				"Broker saga/audit is not defined", manifest.CodeReference, manifest.SeverityError},
		}},
		{"not-ko", manifest.CheckOptions{}, []want{
			{"Service.serving.knative.dev saga/legacy", "spec.template.spec.containers[0].image",
				`not runnable locally: image "ghcr.io/example/legacy:1.2.3" is not ko://<import path>`, manifest.CodeNotLocal, manifest.SeverityWarning},
		}},
		{"filter-ignored", manifest.CheckOptions{EmittedTypes: map[string]bool{"com.example.order.created": true}}, []want{
			{"Trigger saga/on-order", "spec.filter",
				"spec.filter is ignored because spec.filters is set", manifest.CodeIgnoredField, manifest.SeverityWarning},
			{"Trigger saga/on-order", "spec.filters[0].exact[type]",
				`event type "com.example.order.placed", which no function emits`, manifest.CodeUnemittedType, manifest.SeverityWarning},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			set, errs := mustLoad(t, []string{"testdata/check/" + tt.dir}, manifest.WithNamespace("saga"))
			if errs != nil {
				t.Fatalf("Load: %v", errs)
			}
			got := manifest.Check(set, tt.opts)
			if len(got) != len(tt.want) {
				t.Errorf("Check returned %d problems, want %d:\n%v", len(got), len(tt.want), got)
			}
			for _, w := range tt.want {
				p := findProblem(got, w.field, w.message)
				if p == nil {
					t.Errorf("no problem at %q containing %q in:\n%v", w.field, w.message, got)
					continue
				}
				if p.Object != w.object || p.Code != w.code || p.Severity != w.severity || p.File == "" || p.Line == 0 {
					t.Errorf("problem %v: object %q code %q severity %v; want %q %q %v with a file and line",
						p, p.Object, p.Code, p.Severity, w.object, w.code, w.severity)
				}
			}
		})
	}
}

func TestCheckEmittedTypes(t *testing.T) {
	set, _ := mustLoad(t, []string{"testdata/valid"}, manifest.WithNamespace("saga"))
	emitted := map[string]bool{"com.example.order.created": true}
	got := manifest.Check(set, manifest.CheckOptions{EmittedTypes: emitted})
	want := `testdata/valid/triggers/order-filters.yaml:1: warning: Trigger saga/order-filters: spec.filters[0].exact[type]: ` +
		`the Trigger filters on event type "com.example.payment.failed", which no function emits: it never fires`
	if len(got) != 1 || got[0].String() != want {
		t.Errorf("Check =\n%v\nwant\n%s", got, want)
	}
	emitted["com.example.payment.failed"] = true
	if got := manifest.Check(set, manifest.CheckOptions{EmittedTypes: emitted}); len(got) != 0 {
		t.Errorf("Check with every type emitted = %v", got)
	}
	emitted = map[string]bool{}
	var fields []string
	for _, p := range manifest.Check(set, manifest.CheckOptions{EmittedTypes: emitted}) {
		fields = append(fields, p.Field)
	}
	if got := fmt.Sprint(fields); got != "[spec.filter.attributes[type] spec.filters[0].exact[type]]" {
		t.Errorf("fields = %s", got)
	}
}

func TestCheckNil(t *testing.T) {
	if ps := manifest.Check(nil, manifest.CheckOptions{}); ps != nil {
		t.Errorf("Check(nil) = %v", ps)
	}
	if !strings.Contains(string(manifest.CodeNotLocal), "locally") {
		t.Errorf("CodeNotLocal = %q", manifest.CodeNotLocal)
	}
}
