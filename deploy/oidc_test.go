package deploy_test

import (
	"strings"
	"testing"

	"knative.dev/eventing/pkg/apis/feature"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/knfunc"
)

// TestOIDCComponent: `make deploy OIDC=1` (deploy/components/oidc) adds the
// EventPolicies of policies/ (valid only with authentication-oidc, as
// Knative's webhook checks) and gives every function with a CloudEvents
// route (every Service events are delivered to: the steps, the
// orchestrator, the dead-letter sink, the sweeper) the sender-identity
// settings `ksaga dev` derives from those policies: its audience (what its
// Triggers or its PingSource name) and the subjects its policies allow; the
// whole environment is a valid knfunc OIDCConfig; and order-api
// authenticates its callers (KSAGA_API_OIDC_*).
func TestOIDCComponent(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			file, real := render(t, mode, "mt-channel", "OIDC=1")
			if !real {
				t.Skip("needs kustomize to apply the component's patches")
			}
			set, err := manifest.Load([]string{file}, manifest.WithFeatures(map[string]string{feature.OIDCAuthentication: "enabled"}))
			if err != nil {
				t.Fatal(err)
			}
			if n, want := len(set.EventPolicies()), len(yamlDocs(t, "policies", "EventPolicy")); n != want || n == 0 {
				t.Errorf("%d EventPolicies rendered, want the %d of policies/", n, want)
			}
			policies, err := devoidc.NewPolicies(set.EventPolicies(), feature.AuthorizationAllowSameNamespace)
			if err != nil {
				t.Fatal(err)
			}
			cm := set.ConfigMap("saga", "ksaga-config")
			// The order API authenticates its callers (issue 15 §5).
			api := envOf(cm.Data, set.Service("saga", "order-api"))
			if cfg, err := knfunc.OIDCConfigFromEnv(func(k string) string { return api[k] }, "KSAGA_API_OIDC_"); err != nil || !cfg.Enabled() || cfg.Audience == "" {
				t.Errorf("order-api's callers: OIDC config %+v, %v: want on", cfg, err)
			}
			receivers := eventReceivers(set)
			for _, name := range []string{"order", "payment", "inventory", "notification", "deadletter", "sweeper"} {
				if !receivers[name] {
					t.Errorf("no event is delivered to %s", name)
				}
			}
			for _, svc := range set.Services() {
				if !receivers[svc.Name] {
					continue // no CloudEvents come its way (order-api, console, users)
				}
				env := envOf(cm.Data, svc)
				cfg, err := knfunc.OIDCConfigFromEnv(func(k string) string { return env[k] }, knfunc.OIDCPrefix)
				if err != nil || !cfg.Enabled() {
					t.Errorf("%s: OIDC config %+v, %v", svc.Name, cfg, err)
					continue
				}
				if want := devoidc.ServiceAudience(svc.Namespace, svc.Name); cfg.Audience != want {
					t.Errorf("%s: audience %q, want %q", svc.Name, cfg.Audience, want)
				}
				want, _, err := policies.AllowedSubjects(servingv1.SchemeGroupVersion.WithKind("Service"), svc.ObjectMeta)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(cfg.Subjects, ",") != strings.Join(want, ",") {
					t.Errorf("%s: subjects %q, want what its EventPolicies allow: %q", svc.Name, cfg.Subjects, want)
				}
			}
		})
	}
}

// eventReceivers are the Knative Services events are delivered to: a
// Trigger's subscriber or dead letter sink, the Broker's dead letter sink,
// a PingSource's sink.
func eventReceivers(set *manifest.Set) map[string]bool {
	out := map[string]bool{}
	add := func(d *duckv1.Destination) {
		if d != nil && d.Ref != nil && d.Ref.Kind == "Service" {
			out[d.Ref.Name] = true
		}
	}
	for _, tr := range set.Triggers() {
		add(&tr.Spec.Subscriber)
		if tr.Spec.Delivery != nil {
			add(tr.Spec.Delivery.DeadLetterSink)
		}
	}
	for _, b := range set.Brokers() {
		if b.Spec.Delivery != nil {
			add(b.Spec.Delivery.DeadLetterSink)
		}
	}
	for _, p := range set.PingSources() {
		add(&p.Spec.Sink)
	}
	return out
}

// envOf merges a ConfigMap's data (envFrom) and the first container's
// literal env, as the pod would see them.
func envOf(cm map[string]string, svc *servingv1.Service) map[string]string {
	env := map[string]string{}
	for k, v := range cm {
		env[k] = v
	}
	for _, e := range svc.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// yamlDocs returns the objects of a kind in a folder.
func yamlDocs(t *testing.T, dir, kind string) []*manifest.Object {
	t.Helper()
	set, err := manifest.Load([]string{path(dir)}, manifest.WithFeatures(map[string]string{feature.OIDCAuthentication: "enabled"}))
	if err != nil {
		t.Fatal(err)
	}
	var out []*manifest.Object
	for _, o := range set.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}
