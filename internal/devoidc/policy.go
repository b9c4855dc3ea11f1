package devoidc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	"knative.dev/eventing/pkg/apis/feature"
	"knative.dev/eventing/pkg/auth"
	listers "knative.dev/eventing/pkg/client/listers/eventing/v1alpha1"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/pkg/logging"

	"github.com/ksaga/ksaga/internal/devbroker"
)

// Policies are EventPolicies evaluated as Knative's receivers do: the
// policies that apply to a resource are found with pkg/auth's
// GetEventPoliciesForResource, a sender passes when SubjectAndFiltersPass
// (its subject is one a policy allows, and the event passes that policy's
// filters); when none applies, the default authorization mode decides
// (Knative's default: allow-same-namespace).
//
// One behaviour of Knative's helper is kept on purpose: a subject is judged
// by the filters of the first applying policy (by name) that lists it, not
// by any of them. `ksaga validate` warns when a subject is listed by two
// policies of one resource.
//
// SubjectAndFiltersPass parses a policy's filters on every call (a CESQL
// expression costs about 0.1 ms); Authorize runs the same loop with each
// policy's filters built once, the way the dev broker builds a Trigger's
// (Knative's filters, devbroker.SubscriptionsAPIFilter: Knative's all and
// any race under concurrent use), and the applying policies of each
// resource looked up once. TestAuthorizeIsKnatives compares the two.
type Policies struct {
	lister   listers.EventPolicyLister
	subjects map[string][]string           // policy namespace/name → its resolved from
	filters  map[string]eventfilter.Filter // policy namespace/name → its spec.filters, built once
	mode     feature.Flag
	ctx      context.Context // for Filter calls: a no-op logger
	applying sync.Map        // resource key → []*v1alpha1.EventPolicy (the set never changes)
}

// NewPolicies indexes policies (defaulted and validated, as the webhook
// leaves them) with the default authorization mode mode (a
// feature.Authorization* flag; empty: allow-same-namespace).
func NewPolicies(policies []*v1alpha1.EventPolicy, mode feature.Flag) (*Policies, error) {
	if mode == "" {
		mode = feature.AuthorizationAllowSameNamespace
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nop := zap.NewNop()
	p := &Policies{lister: listers.NewEventPolicyLister(idx), subjects: make(map[string][]string, len(policies)),
		filters: make(map[string]eventfilter.Filter, len(policies)), mode: mode,
		ctx: logging.WithLogger(context.Background(), nop.Sugar())}
	for _, ep := range policies {
		if err := idx.Add(ep); err != nil {
			return nil, fmt.Errorf("devoidc: EventPolicy %s/%s: %w", ep.Namespace, ep.Name, err)
		}
		subs, err := ResolveSubjects(ep)
		if err != nil {
			return nil, err
		}
		k := ep.Namespace + "/" + ep.Name
		p.subjects[k] = subs
		p.filters[k] = devbroker.SubscriptionsAPIFilter(nop, slog.New(slog.DiscardHandler), "EventPolicy "+k, ep.Spec.Filters)
	}
	return p, nil
}

// Close releases the policies' filters.
func (p *Policies) Close() {
	for _, f := range p.filters {
		f.Cleanup()
	}
}

// ResolveSubjects returns the subjects an EventPolicy's spec.from allows,
// as Knative's EventPolicy reconciler writes them into status.from: a sub
// as written, a ref as the OIDC identity Knative gives that resource.
func ResolveSubjects(ep *v1alpha1.EventPolicy) ([]string, error) {
	var out []string
	for i, f := range ep.Spec.From {
		switch {
		case f.Sub != nil:
			out = append(out, *f.Sub)
		case f.Ref != nil:
			gv, err := schema.ParseGroupVersion(f.Ref.APIVersion)
			if err != nil {
				return nil, fmt.Errorf("devoidc: EventPolicy %s/%s: spec.from[%d].ref.apiVersion: %w", ep.Namespace, ep.Name, i, err)
			}
			ns := f.Ref.Namespace
			if ns == "" {
				ns = ep.Namespace
			}
			out = append(out, ResourceSubject(gv.WithKind(f.Ref.Kind), ns, f.Ref.Name))
		}
	}
	return out, nil
}

// Applying returns the policies that apply to a resource, sorted by name
// (remembered per resource: the set of objects is fixed).
func (p *Policies) Applying(gvk schema.GroupVersionKind, meta metav1.ObjectMeta) ([]*v1alpha1.EventPolicy, error) {
	key := gvk.String() + "|" + meta.Namespace + "|" + meta.Name
	if v, ok := p.applying.Load(key); ok {
		return v.([]*v1alpha1.EventPolicy), nil
	}
	eps, err := auth.GetEventPoliciesForResource(p.lister, gvk, meta)
	if err != nil {
		return nil, err
	}
	p.applying.Store(key, eps)
	return eps, nil
}

// passes is auth.SubjectAndFiltersPass with the filters built once: the
// first applying policy that lists the subject (equal ignoring case, or a
// prefix ending in *) decides by its filters.
func (p *Policies) passes(subject string, applying []*v1alpha1.EventPolicy, ev *event.Event) bool {
	for _, ep := range applying {
		k := ep.Namespace + "/" + ep.Name
		for _, s := range p.subjects[k] {
			if strings.EqualFold(s, subject) || (strings.HasSuffix(s, "*") && strings.HasPrefix(subject, strings.TrimSuffix(s, "*"))) {
				return p.filters[k].Filter(p.ctx, *ev) != eventfilter.FailFilter
			}
		}
	}
	return false
}

// Authorize decides whether subject may send ev to the resource: nil, or
// an error saying why not (403). (The filters log nowhere; ctx is the
// request's, for symmetry with Knative's verifier.)
func (p *Policies) Authorize(_ context.Context, gvk schema.GroupVersionKind, meta metav1.ObjectMeta, subject string, ev *event.Event) error {
	if ev == nil {
		return errors.New("no event to authorize")
	}
	applying, err := p.Applying(gvk, meta)
	if err != nil {
		return err
	}
	if len(applying) > 0 {
		if p.passes(subject, applying, ev) {
			return nil
		}
		names := make([]string, len(applying))
		for i, ep := range applying {
			names[i] = ep.Name
		}
		return fmt.Errorf("%s may not send %s here: no EventPolicy allows it (applying: %s)", subject, ev.Type(), strings.Join(names, ", "))
	}
	switch {
	case p.mode == feature.AuthorizationDenyAll:
		return fmt.Errorf("%s may not send here: no EventPolicy applies and the default authorization mode is deny-all", subject)
	case p.mode == feature.AuthorizationAllowSameNamespace && !strings.HasPrefix(subject, serviceAccountPrefix+meta.Namespace+":"):
		return fmt.Errorf("%s may not send here: no EventPolicy applies and only subjects of namespace %s are allowed (allow-same-namespace)", subject, meta.Namespace)
	}
	return nil
}

// AllowedSubjects returns what a receiver that checks subjects only (a
// function with knfunc's KSAGA_OIDC_SUBJECTS) should allow: the subjects of
// the policies that apply to it, or, when none applies, what the default
// mode allows (allow-same-namespace: every subject of its namespace;
// allow-all: nil, meaning anyone). It also returns the names of the
// applying policies that have filters, which such a receiver cannot apply.
func (p *Policies) AllowedSubjects(gvk schema.GroupVersionKind, meta metav1.ObjectMeta) (subjects, unenforcedFilters []string, err error) {
	applying, err := p.Applying(gvk, meta)
	if err != nil {
		return nil, nil, err
	}
	if len(applying) == 0 {
		switch p.mode {
		case feature.AuthorizationAllowAll:
			return nil, nil, nil
		case feature.AuthorizationDenyAll:
			return []string{"<deny-all: no EventPolicy applies>"}, nil, nil
		}
		return []string{serviceAccountPrefix + meta.Namespace + ":*"}, nil, nil
	}
	for _, ep := range applying {
		for _, s := range p.subjects[ep.Namespace+"/"+ep.Name] {
			if !slices.Contains(subjects, s) {
				subjects = append(subjects, s)
			}
		}
		if len(ep.Spec.Filters) > 0 {
			unenforcedFilters = append(unenforcedFilters, ep.Name)
		}
	}
	return subjects, unenforcedFilters, nil
}
