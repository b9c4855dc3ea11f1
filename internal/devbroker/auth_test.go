package devbroker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	"knative.dev/eventing/pkg/apis/feature"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/knfunc"
)

// oidcEnv is a broker with sender identity: the dev issuer served over
// HTTP, the Broker's EventPolicies, and a verifier as the functions run it
// (knfunc, against the issuer's discovery document and keys).
type oidcEnv struct {
	*env
	issuer *devoidc.Issuer
	url    string // the issuer's
}

func newOIDCEnv(t *testing.T) *oidcEnv {
	t.Helper()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	is, err := devoidc.NewIssuer(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	h = is.Handler()
	return &oidcEnv{env: newEnv(t), issuer: is, url: srv.URL}
}

// verifier checks tokens as the function behind audience would.
func (o *oidcEnv) verifier(t *testing.T, audience string) *knfunc.Verifier {
	t.Helper()
	v, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: o.url, Audience: audience})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func policy(name string, filters []eventingv1.SubscriptionsAPIFilter, subs ...string) *v1alpha1.EventPolicy {
	ep := &v1alpha1.EventPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.EventPolicySpec{
			To:      []v1alpha1.EventPolicySpecTo{{Ref: &v1alpha1.EventPolicyToReference{APIVersion: "eventing.knative.dev/v1", Kind: "Broker", Name: brokerName}}},
			Filters: filters,
		}}
	for _, s := range subs {
		ep.Spec.From = append(ep.Spec.From, v1alpha1.EventPolicySpecFrom{Sub: ptr.To(s)})
	}
	return ep
}

func exactType(typ string) []eventingv1.SubscriptionsAPIFilter {
	return []eventingv1.SubscriptionsAPIFilter{{Exact: map[string]string{"type": typ}}}
}

// TestSenderIdentity: with Config.Auth the ingress takes saga starts from
// the outside producer (no token) and step results only from the Triggers
// the EventPolicies name (401 for a bad token, 403 for a sender or type no
// policy allows, nothing stored); every delivery carries a token of the
// Trigger for the subscriber's audience, which the subscriber verifies
// through the issuer's discovery; a reply the policies refuse is
// dead-lettered with 403, and the dead letter carries a token for the
// sink's audience.
func TestSenderIdentity(t *testing.T) {
	o := newOIDCEnv(t)
	policies, err := devoidc.NewPolicies([]*v1alpha1.EventPolicy{
		policy("from-producer", exactType("test.start"), devoidc.ProducerSubject(ns)),
		policy("replies-worker", exactType("test.done"), "system:serviceaccount:"+ns+":worker-on-*"),
	}, feature.AuthorizationAllowSameNamespace)
	if err != nil {
		t.Fatal(err)
	}
	workerAud, dlsAud := devoidc.ServiceAudience(ns, "worker"), devoidc.ServiceAudience(ns, "dls")
	dls := ksvc("dls")
	dls.Audience = ptr.To(dlsAud)
	tr := trigger("worker-on-start", onType("test.start"), withDelivery(delivery(0, "", "", "")), func(t *eventingv1.Trigger) {
		t.Spec.Subscriber = ksvc("worker")
		t.Spec.Subscriber.Audience = ptr.To(workerAud)
		t.Spec.Delivery.DeadLetterSink = &dls
	})
	bs := brokers(nil)
	cfg := o.config(bs, []*eventingv1.Trigger{tr})
	cfg.Auth = devoidc.NewBrokerAuth(o.issuer, policies, bs)
	o.start(cfg)
	o.sink.on("/worker", func(w http.ResponseWriter, r rec, n int) {
		reply := newEvent("test.done")
		if r.Event != nil && r.Event.Extensions()["forge"] == "yes" {
			reply = newEvent("test.forged") // not a type the worker may emit
		}
		replyWith(w, reply, http.StatusOK)
	})
	path := "/" + ns + "/" + brokerName
	bearer := func(sub, aud string) http.Header {
		tok, _, err := o.issuer.Token(sub, aud)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + tok}}
	}
	brokerAud := devoidc.BrokerAudience(ns, brokerName)
	triggerSub := devoidc.TriggerSubject(ns, tr.Name)

	for _, c := range []struct {
		name string
		typ  string
		hdr  http.Header
		want int
	}{
		{"a step result from the outside producer", "test.done", nil, http.StatusForbidden},
		{"a bad token", "test.start", http.Header{"Authorization": {"Bearer nope"}}, http.StatusUnauthorized},
		{"not a bearer token", "test.start", http.Header{"Authorization": {"Basic eDp5"}}, http.StatusUnauthorized},
		{"a token for another audience", "test.done", bearer(triggerSub, workerAud), http.StatusUnauthorized},
		{"a sender no policy names", "test.done", bearer(devoidc.ServiceAccountSubject(ns, "intruder"), brokerAud), http.StatusForbidden},
		{"the Trigger, with a type it may not send", "test.start", bearer(triggerSub, brokerAud), http.StatusForbidden},
	} {
		if code := o.post(path, newEvent(c.typ), false, c.hdr); code != c.want {
			t.Errorf("%s: %d, want %d", c.name, code, c.want)
		}
	}
	if n := o.rdb.XLen(context.Background(), "ksaga:broker:{"+ns+"/"+brokerName+"}").Val(); n != 0 {
		t.Fatalf("%d refused events stored", n)
	}
	if c := o.obs.get("rejected/" + "/403"); c != 3 {
		t.Errorf("rejected 403: %d, want 3", c)
	}

	// Accepted: a start from the outside producer, and a result from the
	// Trigger's identity (as the broker filter posts a reply).
	if code := o.post(path, newEvent("test.start"), false, nil); code != http.StatusAccepted {
		t.Fatalf("a start without a token: %d, want 202", code)
	}
	if code := o.post(path, newEvent("test.done"), false, bearer(triggerSub, brokerAud)); code != http.StatusAccepted {
		t.Fatalf("a result with the Trigger's token: %d, want 202", code)
	}
	got := o.sink.wait(t, "/worker", 1)
	claims, err := o.verifier(t, workerAud).Verify(&http.Request{Header: got[0].Header})
	if err != nil || claims.Subject != triggerSub {
		t.Fatalf("the delivery's token: %+v, %v; want subject %s for %s", claims, err, triggerSub, workerAud)
	}
	if _, err := o.verifier(t, devoidc.ServiceAudience(ns, "payment")).Verify(&http.Request{Header: got[0].Header}); knfunc.AuthStatus(err) != http.StatusUnauthorized {
		t.Errorf("the delivery's token works for another function: %v", err)
	}
	o.waitIdle()
	if n := o.obs.settled("received", 3); n != 3 { // start, done, and the worker's reply
		t.Errorf("received %d events, want 3", n)
	}

	// A reply the policies refuse goes to the dead letter sink with 403.
	o.send(newEvent("test.start", "forge", "yes"))
	dl := o.sink.wait(t, "/dls", 1)
	if c := ext(t, dl[0], "knativeerrorcode"); c != "403" {
		t.Errorf("dead letter code %q, want 403", c)
	}
	claims, err = o.verifier(t, dlsAud).Verify(&http.Request{Header: dl[0].Header})
	if err != nil || claims.Subject != triggerSub {
		t.Errorf("the dead letter's token: %+v, %v", claims, err)
	}
	o.waitIdle()
}

// TestNoSenderIdentity: without Config.Auth nothing changes: no token on
// deliveries, any sender accepted.
func TestNoSenderIdentity(t *testing.T) {
	e := newEnv(t)
	tr := trigger("worker", onType("test.done"), func(t *eventingv1.Trigger) {
		t.Spec.Subscriber.Audience = ptr.To(devoidc.ServiceAudience(ns, "worker"))
	})
	e.run(brokers(nil), tr)
	e.send(newEvent("test.done"))
	got := e.sink.wait(t, "/worker", 1)
	if a := got[0].Header.Get("Authorization"); a != "" {
		t.Errorf("Authorization %q without sender identity", a)
	}
}
