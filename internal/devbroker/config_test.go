package devbroker_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/testredis"
)

func TestDefaultResolver(t *testing.T) {
	svc, _ := apis.ParseURL("http://127.0.0.1:9001")
	resolve := devbroker.DefaultResolver(
		map[types.NamespacedName]*apis.URL{{Namespace: "saga", Name: "fn"}: svc},
		func(ns, name string) *apis.URL {
			u, _ := apis.ParseURL("http://127.0.0.1:8080/" + ns + "/" + name)
			return u
		})
	ref := func(apiVersion, kind, name, namespace string) *duckv1.KReference {
		return &duckv1.KReference{APIVersion: apiVersion, Kind: kind, Name: name, Namespace: namespace}
	}
	uri := func(s string) *apis.URL {
		u, err := apis.ParseURL(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	cases := []struct {
		name    string
		dest    duckv1.Destination
		want    string
		wantErr string
	}{
		{"ksvc ref", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", "")}, "http://127.0.0.1:9001", ""},
		{"ksvc ref with namespace", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", "saga")}, "http://127.0.0.1:9001", ""},
		{"ksvc ref + relative uri", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", ""), URI: uri("/path?q=1")}, "http://127.0.0.1:9001/path?q=1", ""},
		{"broker ref", duckv1.Destination{Ref: ref("eventing.knative.dev/v1", "Broker", "default", "")}, "http://127.0.0.1:8080/saga/default", ""},
		{"absolute uri", duckv1.Destination{URI: uri("http://example.com/x")}, "http://example.com/x", ""},
		{"relative uri alone", duckv1.Destination{URI: uri("/x")}, "", "not absolute"},
		{"ref + absolute uri", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", ""), URI: uri("http://x/")}, "", "absolute URI is not allowed"},
		{"unknown ksvc", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "nope", "")}, "", "not found"},
		{"ksvc in another namespace", duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", "other")}, "", "not found"},
		{"core Service", duckv1.Destination{Ref: ref("v1", "Service", "fn", "")}, "", "only serving.knative.dev Services"},
		{"empty", duckv1.Destination{}, "", "missing Ref and URI"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve(context.Background(), tc.dest, "saga")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	// The resolver returns copies: changing one must not change the table.
	got, _ := resolve(context.Background(), duckv1.Destination{Ref: ref("serving.knative.dev/v1", "Service", "fn", "")}, "saga")
	got.Path = "/changed"
	if svc.Path != "" {
		t.Fatal("resolver returned the table's URL, not a copy")
	}
}

func withRate(c devbroker.Config, rate float64) devbroker.Config {
	c.DuplicateDeliveries = rate
	return c
}

func TestNewRejects(t *testing.T) {
	rdb := testredis.Start(t).Client(t)
	resolve := devbroker.DefaultResolver(map[types.NamespacedName]*apis.URL{
		{Namespace: ns, Name: "sub"}: apis.HTTP("127.0.0.1:1"),
	}, nil)
	cfg := func(mods ...func(*eventingv1.Trigger)) devbroker.Config {
		return devbroker.Config{Redis: rdb, Brokers: brokers(nil), Triggers: []*eventingv1.Trigger{trigger("sub", mods...)}, Resolve: resolve}
	}
	cases := map[string]struct {
		cfg  devbroker.Config
		want string
	}{
		"no redis":                {devbroker.Config{Brokers: brokers(nil), Resolve: resolve}, "Redis"},
		"no brokers":              {devbroker.Config{Redis: rdb, Resolve: resolve}, "Broker"},
		"unknown broker":          {cfg(func(t *eventingv1.Trigger) { t.Spec.Broker = "nope" }), "not configured"},
		"unresolvable subscriber": {cfg(func(t *eventingv1.Trigger) { t.Spec.Subscriber = ksvc("missing") }), "resolve subscriber"},
		// sdk-go/sql's parser panics on this; New must turn it into an error.
		"CESQL that panics the parser": {cfg(func(t *eventingv1.Trigger) {
			t.Spec.Filters = []eventingv1.SubscriptionsAPIFilter{{CESQL: "type = = 'x'"}}
		}), "invalid filters"},
		"duplicate trigger": {devbroker.Config{Redis: rdb, Brokers: brokers(nil), Resolve: resolve,
			Triggers: []*eventingv1.Trigger{trigger("sub"), trigger("sub")}}, "duplicate"},
		"duplicate rate above 1":  {withRate(cfg(), 1.5), "probability"},
		"negative duplicate rate": {withRate(cfg(), -0.1), "probability"},
		"NaN duplicate rate":      {withRate(cfg(), math.NaN()), "probability"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := devbroker.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := devbroker.New(cfg()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}
