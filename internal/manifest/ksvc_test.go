package manifest_test

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/manifest"
)

func TestResolveEnv(t *testing.T) {
	set, _ := mustLoad(t, []string{"testdata/valid"}, manifest.WithNamespace("saga"))
	got, err := manifest.ResolveEnv(set, set.Service("saga", "order"))
	if err != nil {
		t.Fatal(err)
	}
	want := []manifest.EnvVar{
		{"LOG_LEVEL", "debug"}, // from envFrom, overridden by env, keeps its place
		{"REDIS_HOST", "redis.saga.svc.cluster.local"},
		{"REDIS_PORT", "6379"},
		{"REDIS_password", "s3cr3t"}, // secretRef with prefix, data base64-decoded
		{"REDIS_username", "saga"},   // stringData
		{"REDIS_ADDR", "redis.saga.svc.cluster.local:6379"},
		{"REDIS_PASSWORD", "s3cr3t"},
		{"PRICE", "$5 for $(UNDEFINED)"},
		// OPTIONAL_FLAG: optional key missing, so not set
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ResolveEnv =\n%v\nwant\n%v", got, want)
	}

	// Nothing to resolve.
	if env, err := manifest.ResolveEnv(set, set.Service("saga", "saga-dlq")); err != nil || len(env) != 0 {
		t.Errorf("ResolveEnv(saga-dlq) = %v, %v", env, err)
	}
}

func TestResolveEnvMissing(t *testing.T) {
	set, _ := mustLoad(t, []string{"testdata/check/missing-key"}, manifest.WithNamespace("saga"))
	_, err := manifest.ResolveEnv(set, set.Service("saga", "order"))
	if err == nil {
		t.Fatal("ResolveEnv succeeded with missing references")
	}
	for _, want := range []string{
		`Service.serving.knative.dev saga/order: envFrom[0].configMapRef: ConfigMap saga/extra-config not found`,
		`Service.serving.knative.dev saga/order: env REDIS_URL: configMapKeyRef: ConfigMap saga/saga-config has no key "REDIS_URL"`,
		`Service.serving.knative.dev saga/order: env REDIS_PASSWORD: secretKeyRef: Secret saga/redis-auth not found`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "tracing") {
		t.Errorf("an optional reference was reported: %v", err)
	}
}

func TestResolveEnvExpansion(t *testing.T) {
	svc := &servingv1.Service{}
	svc.Namespace, svc.Name = "saga", "x"
	svc.Spec.Template.Spec.Containers = []corev1.Container{{Env: []corev1.EnvVar{
		{Name: "A", Value: "a"},
		{Name: "B", Value: "$(A)-$(C)"}, // C is defined later: not expanded
		{Name: "C", Value: "c"},
		{Name: "D", Value: "$$(A) $$$(A) $(A $( $ end$"},
		{Name: "E", Value: "é$é $()"},
		{Name: "A", Value: "$(A)$(A)"}, // redefinition sees the old value
		{Name: "F", Value: ""},
		{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
	}}}
	got, err := manifest.ResolveEnv(nil, svc)
	if err != nil {
		t.Fatal(err)
	}
	want := []manifest.EnvVar{
		{"A", "aa"}, {"B", "a-$(C)"}, {"C", "c"}, {"D", "$(A) $a $(A $( $ end$"}, {"E", "é$é $()"}, {"F", ""}, {"NS", "saga"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ResolveEnv =\n%q\nwant\n%q", got, want)
	}

	svc.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
	}
	if _, err := manifest.ResolveEnv(nil, svc); err == nil || !strings.Contains(err.Error(), `env POD: fieldRef "status.podIP"`) {
		t.Errorf("unsupported fieldRef: %v", err)
	}
	if _, err := manifest.ResolveEnv(nil, &servingv1.Service{}); err == nil {
		t.Error("a Service without containers resolved")
	}
}

func TestServiceHelpers(t *testing.T) {
	set, _ := mustLoad(t, []string{"testdata/valid"}, manifest.WithNamespace("saga"))
	tests := []struct {
		name   string
		image  string
		port   int32
		h2c    bool
		annots map[string]string
	}{
		{"order", "ko://github.com/ksaga/ksaga/functions/order", 8081, true, map[string]string{
			"autoscaling.knative.dev/min-scale": "0", "autoscaling.knative.dev/max-scale": "5", "autoscaling.knative.dev/target": "50"}},
		{"saga-dlq", "ko://github.com/ksaga/ksaga/functions/dlq", manifest.DefaultPort, false, nil},
	}
	for _, tt := range tests {
		svc := set.Service("saga", tt.name)
		if got := manifest.Image(svc); got != tt.image {
			t.Errorf("%s: Image = %q, want %q", tt.name, got, tt.image)
		}
		if port, h2c := manifest.ContainerPort(svc); port != tt.port || h2c != tt.h2c {
			t.Errorf("%s: ContainerPort = %d, %v; want %d, %v", tt.name, port, h2c, tt.port, tt.h2c)
		}
		if got := manifest.TemplateAnnotations(svc); !reflect.DeepEqual(got, tt.annots) {
			t.Errorf("%s: TemplateAnnotations = %v, want %v", tt.name, got, tt.annots)
		}
	}

	// The serving container is the one with a port.
	svc := &servingv1.Service{}
	svc.Spec.Template.Spec.Containers = []corev1.Container{
		{Name: "sidecar", Image: "ko://example.com/sidecar"},
		{Name: "app", Image: "ko://example.com/app", Ports: []corev1.ContainerPort{{ContainerPort: 8888}}},
	}
	if c := manifest.ServingContainer(svc); c == nil || c.Name != "app" {
		t.Errorf("ServingContainer = %v", c)
	}
	if manifest.ServingContainer(&servingv1.Service{}) != nil || manifest.Image(&servingv1.Service{}) != "" {
		t.Error("a Service without containers has a serving container")
	}
	if port, _ := manifest.ContainerPort(&servingv1.Service{}); port != manifest.DefaultPort {
		t.Errorf("ContainerPort(empty) = %d", port)
	}
}

func TestKoImportPath(t *testing.T) {
	tests := []struct {
		image, path string
		ok          bool
	}{
		{"ko://github.com/ksaga/ksaga/functions/order", "github.com/ksaga/ksaga/functions/order", true},
		{"ko://example.com/x", "example.com/x", true},
		{"ko://", "", false},
		{"ko:///abs", "", false},
		{"ko://a/b/", "", false},
		{"ko://a//b", "", false},
		{"ko://a/../b", "", false},
		{"ko://a/b:latest", "", false},
		{"ko://a/b@sha256:00", "", false},
		{"ko://a b", "", false},
		{"KO://a/b", "", false},
		{"ghcr.io/ksaga/order:1.0", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if path, ok := manifest.KoImportPath(tt.image); path != tt.path || ok != tt.ok {
			t.Errorf("KoImportPath(%q) = %q, %v; want %q, %v", tt.image, path, ok, tt.path, tt.ok)
		}
	}
}
