package devbroker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/eventfilter"
)

// Auth is the sender identity of a cluster with Knative's
// authentication-oidc feature (Config.Auth; nil: the feature is off, as by
// default in Knative, and nobody is asked who they are):
//
//   - the ingress authenticates each request and authorizes its sender
//     against the Broker's EventPolicies after the event is parsed and the
//     Broker found, as Knative's ingress does (401 or 403, before the TTL
//     and the store);
//   - a Trigger's reply is authorized as coming from the Trigger (Knative's
//     broker filter posts it to the ingress with the Trigger's token); a
//     refused reply is dead-lettered like any reply the ingress refuses;
//   - every delivery to a destination with an audience (a Trigger's
//     spec.subscriber.audience, a dead letter sink's audience) carries
//     Authorization: Bearer with a token of the Trigger's identity for that
//     audience, as Knative's dispatcher sends.
type Auth interface {
	// AdmitRequest authenticates and authorizes an ingress request that
	// carries ev for broker: 0 to accept, or 401/403 and why.
	AdmitRequest(r *http.Request, broker types.NamespacedName, ev *event.Event) (int, error)
	// AdmitReply authorizes a reply of trigger to broker: 0, or 403 and why.
	AdmitReply(broker, trigger types.NamespacedName, ev *event.Event) (int, error)
	// Token is the bearer token a delivery of trigger carries to a
	// destination whose audience is audience.
	Token(ctx context.Context, trigger types.NamespacedName, audience string) (string, error)
}

// authorizeRequest applies Config.Auth to an ingress request.
func (b *Broker) authorizeRequest(r *http.Request, bs *brokerState, ev *event.Event) (int, error) {
	if b.auth == nil {
		return 0, nil
	}
	return b.auth.AdmitRequest(r, bs.name, ev)
}

// authorizeReply applies Config.Auth to a Trigger's reply.
func (b *Broker) authorizeReply(t *triggerState, reply *event.Event) (int, error) {
	if b.auth == nil {
		return 0, nil
	}
	code, err := b.auth.AdmitReply(t.broker.name, t.name, reply)
	if err != nil {
		b.log.Warn("devbroker: reply refused", slog.String("trigger", t.name.String()), slog.String("type", reply.Type()),
			slog.Int("code", code), slog.Any("error", err))
		return code, fmt.Errorf("reply: %w", err)
	}
	return 0, nil
}

// setToken adds the bearer token of t's identity for audience to h, when
// Config.Auth is set and the destination has an audience.
func (b *Broker) setToken(ctx context.Context, h http.Header, t *triggerState, audience *string) error {
	if b.auth == nil || audience == nil || *audience == "" {
		return nil
	}
	tok, err := b.auth.Token(ctx, t.name, *audience)
	if err != nil {
		return fmt.Errorf("oidc token for %s: %w", t.name, err)
	}
	h.Set("Authorization", "Bearer "+tok)
	return nil
}

// SubscriptionsAPIFilter materialises SubscriptionsAPI filters (a
// Trigger's or an EventPolicy's spec.filters) as this broker does a
// Trigger's: Knative's leaf filters, all/any with Knative's results but
// without its racy reordering (see allOf), and, with a CESQL expression, a
// panic is a non-match logged under name. No filters match everything.
func SubscriptionsAPIFilter(zl *zap.Logger, log *slog.Logger, name string, fs []eventingv1.SubscriptionsAPIFilter) eventfilter.Filter {
	f := eventfilter.Filter(allOf(materializeList(zl, fs)))
	if hasCESQL(fs) {
		f = safeFilter{inner: f, log: log.With(slog.String("filter", name))}
	}
	return f
}
