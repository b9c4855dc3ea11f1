package dev

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/knfunc"
)

// loadOIDC loads paths as `ksaga dev --oidc` does.
func loadOIDC(t *testing.T, paths ...string) *manifest.Set {
	t.Helper()
	ld, err := load(paths, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ld.problems.Err(); err != nil {
		t.Fatal(err)
	}
	return ld.set
}

// TestSenderIdentityEnv: a function gets the issuer, its audience (the one
// its Triggers name) and the subjects its EventPolicies allow; a
// SinkBinding's subject gets a token file whose token is the SinkBinding's
// identity for the Broker's audience, verifiable through the issuer's
// discovery on the ingress; the sweeper allows its PingSource only.
func TestSenderIdentityEnv(t *testing.T) {
	set := loadOIDC(t, filepath.Join(repoRoot, "brokers/mt-channel"), filepath.Join(repoRoot, "triggers/choreography"),
		filepath.Join(repoRoot, ManifestsDir), filepath.Join(repoRoot, PoliciesDir))
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	defer srv.Close()
	si, err := newSenderIdentity(set, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Serve this issuer at the test server's address instead of the
	// ingress port: the issuer URL is the only difference.
	si.issuer, err = devoidc.NewIssuer(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	si.files, err = devoidc.NewTokenFiles(si.issuer, si.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	h = si.issuer.Handler()

	payment, err := si.env(set, set.Service("saga", "payment"))
	if err != nil {
		t.Fatal(err)
	}
	pm := envMap(t, payment)
	if pm["KSAGA_OIDC_ISSUER"] != srv.URL || pm["KSAGA_OIDC_AUDIENCE"] != "serving.knative.dev/service/saga/payment" ||
		pm["KSAGA_OIDC_SUBJECTS"] != "system:serviceaccount:saga:payment-on-*" || pm["KSAGA_SINK_TOKEN_FILE"] != "" {
		t.Errorf("payment's env: %v", pm)
	}
	cfg, err := knfunc.OIDCConfigFromEnv(func(k string) string { return pm[k] }, knfunc.OIDCPrefix)
	if err != nil || !cfg.Enabled() {
		t.Errorf("payment's OIDC config: %+v, %v", cfg, err)
	}

	sweeper, err := si.env(set, set.Service("saga", "sweeper"))
	if err != nil {
		t.Fatal(err)
	}
	if sm := envMap(t, sweeper); sm["KSAGA_OIDC_SUBJECTS"] != "system:serviceaccount:saga:sweeper-ping-oidc-sources.knative.dev-pingsource" {
		t.Errorf("the sweeper allows %q, want its PingSource's identity only", sm["KSAGA_OIDC_SUBJECTS"])
	}

	api, err := si.env(set, set.Service("saga", "order-api"))
	if err != nil {
		t.Fatal(err)
	}
	om := envMap(t, api)
	tok, err := (&knfunc.TokenFile{Path: om["KSAGA_SINK_TOKEN_FILE"]}).Get()
	if err != nil {
		t.Fatalf("order-api's token file %q: %v", om["KSAGA_SINK_TOKEN_FILE"], err)
	}
	v, _ := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: srv.URL, Audience: devoidc.BrokerAudience("saga", "default")})
	c, err := v.VerifyToken(context.Background(), tok)
	if err != nil || c.Subject != "system:serviceaccount:saga:order-api-to-broker-oidc-sources.knative.dev-sinkbinding" {
		t.Errorf("order-api's sink token: %+v, %v", c, err)
	}
	si.close()
	if _, err := os.Stat(si.dir); !os.IsNotExist(err) {
		t.Errorf("token folder left behind: %v", err)
	}
}

// TestValidateSenderIdentity: with policies/, ksaga validate reports, as
// errors, what would break once sender identity is on.
func TestValidateSenderIdentity(t *testing.T) {
	dir := copyProject(t)
	if err := os.CopyFS(filepath.Join(dir, PoliciesDir), os.DirFS(filepath.Join(repoRoot, PoliciesDir))); err != nil {
		t.Fatal(err)
	}
	cs, err := Combinations(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if !strings.HasSuffix(c.Name, " + "+PoliciesDir) || len(c.Paths) != 4 {
			t.Fatalf("combination %s %q lacks policies/", c.Name, c.Paths)
		}
	}
	edit := func(file, old, new string) {
		t.Helper()
		p := filepath.Join(dir, file)
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%s lacks %q: %v", file, old, err)
		}
		write(t, p, strings.Replace(string(b), old, new, 1))
	}
	edit("triggers/choreography/01-payment-on-order-created.yaml", "    audience: serving.knative.dev/service/saga/payment\n", "")
	edit("triggers/choreography/02-inventory-on-payment-authorized.yaml", "audience: serving.knative.dev/service/saga/inventory", "audience: serving.knative.dev/service/saga/payment")
	edit("policies/03-broker-replies.yaml", "type: io.ksaga.notification.sent", "type: io.ksaga.notification.queued")
	edit("policies/10-functions-from-triggers.yaml", "sub: system:serviceaccount:saga:order-on-*", "sub: system:serviceaccount:saga:order-api-on-*")
	edit("manifests/38-sweeper.yaml", "    audience: serving.knative.dev/service/saga/sweeper\n", "")
	edit("policies/11-sweeper-from-ping.yaml", "      kind: PingSource\n      name: sweeper-ping", "      kind: SinkBinding\n      name: sweeper-to-broker")
	edit("policies/01-broker-from-order-api.yaml", "    - exact:\n        type: io.ksaga.payment.failed\n", "")
	write(t, filepath.Join(dir, PoliciesDir, "99-extra.yaml"), `apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata:
  name: zz-producer-again
  namespace: saga
spec:
  to:
  - ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
  from:
  - sub: system:serviceaccount:saga:ksaga-producer
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata:
  name: payment-filtered
  namespace: saga
spec:
  to:
  - ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: payment
  from:
  - ref:
      apiVersion: eventing.knative.dev/v1
      kind: Trigger
      name: no-such-trigger
  filters:
  - prefix:
      type: io.ksaga.
`)
	c := Combination{Name: "broken", Paths: []string{filepath.Join(dir, "brokers/mt-channel"), filepath.Join(dir, "triggers/choreography"),
		filepath.Join(dir, ManifestsDir), filepath.Join(dir, PoliciesDir)}}
	r, err := Validate(c.Name, c.Paths)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.Write(&out)
	// A dangling from.ref is a reference error: fix it to see the rest.
	if !strings.Contains(out.String(), "spec.from[0].ref: Trigger saga/no-such-trigger is not defined") {
		t.Fatalf("dangling from.ref not reported:\n%s", out.String())
	}
	edit("policies/99-extra.yaml", "name: no-such-trigger", "name: payment-on-order-created")
	out.Reset()
	if r, err = Validate(c.Name, c.Paths); err != nil {
		t.Fatal(err)
	}
	r.Write(&out)
	for _, want := range []string{
		"Trigger saga/payment-on-order-created: spec.subscriber.audience: no audience: with sender identity on, Knative sends no token to Service saga/payment",
		"Trigger saga/inventory-on-payment-authorized: spec.subscriber.audience: audience \"serving.knative.dev/service/saga/payment\": Service saga/inventory accepts tokens for \"serving.knative.dev/service/saga/inventory\" only",
		"Trigger saga/notification-on-order-confirmed: spec.subscriber: a reply of type io.ksaga.notification.sent from notification would be refused by Broker saga/default (403, dead-lettered)",
		"PingSource saga/sweeper-ping: spec.sink.audience: no audience: with sender identity on, Knative sends no token to Service saga/sweeper",
		"PingSource saga/sweeper-ping: spec.sink: Service saga/sweeper does not allow the PingSource's identity system:serviceaccount:saga:sweeper-ping-oidc-sources.knative.dev-pingsource",
		"SinkBinding saga/order-api-to-broker: spec.subject: an event of type io.ksaga.payment.failed from order-api would be refused by Broker saga/default (403, the send fails)",
		"Trigger saga/order-on-create: spec.subscriber: Service saga/order does not allow the Trigger's identity",
		"Broker saga/default: subject system:serviceaccount:saga:ksaga-producer is allowed by EventPolicies broker-from-producer and zz-producer-again",
		"Service.serving.knative.dev saga/payment: EventPolicies payment-filtered apply to this Knative Service with filters",
		"FAILED: ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "warning: ") && strings.Contains(out.String(), "sender identity") {
		t.Errorf("sender-identity problems must be errors:\n%s", out.String())
	}
}

// TestEventPoliciesNeedOIDC: as in a cluster, EventPolicies are refused
// without the authentication-oidc feature (`ksaga dev --oidc=false -f
// policies`).
func TestEventPoliciesNeedOIDC(t *testing.T) {
	ld, err := load([]string{filepath.Join(repoRoot, PoliciesDir)}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ld.problems.Err(); err == nil || !strings.Contains(err.Error(), "oidc-authentication feature not enabled") {
		t.Errorf("policies without OIDC: %v", err)
	}
}
