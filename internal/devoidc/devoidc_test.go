package devoidc_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-jose/go-jose/v3/jwt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	"knative.dev/eventing/pkg/apis/feature"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/knfunc"
)

// serve runs an issuer over HTTP and returns it.
func serve(t *testing.T) *devoidc.Issuer {
	t.Helper()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	is, err := devoidc.NewIssuer(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	h = is.Handler()
	return is
}

// TestTokensVerifyAsKnativeSends: a token of the dev issuer passes go-oidc
// (through knfunc, by discovery) for its audience only, carries the
// subject and the kubernetes.io claim of a service account, and is reused
// until it is close to its expiry.
func TestTokensVerifyAsKnativeSends(t *testing.T) {
	is := serve(t)
	sub := devoidc.TriggerSubject("saga", "payment-on-order-created")
	if sub != "system:serviceaccount:saga:payment-on-order-created-oidc-eventing.knative.dev-trigger" {
		t.Fatalf("TriggerSubject = %q", sub)
	}
	aud := devoidc.ServiceAudience("saga", "payment")
	if aud != "serving.knative.dev/service/saga/payment" || devoidc.BrokerAudience("saga", "default") != "eventing.knative.dev/broker/saga/default" {
		t.Fatalf("audiences: %q, %q", aud, devoidc.BrokerAudience("saga", "default"))
	}
	tok, exp, err := is.Token(sub, aud)
	if err != nil || time.Until(exp) < 55*time.Minute {
		t.Fatalf("Token: %v, expires %v", err, exp)
	}
	again, _, _ := is.Token(sub, aud)
	if again != tok {
		t.Error("a fresh token is not reused")
	}
	v, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: is.URL(), Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.VerifyToken(context.Background(), tok)
	if err != nil || c.Subject != sub {
		t.Fatalf("verify: %+v, %v", c, err)
	}
	var k struct {
		K devoidc.KubernetesClaim `json:"kubernetes.io"`
	}
	if err := c.Decode(&k); err != nil || k.K.Namespace != "saga" || k.K.ServiceAccount.Name != "payment-on-order-created-oidc-eventing.knative.dev-trigger" {
		t.Errorf("kubernetes.io claim: %+v, %v", k, err)
	}
	other, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: is.URL(), Audience: devoidc.ServiceAudience("saga", "inventory")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.VerifyToken(context.Background(), tok); knfunc.AuthStatus(err) != http.StatusUnauthorized {
		t.Errorf("payment's token at inventory: %v, want 401", err)
	}
	expired, err := is.Sign(devoidc.Claims{Claims: jwt.Claims{Issuer: is.URL(), Subject: sub, Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(time.Now().Add(-time.Hour))}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(context.Background(), expired); knfunc.AuthStatus(err) != http.StatusUnauthorized {
		t.Errorf("expired: %v, want 401", err)
	}
}

// TestLongTriggerNamesKeepTheirPrefix: Knative shortens a long service
// account name with a hash but keeps its first 31 characters, which is what
// the policies' <function>-on-* subjects rely on.
func TestLongTriggerNamesKeepTheirPrefix(t *testing.T) {
	sub := devoidc.TriggerSubject("saga", "orchestrator-on-order-confirmfailed")
	_, name, ok := devoidc.ServiceAccountOf(sub)
	if !ok || len(name) > 63 || !strings.HasPrefix(name, "orchestrator-on-") || strings.HasSuffix(name, "-trigger") {
		t.Fatalf("%q: want a hashed name of at most 63 characters starting with orchestrator-on-", sub)
	}
	if !knfunc.SubjectAllowed(sub, []string{"system:serviceaccount:saga:orchestrator-on-*"}) {
		t.Error("the prefix subject does not match the long Trigger")
	}
}

func broker() *eventingv1.Broker {
	return &eventingv1.Broker{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: "default", Labels: map[string]string{"tier": "saga"}}}
}

func ev(typ string) *event.Event {
	e := event.New()
	e.SetID("1")
	e.SetSource("/t")
	e.SetType(typ)
	return &e
}

func toBroker() []v1alpha1.EventPolicySpecTo {
	return []v1alpha1.EventPolicySpecTo{{Ref: &v1alpha1.EventPolicyToReference{APIVersion: "eventing.knative.dev/v1", Kind: "Broker", Name: "default"}}}
}

// TestPolicies evaluates EventPolicies with Knative's helpers: refs resolve
// to the OIDC identities Knative gives, filters (CESQL included) narrow
// what a sender may send, selectors choose resources, and without policies
// the default mode decides.
func TestPolicies(t *testing.T) {
	gvk := eventingv1.SchemeGroupVersion.WithKind("Broker")
	policies := []*v1alpha1.EventPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: "a-order"}, Spec: v1alpha1.EventPolicySpec{To: toBroker(),
			From:    []v1alpha1.EventPolicySpecFrom{{Ref: &v1alpha1.EventPolicyFromReference{APIVersion: "sources.knative.dev/v1", Kind: "SinkBinding", Name: "order-to-broker"}}},
			Filters: []eventingv1.SubscriptionsAPIFilter{{CESQL: "type IN ('io.ksaga.order.create', 'io.ksaga.payment.failed')"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: "b-producer"}, Spec: v1alpha1.EventPolicySpec{
			To:      []v1alpha1.EventPolicySpecTo{{Selector: &v1alpha1.EventPolicySelector{TypeMeta: &metav1.TypeMeta{APIVersion: "eventing.knative.dev/v1", Kind: "Broker"}, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "saga"}}}}},
			From:    []v1alpha1.EventPolicySpecFrom{{Sub: ptr.To(devoidc.ProducerSubject("saga"))}},
			Filters: []eventingv1.SubscriptionsAPIFilter{{Exact: map[string]string{"type": "io.ksaga.order.create"}}}}},
		// Lists the order SinkBinding again, for every type: Knative judges
		// it by a-order's filters, the first policy by name that lists it.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: "c-order-again"}, Spec: v1alpha1.EventPolicySpec{To: toBroker(),
			From: []v1alpha1.EventPolicySpecFrom{{Sub: ptr.To("system:serviceaccount:saga:order-to-broker-oidc-sources.knative.dev-sinkbinding")}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "elsewhere"}, Spec: v1alpha1.EventPolicySpec{
			From: []v1alpha1.EventPolicySpecFrom{{Sub: ptr.To("*")}}}},
	}
	p, err := devoidc.NewPolicies(policies, "")
	if err != nil {
		t.Fatal(err)
	}
	order := "system:serviceaccount:saga:order-to-broker-oidc-sources.knative.dev-sinkbinding"
	if subs, _ := devoidc.ResolveSubjects(policies[0]); len(subs) != 1 || subs[0] != order {
		t.Fatalf("ResolveSubjects = %q, want %q", subs, order)
	}
	for _, c := range []struct {
		sub, typ string
		ok       bool
	}{
		{order, "io.ksaga.order.create", true},
		{order, "io.ksaga.payment.failed", true},
		{order, "io.ksaga.inventory.reserved", false}, // c-order-again would allow it: first match wins
		{devoidc.ProducerSubject("saga"), "io.ksaga.order.create", true},
		{devoidc.ProducerSubject("saga"), "io.ksaga.inventory.reserved", false},
		{devoidc.ServiceAccountSubject("saga", "someone"), "io.ksaga.order.create", false},
	} {
		err := p.Authorize(context.Background(), gvk, broker().ObjectMeta, c.sub, ev(c.typ))
		if (err == nil) != c.ok {
			t.Errorf("%s sends %s: %v, want allowed=%v", c.sub, c.typ, err, c.ok)
		}
	}

	// No policy applies to a Broker of another namespace's... own: the
	// policy of namespace "other" has no spec.to, so it applies to every
	// resource there; a Broker in "lonely" falls back to the default mode.
	lonely := metav1.ObjectMeta{Namespace: "lonely", Name: "b"}
	for _, c := range []struct {
		mode feature.Flag
		sub  string
		ok   bool
	}{
		{feature.AuthorizationAllowSameNamespace, devoidc.ServiceAccountSubject("lonely", "x"), true},
		{feature.AuthorizationAllowSameNamespace, devoidc.ServiceAccountSubject("saga", "x"), false},
		{feature.AuthorizationAllowAll, devoidc.ServiceAccountSubject("saga", "x"), true},
		{feature.AuthorizationDenyAll, devoidc.ServiceAccountSubject("lonely", "x"), false},
	} {
		p, err := devoidc.NewPolicies(policies, c.mode)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Authorize(context.Background(), gvk, lonely, c.sub, ev("t")); (err == nil) != c.ok {
			t.Errorf("%s, %s: %v, want allowed=%v", c.mode, c.sub, err, c.ok)
		}
	}
	if err := p.Authorize(context.Background(), gvk, metav1.ObjectMeta{Namespace: "other", Name: "b"}, "anyone", ev("t")); err != nil {
		t.Errorf("a policy without spec.to applies to its whole namespace: %v", err)
	}

	subs, filtered, err := p.AllowedSubjects(gvk, broker().ObjectMeta)
	if err != nil || len(subs) != 2 || len(filtered) != 2 { // the order SinkBinding once
		t.Errorf("AllowedSubjects = %q, filtered %q, %v", subs, filtered, err)
	}
	subs, _, _ = p.AllowedSubjects(gvk, lonely)
	if len(subs) != 1 || subs[0] != "system:serviceaccount:lonely:*" {
		t.Errorf("AllowedSubjects without policies = %q, want the namespace's", subs)
	}
}

// TestBrokerAuthSender: a request with no Authorization header is the
// outside producer of the Broker's namespace; anything else must be a
// token of the issuer for the Broker's audience.
func TestBrokerAuthSender(t *testing.T) {
	is := serve(t)
	p, _ := devoidc.NewPolicies(nil, "")
	a := devoidc.NewBrokerAuth(is, p, []*eventingv1.Broker{broker()})
	r := httptest.NewRequest(http.MethodPost, "/saga/default", nil)
	bnn := types.NamespacedName{Namespace: "saga", Name: "default"}
	if sub, err := a.Sender(r, bnn); err != nil || sub != devoidc.ProducerSubject("saga") {
		t.Errorf("no header: %q, %v", sub, err)
	}
	tok, _, _ := is.Token("system:serviceaccount:saga:x", devoidc.BrokerAudience("saga", "default"))
	r.Header.Set("Authorization", "Bearer "+tok)
	if sub, err := a.Sender(r, bnn); err != nil || sub != "system:serviceaccount:saga:x" {
		t.Errorf("valid token: %q, %v", sub, err)
	}
	tok, _, _ = is.Token("system:serviceaccount:saga:x", devoidc.ServiceAudience("saga", "payment"))
	r.Header.Set("Authorization", "Bearer "+tok)
	if _, err := a.Sender(r, bnn); err == nil {
		t.Error("a token for another audience is accepted")
	}
	r.Header.Set("Authorization", "Bearer ")
	if _, err := a.Sender(r, bnn); err == nil {
		t.Error("an empty bearer token is the outside producer")
	}
}
