package manifest

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingv1alpha1 "knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// CheckOptions configures Check.
type CheckOptions struct {
	// EmittedTypes is the set of CloudEvent types the project's functions
	// emit. When it is not nil, Check warns about every Trigger that filters
	// on an exact type not in the set (such a Trigger never fires).
	EmittedTypes map[string]bool
}

// Check runs the cross-object checks of `ksaga validate` on a loaded Set:
//
//   - a Trigger's broker (spec.broker or spec.brokerRef) is a Broker of the set;
//   - references (Trigger subscriber and deadLetterSink, Broker
//     deadLetterSink, SinkBinding sink and subject, PingSource sink) to a kind this package
//     loads (a Knative Service, a Broker, ...) name an object of the set;
//   - the ConfigMaps and Secrets a Knative Service uses (env valueFrom,
//     envFrom, volumes) exist and hold the keys used, unless optional;
//   - every container image of a Knative Service is ko://<import path>, or
//     the Service is not runnable by `ksaga dev` (a warning, CodeNotLocal);
//   - an EventPolicy's spec.to and spec.from references name objects of
//     the set (for kinds this package loads), and a spec.to selector
//     matches one (a warning);
//   - a Trigger that sets both spec.filters and spec.filter.attributes
//     (the latter is then ignored; a warning);
//   - with opts.EmittedTypes, exact type filters nobody emits (a warning).
//
// Problems come in the order of the objects in the set.
func Check(set *Set, opts CheckOptions) Problems {
	if set == nil {
		return nil
	}
	c := checker{set: set, opts: opts}
	for _, o := range set.Objects {
		c.obj = o
		switch v := o.Value.(type) {
		case *eventingv1.Trigger:
			c.trigger(v)
		case *eventingv1.Broker:
			if v.Spec.Delivery != nil && v.Spec.Delivery.DeadLetterSink != nil {
				c.ref(v.Spec.Delivery.DeadLetterSink.Ref, "spec.delivery.deadLetterSink.ref")
			}
		case *sourcesv1.SinkBinding:
			c.sinkBinding(v)
		case *sourcesv1.PingSource:
			c.ref(v.Spec.Sink.Ref, "spec.sink.ref")
		case *eventingv1alpha1.EventPolicy:
			c.eventPolicy(v)
		case *servingv1.Service:
			c.service(v)
		}
	}
	return c.problems
}

type checker struct {
	set      *Set
	opts     CheckOptions
	obj      *Object // the object being checked
	problems Problems
}

func (c *checker) add(sev Severity, code Code, fld, format string, args ...any) {
	c.problems = append(c.problems, Problem{
		Source:   c.obj.Source,
		Object:   c.obj.ID.String(),
		Field:    fld,
		Message:  fmt.Sprintf(format, args...),
		Severity: sev,
		Code:     code,
	})
}

func (c *checker) trigger(t *eventingv1.Trigger) {
	switch {
	case t.Spec.BrokerRef != nil:
		ns := t.Spec.BrokerRef.Namespace
		if ns == "" {
			ns = t.Namespace
		}
		if c.set.Broker(ns, t.Spec.BrokerRef.Name) == nil {
			c.add(SeverityError, CodeReference, "spec.brokerRef", "Broker %s/%s is not defined in the loaded manifests", ns, t.Spec.BrokerRef.Name)
		}
	case t.Spec.Broker != "":
		if c.set.Broker(t.Namespace, t.Spec.Broker) == nil {
			c.add(SeverityError, CodeReference, "spec.broker", "Broker %s/%s is not defined in the loaded manifests", t.Namespace, t.Spec.Broker)
		}
	}
	c.ref(t.Spec.Subscriber.Ref, "spec.subscriber.ref")
	if t.Spec.Delivery != nil && t.Spec.Delivery.DeadLetterSink != nil {
		c.ref(t.Spec.Delivery.DeadLetterSink.Ref, "spec.delivery.deadLetterSink.ref")
	}

	if len(t.Spec.Filters) > 0 && t.Spec.Filter != nil && len(t.Spec.Filter.Attributes) > 0 {
		c.add(SeverityWarning, CodeIgnoredField, "spec.filter",
			"spec.filter is ignored because spec.filters is set (the broker uses only spec.filters)")
	}
	if c.opts.EmittedTypes == nil {
		return
	}
	for _, ft := range filteredTypes(t) {
		if !c.opts.EmittedTypes[ft.typ] {
			c.add(SeverityWarning, CodeUnemittedType, ft.field,
				"the Trigger filters on event type %q, which no function emits: it never fires", ft.typ)
		}
	}
}

type filteredType struct{ field, typ string }

// filteredTypes returns the event types a Trigger requires exactly: the
// legacy spec.filter.attributes.type (unless spec.filters is set, which
// wins), or spec.filters[].exact.type, including inside nested `all`
// (an `any` or `not` does not require its types).
func filteredTypes(t *eventingv1.Trigger) []filteredType {
	var out []filteredType
	if len(t.Spec.Filters) == 0 {
		if t.Spec.Filter != nil && t.Spec.Filter.Attributes["type"] != "" {
			out = append(out, filteredType{"spec.filter.attributes[type]", t.Spec.Filter.Attributes["type"]})
		}
		return out
	}
	var walk func(fs []eventingv1.SubscriptionsAPIFilter, path string)
	walk = func(fs []eventingv1.SubscriptionsAPIFilter, path string) {
		for i, f := range fs {
			p := fmt.Sprintf("%s[%d]", path, i)
			if typ := f.Exact["type"]; typ != "" {
				out = append(out, filteredType{p + ".exact[type]", typ})
			}
			walk(f.All, p+".all")
		}
	}
	walk(t.Spec.Filters, "spec.filters")
	return out
}

// ref checks that a reference to a kind this package loads names an object
// of the set. References to other kinds (a KafkaSink, a Channel) cannot be
// checked and are skipped.
func (c *checker) ref(r *duckv1.KReference, fld string) {
	if r == nil {
		return
	}
	group := r.Group
	if r.APIVersion != "" {
		group = ID{APIVersion: r.APIVersion}.Group()
	}
	ns := r.Namespace
	if ns == "" {
		ns = c.obj.Namespace
	}
	c.exists(group, r.Kind, ns, r.Name, fld)
}

// exists reports a reference to a loadable kind that is not in the set.
func (c *checker) exists(group, kind, ns, name, fld string) {
	if !loadable(group, kind) || c.set.Find(group, kind, ns, name) != nil {
		return
	}
	want := ID{APIVersion: group + "/v1", Kind: kind, Namespace: ns, Name: name}
	if group == "" {
		want.APIVersion = "v1"
	}
	c.add(SeverityError, CodeReference, fld, "%s is not defined in the loaded manifests", want)
}

// loadable reports whether group/kind is a kind Load decodes (and so a
// reference to it can be resolved within the set).
func loadable(group, kind string) bool {
	for _, v := range []string{"v1", "v1beta1"} {
		av := group + "/" + v
		if group == "" {
			av = v
		}
		if _, ok := lookupKind(av, kind); ok {
			return true
		}
	}
	return false
}

func (c *checker) sinkBinding(sb *sourcesv1.SinkBinding) {
	c.ref(sb.Spec.Sink.Ref, "spec.sink.ref")

	s := sb.Spec.Subject
	group := ID{APIVersion: s.APIVersion}.Group()
	ns := s.Namespace
	if ns == "" {
		ns = sb.Namespace
	}
	if s.Name != "" {
		c.exists(group, s.Kind, ns, s.Name, "spec.subject")
		return
	}
	if s.Selector == nil || !loadable(group, s.Kind) {
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(s.Selector)
	if err != nil {
		return // the webhook already rejected it
	}
	for _, o := range c.set.Objects {
		if o.Group() != group || o.Kind != s.Kind || o.Namespace != ns {
			continue
		}
		if m, ok := o.Value.(metav1.Object); ok && sel.Matches(labels.Set(m.GetLabels())) {
			return
		}
	}
	c.add(SeverityWarning, CodeReference, "spec.subject.selector", "the selector %q matches no %s in namespace %s of the loaded manifests", sel.String(), s.Kind, ns)
}

func (c *checker) service(svc *servingv1.Service) {
	spec := &svc.Spec.Template.Spec
	for i := range spec.Containers {
		ct := &spec.Containers[i]
		p := fmt.Sprintf("spec.template.spec.containers[%d]", i)
		c.containerRefs(ct, p)
		if _, ok := KoImportPath(ct.Image); !ok {
			c.add(SeverityWarning, CodeNotLocal, p+".image",
				"not runnable locally: image %q is not ko://<import path>, so `ksaga dev` cannot build and run it", ct.Image)
		}
	}
	for i := range spec.InitContainers {
		c.containerRefs(&spec.InitContainers[i], fmt.Sprintf("spec.template.spec.initContainers[%d]", i))
	}
	for i, v := range spec.Volumes {
		p := fmt.Sprintf("spec.template.spec.volumes[%d]", i)
		if cm := v.ConfigMap; cm != nil {
			c.keys(false, cm.Name, cm.Optional, cm.Items, p+".configMap", "name")
		}
		if s := v.Secret; s != nil {
			c.keys(true, s.SecretName, s.Optional, s.Items, p+".secret", "secretName")
		}
		if pr := v.Projected; pr != nil {
			for j, src := range pr.Sources {
				sp := fmt.Sprintf("%s.projected.sources[%d]", p, j)
				if cm := src.ConfigMap; cm != nil {
					c.keys(false, cm.Name, cm.Optional, cm.Items, sp+".configMap", "name")
				}
				if s := src.Secret; s != nil {
					c.keys(true, s.Name, s.Optional, s.Items, sp+".secret", "name")
				}
			}
		}
	}
}

// containerRefs checks env[].valueFrom and envFrom[] of one container.
func (c *checker) containerRefs(ct *corev1.Container, p string) {
	for i, e := range ct.Env {
		if e.ValueFrom == nil {
			continue
		}
		ep := fmt.Sprintf("%s.env[%d].valueFrom", p, i)
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			c.keyRef(false, r.Name, r.Key, r.Optional, ep+".configMapKeyRef.name", ep+".configMapKeyRef.key")
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			c.keyRef(true, r.Name, r.Key, r.Optional, ep+".secretKeyRef.name", ep+".secretKeyRef.key")
		}
	}
	for i, e := range ct.EnvFrom {
		ep := fmt.Sprintf("%s.envFrom[%d]", p, i)
		if r := e.ConfigMapRef; r != nil {
			c.keyRef(false, r.Name, "", r.Optional, ep+".configMapRef.name", "")
		}
		if r := e.SecretRef; r != nil {
			c.keyRef(true, r.Name, "", r.Optional, ep+".secretRef.name", "")
		}
	}
}

// keys checks a ConfigMap or Secret volume (nameField is the field holding
// its name) and the keys of its items.
func (c *checker) keys(secret bool, name string, optional *bool, items []corev1.KeyToPath, p, nameField string) {
	if !c.keyRef(secret, name, "", optional, p+"."+nameField, "") {
		return
	}
	for i, it := range items {
		c.keyRef(secret, name, it.Key, optional, "", fmt.Sprintf("%s.items[%d].key", p, i))
	}
}

// keyRef checks, unless optional, that the ConfigMap or Secret exists
// (reported at namePath) and, if key is not empty, holds key (reported at
// keyPath). It reports whether the object was found.
func (c *checker) keyRef(secret bool, name, key string, optional *bool, namePath, keyPath string) bool {
	if optional != nil && *optional {
		return false
	}
	ns := c.obj.Namespace
	kind, keys, found := "ConfigMap", map[string]bool{}, false
	if secret {
		kind = "Secret"
		if s := c.set.Secret(ns, name); s != nil {
			found = true
			for k := range s.Data {
				keys[k] = true
			}
		}
	} else if cm := c.set.ConfigMap(ns, name); cm != nil {
		found = true
		for k := range cm.Data {
			keys[k] = true
		}
		for k := range cm.BinaryData {
			keys[k] = true
		}
	}
	if !found {
		c.add(SeverityError, CodeReference, namePath, "%s %s/%s is not defined in the loaded manifests", kind, ns, name)
		return false
	}
	if key == "" || keys[key] {
		return true
	}
	have := make([]string, 0, len(keys))
	for k := range keys {
		have = append(have, k)
	}
	sort.Strings(have)
	c.add(SeverityError, CodeReference, keyPath, "%s %s/%s has no key %q (it has: %s)", kind, ns, name, key, strings.Join(have, ", "))
	return true
}

// eventPolicy checks the references of an EventPolicy: the resources it
// protects (spec.to) and the senders it names (spec.from[].ref). A sender
// that does not exist gets no identity in a cluster: Knative then leaves
// the policy not ready, and the resource falls back to the default
// authorization mode.
func (c *checker) eventPolicy(ep *eventingv1alpha1.EventPolicy) {
	for i, to := range ep.Spec.To {
		p := fmt.Sprintf("spec.to[%d]", i)
		if r := to.Ref; r != nil {
			c.exists(ID{APIVersion: r.APIVersion}.Group(), r.Kind, ep.Namespace, r.Name, p+".ref")
		}
		if s := to.Selector; s != nil && s.TypeMeta != nil && s.LabelSelector != nil {
			group := ID{APIVersion: s.APIVersion}.Group()
			if !loadable(group, s.Kind) {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(s.LabelSelector)
			if err != nil {
				continue // the webhook's concern
			}
			found := false
			for _, o := range c.set.Objects {
				if m, ok := o.Value.(metav1.Object); ok && o.Group() == group && o.Kind == s.Kind && o.Namespace == ep.Namespace && sel.Matches(labels.Set(m.GetLabels())) {
					found = true
					break
				}
			}
			if !found {
				c.add(SeverityWarning, CodeReference, p+".selector", "the selector %q matches no %s in namespace %s of the loaded manifests", sel.String(), s.Kind, ep.Namespace)
			}
		}
	}
	for i, f := range ep.Spec.From {
		if r := f.Ref; r != nil {
			ns := r.Namespace
			if ns == "" {
				ns = ep.Namespace
			}
			c.exists(ID{APIVersion: r.APIVersion}.Group(), r.Kind, ns, r.Name, fmt.Sprintf("spec.from[%d].ref", i))
		}
	}
}
