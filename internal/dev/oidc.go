package dev

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"

	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/manifest"
)

// PoliciesDir, under Config.Dir, holds the EventPolicies. `ksaga dev` loads
// it with sender identity on (Config.OIDC): Knative accepts EventPolicies
// only with its authentication-oidc feature, so a cluster without it must
// not get them either (deploy/components/oidc adds them).
const PoliciesDir = "policies"

// oidcFeatures are the eventing feature flags of a cluster with sender
// identity: the admission webhook then accepts EventPolicies.
var oidcFeatures = map[string]string{feature.OIDCAuthentication: "enabled"}

// Knative resources whose identities and audiences `ksaga dev` names.
var (
	brokerGVK      = eventingv1.SchemeGroupVersion.WithKind("Broker")
	serviceGVK     = servingv1.SchemeGroupVersion.WithKind("Service")
	sinkBindingGVK = sourcesv1.SchemeGroupVersion.WithKind("SinkBinding")
	pingSourceGVK  = sourcesv1.SchemeGroupVersion.WithKind("PingSource")
)

// senderIdentity is what `ksaga dev` runs for sender identity: the issuer
// (served on the ingress), the EventPolicies, and the token files of the
// SinkBindings' subjects.
type senderIdentity struct {
	issuer   *devoidc.Issuer
	policies *devoidc.Policies
	files    *devoidc.TokenFiles
	dir      string
}

// newSenderIdentity starts the issuer at http://localhost:<port> and
// indexes the set's EventPolicies.
func newSenderIdentity(set *manifest.Set, port int, log *slog.Logger) (*senderIdentity, error) {
	issuer, err := devoidc.NewIssuer(fmt.Sprintf("http://localhost:%d", port))
	if err != nil {
		return nil, err
	}
	policies, err := devoidc.NewPolicies(set.EventPolicies(), feature.AuthorizationAllowSameNamespace)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ksaga-oidc-")
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	files, err := devoidc.NewTokenFiles(issuer, dir, log)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &senderIdentity{issuer: issuer, policies: policies, files: files, dir: dir}, nil
}

// run renews the token files until ctx is done.
func (s *senderIdentity) run(ctx context.Context) { s.files.Run(ctx, time.Minute) }

// close removes the token files and releases the policies.
func (s *senderIdentity) close() {
	_ = os.RemoveAll(s.dir)
	s.policies.Close()
}

// env is the sender-identity environment of a function, as a cluster with
// authentication-oidc would have it (with the project's knfunc settings):
//
//   - KSAGA_OIDC_ISSUER (this issuer), KSAGA_OIDC_AUDIENCE (the Service's
//     audience, devoidc.ServiceAudience, which its Triggers name in
//     spec.subscriber.audience) and KSAGA_OIDC_SUBJECTS (what the
//     EventPolicies that apply to the Service allow; with none, the
//     namespace's service accounts, as allow-same-namespace): knfunc
//     verifies every CloudEvent with them;
//   - KSAGA_SINK_TOKEN_FILE when a SinkBinding whose sink has an audience
//     (a Broker's) binds the Service: a file with a token of the
//     SinkBinding's identity, renewed before it expires (in a cluster:
//     /oidc/token).
func (s *senderIdentity) env(set *manifest.Set, svc *servingv1.Service) ([]string, error) {
	subjects, _, err := s.policies.AllowedSubjects(serviceGVK, svc.ObjectMeta)
	if err != nil {
		return nil, err
	}
	env := []string{
		"KSAGA_OIDC_ISSUER=" + s.issuer.URL(),
		"KSAGA_OIDC_AUDIENCE=" + devoidc.ServiceAudience(svc.Namespace, svc.Name),
		"KSAGA_OIDC_SUBJECTS=" + strings.Join(subjects, ","),
	}
	var token string
	for _, sb := range sinkBindingsFor(set, svc) { // the last one wins, as K_SINK does
		aud := sinkAudience(sb.Spec.Sink, sb.Namespace)
		if aud == "" {
			token = ""
			continue
		}
		p, err := s.files.Add(sb.Namespace+"."+sb.Name+".token", devoidc.ResourceSubject(sinkBindingGVK, sb.Namespace, sb.Name), aud)
		if err != nil {
			return nil, err
		}
		token = p
	}
	if token != "" {
		env = append(env, "KSAGA_SINK_TOKEN_FILE="+token)
	}
	return env, nil
}

// sinkAudience is the audience Knative resolves for a sink: its own, or a
// Broker's (Serving publishes none for a Knative Service).
func sinkAudience(d duckv1.Destination, namespace string) string {
	if d.Audience != nil {
		return *d.Audience
	}
	if r := d.Ref; r != nil && r.Kind == "Broker" && groupOf(r.APIVersion) == eventingv1.SchemeGroupVersion.Group {
		ns := r.Namespace
		if ns == "" {
			ns = namespace
		}
		return devoidc.BrokerAudience(ns, r.Name)
	}
	return ""
}

func groupOf(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}

// senderIdentityProblems are what would break a saga once sender identity
// is on, for a set with EventPolicies (without any, nothing changes: the
// default mode admits the namespace's senders):
//
//   - a Trigger, dead letter sink or PingSource delivering to a Knative
//     Service without spec.subscriber.audience / audience / spec.sink.audience
//     (no token is sent: the function answers 401), or with another
//     audience than the Service's;
//   - a Trigger or PingSource whose identity the receiving Service's
//     policies do not allow (403);
//   - a reply type the subscriber emits (ksaga.io/emits) that the Broker's
//     policies refuse from the Trigger (dead-lettered with 403);
//   - a type a SinkBinding's subject emits that the Broker's policies
//     refuse from the SinkBinding's identity (the function's send fails
//     with 403);
//   - a subject listed by two policies of one resource (Knative applies
//     the filters of the first, by name, only);
//   - a policy with filters that applies to a Knative Service (knfunc
//     checks subjects only).
func senderIdentityProblems(set *manifest.Set) manifest.Problems {
	if len(set.EventPolicies()) == 0 {
		return nil
	}
	var ps manifest.Problems
	add := func(v any, fld, format string, args ...any) {
		p := manifest.Problem{Field: fld, Message: fmt.Sprintf(format, args...), Severity: manifest.SeverityWarning, Code: manifest.CodeSenderIdentity}
		if o := set.ObjectOf(v); o != nil {
			p.Source, p.Object = o.Source, o.ID.String()
		}
		ps = append(ps, p)
	}
	policies, err := devoidc.NewPolicies(set.EventPolicies(), feature.AuthorizationAllowSameNamespace)
	if err != nil {
		return manifest.Problems{{Message: err.Error(), Severity: manifest.SeverityError, Code: manifest.CodeSenderIdentity}}
	}
	defer policies.Close()
	ctx := context.Background()
	emits := emitsByService(set)
	// destination checks a delivery by sender (its identity sub, in
	// namespace ns) to d, if d is a Knative Service.
	destination := func(sender any, kind, sub, ns string, d *duckv1.Destination, fld string) {
		if d == nil || d.Ref == nil || d.Ref.Kind != "Service" || groupOf(d.Ref.APIVersion) != serviceGVK.Group {
			return
		}
		if d.Ref.Namespace != "" {
			ns = d.Ref.Namespace
		}
		svc := set.Service(ns, d.Ref.Name)
		if svc == nil {
			return // a dangling reference, reported by manifest.Check
		}
		want := devoidc.ServiceAudience(ns, svc.Name)
		switch {
		case d.Audience == nil || *d.Audience == "":
			add(sender, fld+".audience", "no audience: with sender identity on, Knative sends no token to Service %s/%s, which then answers 401 (want %q)", ns, svc.Name, want)
		case *d.Audience != want:
			add(sender, fld+".audience", "audience %q: Service %s/%s accepts tokens for %q only", *d.Audience, ns, svc.Name, want)
		}
		allowed, _, err := policies.AllowedSubjects(serviceGVK, svc.ObjectMeta)
		if err == nil && allowed != nil && !matchesAny(sub, allowed) {
			add(sender, fld, "Service %s/%s does not allow the %s's identity %s (its EventPolicies allow: %s): deliveries get 403", ns, svc.Name, kind, sub, strings.Join(allowed, ", "))
		}
	}
	// sends checks that Broker b takes every type a Service emits from sub.
	sends := func(sender any, fld, what, consequence, sub string, svc types.NamespacedName, b *eventingv1.Broker) {
		for _, typ := range emits[svc] {
			ev := event.New()
			ev.SetID("validate")
			ev.SetSource("ksaga-validate")
			ev.SetType(typ)
			if err := policies.Authorize(ctx, brokerGVK, b.ObjectMeta, sub, &ev); err != nil {
				add(sender, fld, "%s of type %s from %s would be refused by Broker %s/%s (403, %s): %v", what, typ, svc.Name, b.Namespace, b.Name, consequence, err)
			}
		}
	}
	for _, t := range set.Triggers() {
		sub := devoidc.TriggerSubject(t.Namespace, t.Name)
		destination(t, "Trigger", sub, t.Namespace, &t.Spec.Subscriber, "spec.subscriber")
		b := set.Broker(t.Namespace, t.Spec.Broker)
		switch {
		case t.Spec.Delivery != nil && t.Spec.Delivery.DeadLetterSink != nil:
			destination(t, "Trigger", sub, t.Namespace, t.Spec.Delivery.DeadLetterSink, "spec.delivery.deadLetterSink")
		case b != nil && b.Spec.Delivery != nil && b.Spec.Delivery.DeadLetterSink != nil:
			destination(t, "Trigger", sub, t.Namespace, b.Spec.Delivery.DeadLetterSink, "spec.delivery.deadLetterSink (the Broker's)")
		}
		r := t.Spec.Subscriber.Ref
		if b == nil || r == nil || r.Kind != "Service" {
			continue
		}
		sends(t, "spec.subscriber", "a reply", "dead-lettered", sub, types.NamespacedName{Namespace: t.Namespace, Name: r.Name}, b)
	}
	for _, src := range set.PingSources() {
		destination(src, "PingSource", devoidc.ResourceSubject(pingSourceGVK, src.Namespace, src.Name), src.Namespace, &src.Spec.Sink, "spec.sink")
	}
	for _, svc := range set.Services() {
		for _, sb := range sinkBindingsFor(set, svc) {
			r := sb.Spec.Sink.Ref
			if r == nil || r.Kind != "Broker" || groupOf(r.APIVersion) != brokerGVK.Group {
				continue
			}
			ns := r.Namespace
			if ns == "" {
				ns = sb.Namespace
			}
			if b := set.Broker(ns, r.Name); b != nil {
				sends(sb, "spec.subject", "an event", "the send fails", devoidc.ResourceSubject(sinkBindingGVK, sb.Namespace, sb.Name),
					types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, b)
			}
		}
	}
	// Subjects listed twice for one resource, and filters on a Service.
	duplicates := func(v any, gvk schema.GroupVersionKind, meta metav1.ObjectMeta) {
		applying, err := policies.Applying(gvk, meta)
		if err != nil {
			return
		}
		first := map[string]string{}
		for _, ep := range applying {
			subs, err := devoidc.ResolveSubjects(ep)
			if err != nil {
				continue
			}
			for _, s := range subs {
				k := strings.ToLower(s)
				if p, dup := first[k]; dup && p != ep.Name {
					add(v, "", "subject %s is allowed by EventPolicies %s and %s: Knative judges it by the filters of %s only", s, p, ep.Name, p)
					continue
				}
				first[k] = ep.Name
			}
		}
	}
	for _, b := range set.Brokers() {
		duplicates(b, brokerGVK, b.ObjectMeta)
	}
	for _, svc := range set.Services() {
		duplicates(svc, serviceGVK, svc.ObjectMeta)
		_, filtered, err := policies.AllowedSubjects(serviceGVK, svc.ObjectMeta)
		if err == nil && len(filtered) > 0 {
			add(svc, "", "EventPolicies %s apply to this Knative Service with filters: knfunc checks the sender's subject only, not the filters", strings.Join(filtered, ", "))
		}
	}
	return ps
}

// matchesAny reports whether sub is allowed by patterns, as knfunc and
// Knative compare subjects.
func matchesAny(sub string, patterns []string) bool {
	for _, p := range patterns {
		if strings.EqualFold(p, sub) || (strings.HasSuffix(p, "*") && strings.HasPrefix(sub, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// emitsByService maps each Knative Service to its ksaga.io/emits types.
func emitsByService(set *manifest.Set) map[types.NamespacedName][]string {
	out := map[types.NamespacedName][]string{}
	for _, svc := range set.Services() {
		for t := range strings.SplitSeq(svc.Annotations[EmitsAnnotation], ",") {
			if t = strings.TrimSpace(t); t != "" {
				nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
				out[nn] = append(out[nn], t)
			}
		}
	}
	return out
}
