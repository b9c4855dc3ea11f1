package dev

import (
	"context"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	"github.com/ksaga/ksaga/internal/manifest"
)

func loadTestdata(t *testing.T, paths ...string) *manifest.Set {
	t.Helper()
	set, err := manifest.Load(paths)
	if err != nil {
		t.Fatalf("load %v: %v", paths, err)
	}
	return set
}

// envMap turns KEY=VALUE strings into a map, failing on a repeated key.
func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("env entry %q has no =", kv)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("env has %s twice: %q", k, env)
		}
		m[k] = v
	}
	return m
}

func TestBuildEnv(t *testing.T) {
	set := loadTestdata(t, "testdata/env")
	addrs := addressesOf(set, 9090)
	in := envInput{
		Set: set, Service: set.Service("shop", "order"), Port: 40001, Addrs: addrs,
		RedisURL: "redis://127.0.0.1:7777/0",
		PassEnv:  []string{"PATH=/usr/bin", "HOME=/home/dev", "OTEL_SERVICE_NAME=from-ksaga", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"},
		Extra:    []string{"LOG_LEVEL=debug", "EXTRA=1"},
	}
	res, err := buildEnv(in)
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(t, res.Env)
	want := map[string]string{
		// inherited
		"PATH": "/usr/bin", "HOME": "/home/dev",
		// Knative Serving
		"PORT": "40001", "K_SERVICE": "order", "K_REVISION": "order-00001", "K_CONFIGURATION": "order",
		// envFrom and env, resolved and rewritten
		"PAYMENT_URL":     "http://payment.shop.localhost:9090/charge?x=1",
		"USERS_URL":       "http://users.shop.localhost:9090",
		"USERS_SHORT":     "http://users.shop.localhost:9090",
		"USERS_HOST":      "http://users.shop.localhost:9090",
		"USERS_HOST_PORT": "http://users.shop.localhost:9090",
		"OTHER_PORT":      "http://users.shop.svc.cluster.local:8081", // not the Service's port 80
		"TLS":             "https://users.shop.svc.cluster.local",     // no TLS locally: left alone
		"BROKER":          "http://localhost:9090/shop/default",
		"UNKNOWN":         "http://nobody.shop.svc.cluster.local",
		"REDIS_HOST":      "redis.shop.svc.cluster.local:6379", // not a Knative Service
		"GREETING":        "level-info",                        // $(VAR) expanded before --env
		// dev overrides: the dev Redis replaces the Secret's REDIS_URL
		"REDIS_URL":      "redis://127.0.0.1:7777/0",
		"LISTEN_ADDRESS": "127.0.0.1:40001",
		// SinkBinding by name, to the Broker, with ceOverrides
		"K_SINK":         "http://localhost:9090/shop/default",
		"K_CE_OVERRIDES": `{"extensions":{"team":"checkout"}}`,
		// OTEL_* of ksaga win over the manifest's
		"OTEL_SERVICE_NAME":           "from-ksaga",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
		// --env last
		"LOG_LEVEL": "debug", "EXTRA": "1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s=%q", k, got[k])
		}
	}
	if _, ok := got["KSAGA_FAULT_INJECTION"]; ok {
		t.Error("KSAGA_FAULT_INJECTION set without FaultInjection")
	}
	if !slices.Equal(res.SinkBindings, []string{"shop/order-to-broker"}) {
		t.Errorf("SinkBindings = %q", res.SinkBindings)
	}
	var rewritten []string
	for _, r := range res.Rewrites {
		rewritten = append(rewritten, r.Name)
	}
	slices.Sort(rewritten)
	if w := []string{"BROKER", "PAYMENT_URL", "USERS_HOST", "USERS_HOST_PORT", "USERS_SHORT", "USERS_URL"}; !slices.Equal(rewritten, w) {
		t.Errorf("rewrites of %q, want %q", rewritten, w)
	}
	// Knative's variables come first in the order of definition, the
	// manifests' after the inherited ones.
	if i, j := slices.Index(res.Env, "PATH=/usr/bin"), slices.Index(res.Env, "USERS_URL=http://users.shop.localhost:9090"); i < 0 || j < 0 || i > j {
		t.Errorf("order: %q", res.Env)
	}
}

// A Service that names its revision (spec.template.metadata.name) gets
// that name as K_REVISION, as Knative gives it.
func TestBuildEnvNamedRevision(t *testing.T) {
	set := loadTestdata(t, "testdata/env")
	svc := set.Service("shop", "order")
	svc.Spec.Template.Name = "order-v1"
	res, err := buildEnv(envInput{Set: set, Service: svc, Port: 40001, Addrs: addressesOf(set, 9090), RedisURL: "redis://127.0.0.1:7777/0"})
	if err != nil {
		t.Fatal(err)
	}
	if got := envMap(t, res.Env)["K_REVISION"]; got != "order-v1" {
		t.Fatalf("K_REVISION = %q, want order-v1", got)
	}
}

func TestBuildEnvSelectorSinkBindingAndFaults(t *testing.T) {
	set := loadTestdata(t, "testdata/env")
	res, err := buildEnv(envInput{
		Set: set, Service: set.Service("shop", "users"), Port: 40002, Addrs: addressesOf(set, 80),
		RedisURL: "redis://r/0", FaultInjection: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(t, res.Env)
	for k, v := range map[string]string{
		"K_SINK":                "http://payment.shop.localhost/events", // uri sink rewritten; port 80 is implied
		"K_CE_OVERRIDES":        "",                                     // set, empty, as the SinkBinding webhook does
		"KSAGA_FAULT_INJECTION": "true",
		"K_SERVICE":             "users",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["K_CE_OVERRIDES"]; !ok {
		t.Error("K_CE_OVERRIDES not set")
	}

	// No SinkBinding has payment as subject: no K_SINK.
	res, err = buildEnv(envInput{Set: set, Service: set.Service("shop", "payment"), Port: 1, Addrs: addressesOf(set, 80)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := envMap(t, res.Env)["K_SINK"]; ok {
		t.Errorf("payment got K_SINK: %q", res.Env)
	}
}

func TestAddressesRewrite(t *testing.T) {
	a := NewAddresses(8080,
		[]types.NamespacedName{{Namespace: "saga", Name: "users"}, {Namespace: "saga", Name: "order"}},
		[]types.NamespacedName{{Namespace: "saga", Name: "default"}})
	for _, tc := range []struct {
		in, ns, want string
		ok           bool
	}{
		{"http://users.saga.svc.cluster.local", "saga", "http://users.saga.localhost:8080", true},
		{"http://users.saga.svc.cluster.local:80/x?y=1", "saga", "http://users.saga.localhost:8080/x?y=1", true},
		{"http://USERS.saga.svc.cluster.local.", "saga", "http://users.saga.localhost:8080", true},
		{"http://users.saga.svc", "other", "http://users.saga.localhost:8080", true},
		{"http://users.saga", "other", "http://users.saga.localhost:8080", true},
		{"http://users", "saga", "http://users.saga.localhost:8080", true},
		{"http://users", "other", "http://users", false}, // another namespace's "users"
		{"users.saga.svc.cluster.local", "x", "http://users.saga.localhost:8080", true},
		{"users.saga.svc:80", "x", "http://users.saga.localhost:8080", true},
		{"users.saga", "x", "http://users.saga.localhost:8080", true},
		{"users", "saga", "users", false}, // a bare single name is too ambiguous
		{"users.saga:8080", "x", "users.saga:8080", false},
		{"https://users.saga.svc.cluster.local", "saga", "https://users.saga.svc.cluster.local", false},
		{"http://users.saga.svc.cluster.local:9000", "saga", "http://users.saga.svc.cluster.local:9000", false},
		{"http://nobody.saga.svc.cluster.local", "saga", "http://nobody.saga.svc.cluster.local", false},
		{"http://users.other.svc.cluster.local", "saga", "http://users.other.svc.cluster.local", false},
		{"http://broker-ingress.knative-eventing.svc.cluster.local/saga/default", "saga", "http://localhost:8080/saga/default", true},
		{"http://kafka-broker-ingress.knative-eventing.svc.cluster.local/saga/default", "saga", "http://localhost:8080/saga/default", true},
		{"http://broker-ingress.knative-eventing.svc.cluster.local/saga/nope", "saga", "http://broker-ingress.knative-eventing.svc.cluster.local/saga/nope", false},
		{"redis://users.saga.svc.cluster.local:6379", "saga", "redis://users.saga.svc.cluster.local:6379", false},
		{"", "saga", "", false},
		{"info", "saga", "info", false},
		{"1.5", "saga", "1.5", false},
	} {
		got, ok := a.Rewrite(tc.in, tc.ns)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Rewrite(%q, %q) = %q, %v; want %q, %v", tc.in, tc.ns, got, ok, tc.want, tc.ok)
		}
	}
}

func TestInheritedEnv(t *testing.T) {
	env := map[string]string{"PATH": "/bin", "HOME": "/h", "OTEL_B": "2", "OTEL_A": "1", "REDIS_URL": "redis://x", "LOG_LEVEL": "debug"}
	environ := []string{"OTEL_B=2", "REDIS_URL=redis://x", "OTEL_A=1", "LOG_LEVEL=debug", "OTEL_EMPTY="}
	got := InheritedEnv(environ, func(k string) string { return env[k] })
	want := []string{"PATH=/bin", "HOME=/h", "OTEL_A=1", "OTEL_B=2"}
	if !slices.Equal(got, want) {
		t.Errorf("InheritedEnv = %q, want %q", got, want)
	}
}

func TestResolverRewritesClusterURIs(t *testing.T) {
	set := loadTestdata(t, "testdata/env")
	resolve := addressesOf(set, 8080).Resolver()
	for _, tc := range []struct {
		dest duckv1.Destination
		want string
	}{
		{duckv1.Destination{Ref: &duckv1.KReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "payment"}}, "http://payment.shop.localhost:8080"},
		{duckv1.Destination{Ref: &duckv1.KReference{APIVersion: "eventing.knative.dev/v1", Kind: "Broker", Name: "default"}}, "http://localhost:8080/shop/default"},
		{duckv1.Destination{URI: mustURL(t, "http://payment.shop.svc.cluster.local/hook")}, "http://payment.shop.localhost:8080/hook"},
		{duckv1.Destination{URI: mustURL(t, "http://payment/hook")}, "http://payment.shop.localhost:8080/hook"},
		{duckv1.Destination{URI: mustURL(t, "https://sink.example.com/x")}, "https://sink.example.com/x"},
	} {
		u, err := resolve(context.Background(), tc.dest, "shop")
		if err != nil || u.String() != tc.want {
			t.Errorf("resolve %+v = %v, %v; want %s", tc.dest, u, err, tc.want)
		}
	}
	if _, err := resolve(context.Background(), duckv1.Destination{Ref: &duckv1.KReference{APIVersion: "messaging.knative.dev/v1", Kind: "Channel", Name: "c"}}, "shop"); err == nil {
		t.Error("a Channel ref resolved locally")
	}
}

func mustURL(t *testing.T, s string) *apis.URL {
	t.Helper()
	u, err := apis.ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
