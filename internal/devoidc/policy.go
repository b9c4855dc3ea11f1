package devoidc

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	"knative.dev/eventing/pkg/apis/feature"
	"knative.dev/eventing/pkg/auth"
	listers "knative.dev/eventing/pkg/client/listers/eventing/v1alpha1"
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
type Policies struct {
	lister   listers.EventPolicyLister
	subjects map[string][]string // policy namespace/name → its resolved from
	mode     feature.Flag
	logger   *zap.SugaredLogger
}

// NewPolicies indexes policies (defaulted and validated, as the webhook
// leaves them) with the default authorization mode mode (a
// feature.Authorization* flag; empty: allow-same-namespace).
func NewPolicies(policies []*v1alpha1.EventPolicy, mode feature.Flag) (*Policies, error) {
	if mode == "" {
		mode = feature.AuthorizationAllowSameNamespace
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	p := &Policies{lister: listers.NewEventPolicyLister(idx), subjects: make(map[string][]string, len(policies)),
		mode: mode, logger: zap.NewNop().Sugar()}
	for _, ep := range policies {
		if err := idx.Add(ep); err != nil {
			return nil, fmt.Errorf("devoidc: EventPolicy %s/%s: %w", ep.Namespace, ep.Name, err)
		}
		subs, err := ResolveSubjects(ep)
		if err != nil {
			return nil, err
		}
		p.subjects[ep.Namespace+"/"+ep.Name] = subs
	}
	return p, nil
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

// Applying returns the policies that apply to a resource, sorted by name.
func (p *Policies) Applying(gvk schema.GroupVersionKind, meta metav1.ObjectMeta) ([]*v1alpha1.EventPolicy, error) {
	return auth.GetEventPoliciesForResource(p.lister, gvk, meta)
}

// Authorize decides whether subject may send ev to the resource: nil, or
// an error saying why not (403).
func (p *Policies) Authorize(ctx context.Context, gvk schema.GroupVersionKind, meta metav1.ObjectMeta, subject string, ev *event.Event) error {
	applying, err := p.Applying(gvk, meta)
	if err != nil {
		return err
	}
	if len(applying) > 0 {
		swf := make([]auth.SubjectsWithFilters, 0, len(applying))
		var names []string
		for _, ep := range applying {
			swf = append(swf, auth.SubjectsWithFilters{Subjects: p.subjects[ep.Namespace+"/"+ep.Name], Filters: ep.Spec.Filters})
			names = append(names, ep.Name)
		}
		if auth.SubjectAndFiltersPass(ctx, subject, swf, ev, p.logger) {
			return nil
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
