package devoidc

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/coreos/go-oidc/v3/oidc"
	"k8s.io/apimachinery/pkg/types"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
)

// BrokerAuth is the sender identity of the dev Brokers, as a cluster with
// authentication-oidc has it (it implements devbroker.Auth):
//
//   - the ingress verifies a request's bearer token with go-oidc, against
//     the Issuer's key and the Broker's audience (401 otherwise); a request
//     without an Authorization header is the outside producer
//     (ProducerSubject of the Broker's namespace);
//   - the sender (or, for a reply, the Trigger) must then be allowed by the
//     EventPolicies that apply to the Broker (403 otherwise);
//   - deliveries carry a token of the Trigger's identity for the
//     destination's audience, when it has one (as Knative's dispatcher).
type BrokerAuth struct {
	issuer    *Issuer
	policies  *Policies
	brokers   map[types.NamespacedName]*eventingv1.Broker
	verifiers map[types.NamespacedName]*oidc.IDTokenVerifier
}

// NewBrokerAuth returns the BrokerAuth of brokers.
func NewBrokerAuth(issuer *Issuer, policies *Policies, brokers []*eventingv1.Broker) *BrokerAuth {
	a := &BrokerAuth{issuer: issuer, policies: policies,
		brokers:   make(map[types.NamespacedName]*eventingv1.Broker, len(brokers)),
		verifiers: make(map[types.NamespacedName]*oidc.IDTokenVerifier, len(brokers))}
	keys := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{issuer.PublicKey().Key}}
	for _, b := range brokers {
		nn := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
		a.brokers[nn] = b
		a.verifiers[nn] = oidc.NewVerifier(issuer.URL(), keys, &oidc.Config{
			ClientID: BrokerAudience(b.Namespace, b.Name), SupportedSigningAlgs: []string{oidc.RS256}})
	}
	return a
}

// Sender authenticates an ingress request for broker: the subject of its
// verified bearer token, or the outside producer when it has none. The
// error is a 401.
func (a *BrokerAuth) Sender(r *http.Request, broker types.NamespacedName) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return ProducerSubject(broker.Namespace), nil
	}
	scheme, raw, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return "", errors.New("authorization header is not a bearer token")
	}
	v := a.verifiers[broker]
	if v == nil {
		return "", fmt.Errorf("no Broker %s", broker)
	}
	tok, err := v.Verify(r.Context(), strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("invalid token: %w", err)
	}
	return tok.Subject, nil
}

// AdmitRequest implements devbroker.Auth.
func (a *BrokerAuth) AdmitRequest(r *http.Request, broker types.NamespacedName, ev *event.Event) (int, error) {
	sub, err := a.Sender(r, broker)
	if err != nil {
		return http.StatusUnauthorized, err
	}
	return a.authorize(r.Context(), broker, sub, ev)
}

// AdmitReply implements devbroker.Auth: a reply reaches the ingress with
// the identity of the Trigger that got it (Knative's broker filter sends
// it with the Trigger's token).
func (a *BrokerAuth) AdmitReply(broker, trigger types.NamespacedName, ev *event.Event) (int, error) {
	return a.authorize(context.Background(), broker, TriggerSubject(trigger.Namespace, trigger.Name), ev)
}

func (a *BrokerAuth) authorize(ctx context.Context, broker types.NamespacedName, subject string, ev *event.Event) (int, error) {
	b := a.brokers[broker]
	if b == nil {
		return http.StatusNotFound, fmt.Errorf("no Broker %s", broker)
	}
	if err := a.policies.Authorize(ctx, eventingv1.SchemeGroupVersion.WithKind("Broker"), b.ObjectMeta, subject, ev); err != nil {
		return http.StatusForbidden, err
	}
	return 0, nil
}

// Token implements devbroker.Auth: the token a delivery of trigger carries
// to a destination whose audience is audience.
func (a *BrokerAuth) Token(_ context.Context, trigger types.NamespacedName, audience string) (string, error) {
	tok, _, err := a.issuer.Token(TriggerSubject(trigger.Namespace, trigger.Name), audience)
	return tok, err
}
