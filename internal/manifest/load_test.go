package manifest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"

	"github.com/ksaga/ksaga/internal/manifest"
)

// mustLoad loads paths and fails the test if Load returns an error that is
// not Problems.
func mustLoad(t *testing.T, paths []string, opts ...manifest.Option) (*manifest.Set, manifest.Problems) {
	t.Helper()
	set, err := manifest.Load(paths, opts...)
	var ps manifest.Problems
	if err != nil && !errors.As(err, &ps) {
		t.Fatalf("Load(%v): %v", paths, err)
	}
	if set == nil {
		t.Fatalf("Load(%v) returned a nil Set", paths)
	}
	return set, ps
}

func TestLoadValid(t *testing.T) {
	set, errs := mustLoad(t, []string{"testdata/valid"}, manifest.WithNamespace("saga"))
	if errs != nil {
		t.Fatalf("valid manifests rejected:\n%v", errs)
	}

	// Apply order: files in lexical order (folders recursively), then documents.
	want := []struct {
		file  string
		index int
		line  int
		id    string
	}{
		{"00-namespace.yaml", 0, 1, "Namespace saga"},
		{"10-config.yaml", 0, 2, "ConfigMap saga/saga-config"},
		{"10-config.yaml", 1, 11, "Secret saga/redis-auth"},
		{"20-broker.yaml", 0, 1, "Broker saga/default"},
		{"20-broker.yaml", 1, 21, "Broker saga/audit"},
		{"50-sinkbinding.yaml", 0, 1, "SinkBinding saga/order-sink"},
		{"60-redis.yaml", 0, 1, "StatefulSet saga/redis"},
		{"60-redis.yaml", 1, 22, "Service saga/redis"},
		{"61-loadgen.yaml", 0, 1, "Deployment saga/loadgen"},
		{"70-alerts.yaml", 0, 1, "PrometheusRule saga/saga-alerts"},
		{"kustomization.yaml", 0, 1, "Kustomization <no name>"},
		{"services/dlq.yaml", 0, 2, "Service.serving.knative.dev saga/saga-dlq"},
		{"services/order.yaml", 0, 1, "Service.serving.knative.dev saga/order"},
		{"triggers/order-created.yaml", 0, 1, "Trigger saga/order-created"},
		{"triggers/order-filters.yaml", 0, 1, "Trigger saga/order-filters"},
	}
	if len(set.Objects) != len(want) {
		t.Fatalf("got %d objects, want %d", len(set.Objects), len(want))
	}
	for i, w := range want {
		o := set.Objects[i]
		if got := filepath.ToSlash(o.File); got != "testdata/valid/"+w.file || o.Index != w.index || o.Line != w.line || o.ID.String() != w.id {
			t.Errorf("object %d = %s#%d line %d %q, want %s#%d line %d %q", i, got, o.Index, o.Line, o.ID, w.file, w.index, w.line, w.id)
		}
	}
	if len(set.Skipped) != 0 {
		t.Errorf("Skipped = %v, want none", set.Skipped)
	}

	// Serving warns about the container without a securityContext, and only there.
	warns := set.Problems.Warnings()
	if len(warns) != 1 || warns[0].Object != "Service.serving.knative.dev saga/saga-dlq" ||
		!strings.Contains(warns[0].Field, "spec.template.spec.containers[0].securityContext.runAsNonRoot") {
		t.Errorf("warnings = %v, want one securityContext warning on saga-dlq", warns)
	}

	// Typed accessors, in apply order.
	if got := len(set.Brokers()); got != 2 {
		t.Errorf("Brokers() = %d, want 2", got)
	}
	if got := len(set.Triggers()); got != 2 {
		t.Errorf("Triggers() = %d, want 2", got)
	}
	if s := set.Services(); len(s) != 2 || s[0].Name != "saga-dlq" || s[1].Name != "order" {
		t.Errorf("Services() = %v, want saga-dlq, order", s)
	}
	if got := len(set.SinkBindings()); got != 1 {
		t.Errorf("SinkBindings() = %d, want 1", got)
	}
	if o := set.ObjectOf(set.Triggers()[0]); o == nil || o.Name != "order-created" {
		t.Errorf("ObjectOf(trigger) = %v", o)
	}

	// Webhook defaulting happened, with config-br-defaults.
	audit := set.Broker("saga", "audit")
	if audit == nil {
		t.Fatal("Broker saga/audit not found")
	}
	if got := audit.Annotations["eventing.knative.dev/broker.class"]; got != "MTChannelBasedBroker" {
		t.Errorf("audit broker class = %q, want MTChannelBasedBroker", got)
	}
	if d := audit.Spec.Delivery; d == nil || d.Retry == nil || *d.Retry != 10 || d.BackoffPolicy == nil ||
		*d.BackoffPolicy != eventingduckv1.BackoffPolicyExponential || d.BackoffDelay == nil || *d.BackoffDelay != "PT0.2S" {
		t.Errorf("audit broker delivery = %+v, want retry 10 exponential PT0.2S", audit.Spec.Delivery)
	}
	if c := audit.Spec.Config; c == nil || c.Name != "config-br-default-channel" || c.Namespace != "knative-eventing" {
		t.Errorf("audit broker config = %+v", c)
	}
	tr := set.Triggers()[0]
	if tr.Labels["eventing.knative.dev/broker"] != "default" || tr.Spec.Subscriber.Ref.Namespace != "saga" {
		t.Errorf("trigger not defaulted: labels %v, subscriber %+v", tr.Labels, tr.Spec.Subscriber.Ref)
	}
	if svc := set.Service("saga", "saga-dlq"); svc.Spec.Template.Spec.TimeoutSeconds == nil || *svc.Spec.Template.Spec.TimeoutSeconds != 300 {
		t.Errorf("ksvc not defaulted: timeoutSeconds = %v", svc.Spec.Template.Spec.TimeoutSeconds)
	}

	// Namespaces: defaulted for namespaced kinds, none for a Namespace.
	if ns := set.Objects[0]; ns.Namespace != "" || ns.Value.(*corev1.Namespace).Namespace != "" {
		t.Errorf("Namespace object got a namespace: %q", ns.Namespace)
	}
	if cm := set.ConfigMap("saga", "saga-config"); cm == nil || cm.Namespace != "saga" {
		t.Errorf("ConfigMap saga/saga-config = %v", cm)
	}
	// Secrets: stringData is merged into data, as the API server does.
	sec := set.Secret("saga", "redis-auth")
	if sec == nil || string(sec.Data["password"]) != "s3cr3t" || string(sec.Data["username"]) != "saga" || sec.StringData != nil {
		t.Errorf("Secret = %+v, want data password and username", sec)
	}
	// Kinds kept as unstructured.
	if _, ok := set.Find("monitoring.coreos.com", "PrometheusRule", "saga", "saga-alerts").Value.(*unstructured.Unstructured); !ok {
		t.Error("PrometheusRule is not unstructured")
	}

	if ps := manifest.Check(set, manifest.CheckOptions{}); len(ps) != 0 {
		t.Errorf("Check(valid) = %v", ps)
	}
}

// TestLoadDefaultNamespace: without WithNamespace objects land in "default".
func TestLoadDefaultNamespace(t *testing.T) {
	set, _ := mustLoad(t, []string{"testdata/valid/20-broker.yaml", "testdata/valid/10-config.yaml"})
	if set.Objects[0].ID.String() != "Broker saga/default" || set.Objects[1].ID.String() != "Broker default/audit" {
		t.Errorf("got %v, %v", set.Objects[0].ID, set.Objects[1].ID)
	}
	// Files are loaded in the order given, not sorted.
	if set.Objects[2].Kind != "ConfigMap" {
		t.Errorf("object 2 = %v, want the ConfigMap", set.Objects[2].ID)
	}
}

func TestLoadBroken(t *testing.T) {
	tests := []struct {
		file     string
		field    string // exact Problem.Field
		message  string // substring of Problem.Message
		code     manifest.Code
		features map[string]string
		line     int // the Problem's line, when the test says
	}{
		{"ksvc-min-above-max.yaml",
			"spec.template.metadata.annotations.autoscaling.knative.dev/max-scale, spec.template.metadata.annotations.autoscaling.knative.dev/min-scale",
			"max-scale=2 is less than min-scale=5", manifest.CodeInvalid, nil, 0},
		{"ksvc-autoscaling-on-service.yaml", "metadata.annotations",
			`invalid key name "autoscaling.knative.dev/min-scale"`, manifest.CodeInvalid, nil, 0},
		{"ksvc-annotation-number.yaml", "spec.template.metadata.annotations",
			"cannot decode number into a field of type string", manifest.CodeSchema, nil, 0},
		{"ksvc-reserved-port.yaml", "spec.template.spec.containers[0].ports.containerPort",
			"9090 is a reserved port", manifest.CodeInvalid, nil, 0},
		{"ksvc-fieldref.yaml", "spec.template.spec.containers[0].env[0].valueFrom.fieldRef",
			"must not set the field(s)", manifest.CodeInvalid, nil, 0},
		{"trigger-no-subscriber.yaml", "spec.subscriber.ref, spec.subscriber.uri",
			"expected at least one, got none", manifest.CodeInvalid, nil, 0},
		{"trigger-two-dialects.yaml", "spec.filters[1]",
			"multiple dialects found", manifest.CodeInvalid, nil, 0},
		{"trigger-nested-dialects.yaml", "spec.filters[0].any[0]",
			"multiple dialects found", manifest.CodeInvalid, nil, 0},
		{"trigger-filter-index.yaml", "spec.filters[0].exact[Bad-Attr]",
			`invalid key name "Bad-Attr"`, manifest.CodeInvalid, nil, 0},
		{"trigger-backoff-10s.yaml", "spec.delivery.backoffDelay",
			"invalid value: 10s", manifest.CodeInvalid, nil, 0},
		{"trigger-unknown-field.yaml", "spec.filterz", "unknown field", manifest.CodeSchema, nil, 0},
		{"trigger-bad-cesql.yaml", "spec.filters[0].cesql",
			"invalid value: type = = 'x'", manifest.CodeInvalid, nil, 0},
		{"broker-retryafter.yaml", "spec.delivery.retryAfterMax",
			"must not set the field(s)", manifest.CodeInvalid, nil, 0},
		{"broker-retryafter.yaml", "spec.delivery.retryAfterMax",
			"must not set the field(s)", manifest.CodeInvalid, map[string]string{"delivery-retryafter": "disabled"}, 0},
		{"duplicate", "metadata.name",
			"Broker saga/default is defined both in testdata/broken/duplicate/a.yaml:1 and in testdata/broken/duplicate/b.yaml:6",
			manifest.CodeDuplicate, nil, 0},
		{"yaml-duplicate-key.yaml", "", `key "LOG_LEVEL" already set`, manifest.CodeSchema, nil, 7},
		{"yaml-syntax.yaml", "", "did not find expected key", manifest.CodeSyntax, nil, 5},
		// The line of the error, in the file, not the document's first line.
		{"yaml-syntax-multi.yaml", "", "did not find expected key", manifest.CodeSyntax, nil, 11},
		{"unknown-kinds.yaml", "kind", "unknown kind eventing.knative.dev/v1 Triger (did you mean Trigger?)", manifest.CodeUnknownKind, nil, 3},
		{"unknown-kinds.yaml", "apiVersion", "ksaga reads Trigger only as eventing.knative.dev/v1, not eventing.knative.dev/v2", manifest.CodeUnknownKind, nil, 9},
		{"unknown-kinds.yaml", "apiVersion", "ksaga reads Trigger only as eventing.knative.dev/v1, not eventing.knative.dev/v1beta1", manifest.CodeUnknownKind, nil, 15},
		{"unknown-kinds.yaml", "kind", "unknown kind cert-manager.io/v1 Certificate: ksaga dev would not run it", manifest.CodeUnknownKind, nil, 21},
		{"missing-kind.yaml", "kind", "apiVersion and kind must be set", manifest.CodeSchema, nil, 0},
		{"secret-bad-base64.yaml", "data[password]", "illegal base64 data", manifest.CodeSchema, nil, 0},
		{"generate-name.yaml", "metadata.name", "Required value", manifest.CodeInvalid, nil, 0},
		{"statefulset-selector.yaml", "spec.template.metadata.labels",
			"`selector` does not match template `labels`", manifest.CodeInvalid, nil, 0},
		{"statefulset-selector.yaml", "spec.template.spec.containers[0].image", "Required value", manifest.CodeInvalid, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.field, func(t *testing.T) {
			path := filepath.Join("testdata", "broken", tt.file)
			set, errs := mustLoad(t, []string{path}, manifest.WithNamespace("saga"), manifest.WithFeatures(tt.features))
			if errs == nil {
				t.Fatalf("Load(%s) succeeded; want an error at %q", tt.file, tt.field)
			}
			if len(errs.Warnings()) != 0 {
				t.Errorf("the error of Load holds warnings: %v", errs.Warnings())
			}
			p := findProblem(errs, tt.field, tt.message)
			if p == nil {
				t.Fatalf("no problem at %q containing %q in:\n%v", tt.field, tt.message, errs)
			}
			if p.Code != tt.code || p.Severity != manifest.SeverityError {
				t.Errorf("problem %v: code %q severity %v, want %q error", p, p.Code, p.Severity, tt.code)
			}
			if p.File == "" || p.Line == 0 {
				t.Errorf("problem %v does not name its file and line", p)
			}
			if tt.line != 0 && p.Line != tt.line {
				t.Errorf("problem %v is at line %d, want %d", p, p.Line, tt.line)
			}
			if p.Code != manifest.CodeSyntax && p.Code != manifest.CodeSchema && p.Object == "" {
				t.Errorf("problem %v does not name its object", p)
			}
			if first, _, _ := strings.Cut(p.String(), "\n"); !strings.Contains(errs.Error(), "\n  "+first) {
				t.Errorf("Error() does not contain %q:\n%s", first, errs.Error())
			}
			if len(set.Problems.Errors()) != len(errs) {
				t.Errorf("set.Problems has %d errors, the returned error %d", len(set.Problems.Errors()), len(errs))
			}
		})
	}
}

// TestDeliveryRetryAfterFlag: the same Broker is valid once the caller
// enables the feature.
func TestDeliveryRetryAfterFlag(t *testing.T) {
	set, err := manifest.Load([]string{"testdata/broken/broker-retryafter.yaml"},
		manifest.WithFeatures(map[string]string{"delivery-retryafter": "enabled"}))
	if err != nil {
		t.Fatalf("with delivery-retryafter enabled: %v", err)
	}
	if d := set.Brokers()[0].Spec.Delivery; d.RetryAfterMax == nil || *d.RetryAfterMax != "PT30S" {
		t.Errorf("retryAfterMax = %v", d.RetryAfterMax)
	}
}

func TestLoadOptionErrors(t *testing.T) {
	_, err := manifest.Load([]string{"testdata/valid"}, manifest.WithFeatures(map[string]string{"delivery-retryafter": "enable"}))
	var ps manifest.Problems
	if err == nil || errors.As(err, &ps) || !strings.Contains(err.Error(), `"delivery-retryafter"`) {
		t.Errorf("a feature flag typo gave %v, want an option error", err)
	}
	if _, err := manifest.Load([]string{"testdata/does-not-exist"}); err == nil || errors.As(err, &ps) {
		t.Errorf("a missing path gave %v, want an I/O error", err)
	}
}

// TestSkippedKindsDocumented: docs/deploy.md lists every kind skipped on
// purpose, so a reader can tell an error from a deliberate skip.
func TestSkippedKindsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "### What `ksaga dev` and `ksaga validate` read")
	section = strings.Join(strings.Fields(section), " ")
	for _, k := range manifest.SkippedKinds() {
		if !strings.Contains(section, " "+k+",") && !strings.Contains(section, " "+k+" ") && !strings.Contains(section, " "+k+".") {
			t.Errorf("docs/deploy.md does not list the skipped kind %s", k)
		}
	}
}

// TestLoadSkipped: the kinds skipped on purpose are kept undecoded in
// Set.Skipped, whatever their API version, and are not errors.
func TestLoadSkipped(t *testing.T) {
	set, errs := mustLoad(t, []string{"testdata/unknown"})
	if errs != nil {
		t.Fatalf("skipped kinds are not errors: %v", errs)
	}
	var got []string
	for _, u := range set.Skipped {
		got = append(got, u.APIVersion+" "+u.ID.String()+" @"+u.Source.String())
	}
	want := []string{
		"keda.sh/v1alpha1 ScaledObject order-scaler @testdata/unknown/mixed.yaml:1",
		"batch/v1 Job other/seed @testdata/unknown/mixed.yaml:10",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Skipped =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, ok := set.Skipped[0].Value.(*unstructured.Unstructured); !ok {
		t.Errorf("Skipped value is %T", set.Skipped[0].Value)
	}
	if len(set.Objects) != 1 || set.Objects[0].Kind != "ConfigMap" {
		t.Errorf("Objects = %v, want the ConfigMap", set.Objects)
	}
}

func TestProblemsError(t *testing.T) {
	ps := manifest.Problems{
		{Source: manifest.Source{File: "a.yaml", Line: 3}, Object: "Trigger saga/t", Field: "spec.broker", Message: "bad", Severity: manifest.SeverityError},
		{Source: manifest.Source{File: "b.yaml", Line: 1}, Object: "Service.serving.knative.dev saga/s", Field: "spec.x", Message: "meh", Detail: "more\nlines", Severity: manifest.SeverityWarning},
	}
	want := "manifest: 1 error, 1 warning\n" +
		"  a.yaml:3: Trigger saga/t: spec.broker: bad\n" +
		"  b.yaml:1: warning: Service.serving.knative.dev saga/s: spec.x: meh\n" +
		"  \tmore\n" +
		"  \tlines"
	if got := ps.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	if err := ps.Warnings().Err(); err != nil {
		t.Errorf("Warnings().Err() = %v, want nil", err)
	}
	if err := ps.Err(); err == nil || len(err.(manifest.Problems)) != 1 {
		t.Errorf("Err() = %v, want the one error", err)
	}
}

func findProblem(ps manifest.Problems, field, message string) *manifest.Problem {
	for i := range ps {
		if ps[i].Field == field && strings.Contains(ps[i].Message, message) {
			return &ps[i]
		}
	}
	return nil
}
