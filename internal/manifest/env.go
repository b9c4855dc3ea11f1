package manifest

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// EnvVar is one resolved environment variable.
type EnvVar struct {
	Name  string
	Value string
}

// ResolveEnv computes the environment the kubelet would give the serving
// container (see ServingContainer) of a Knative Service, using the
// ConfigMaps and Secrets of the set:
//
//   - envFrom first, in order (configMapRef / secretRef, with prefix; a later
//     source overrides an earlier one), then env, overriding;
//   - env[].value with $(VAR) expanded against the variables defined before
//     it, as Kubernetes does ($$ is a literal $, an undefined $(VAR) stays);
//   - env[].valueFrom: configMapKeyRef, secretKeyRef (the Secret's data,
//     with stringData merged in) and fieldRef metadata.namespace.
//
// The variables come out in the order they were first defined. Knative's own
// variables (PORT, K_SERVICE, K_REVISION, K_CONFIGURATION) and a SinkBinding's
// K_SINK are not included; the runtime adds them. A missing reference that is
// not optional is an error naming the Service and the reference; every such
// reference is reported, joined.
func ResolveEnv(set *Set, svc *servingv1.Service) ([]EnvVar, error) {
	if svc == nil {
		return nil, errors.New("manifest: ResolveEnv: nil Service")
	}
	id := ID{APIVersion: servingv1.SchemeGroupVersion.String(), Kind: "Service", Namespace: svc.Namespace, Name: svc.Name}
	c := ServingContainer(svc)
	if c == nil {
		return nil, fmt.Errorf("manifest: %s: no container", id)
	}
	if set == nil {
		set = &Set{}
	}
	r := resolver{set: set, ns: svc.Namespace, vals: make(map[string]string)}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("manifest: %s: "+format, append([]any{id}, args...)...))
	}

	for i, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := set.ConfigMap(svc.Namespace, ef.ConfigMapRef.Name)
			if cm == nil {
				if !isTrue(ef.ConfigMapRef.Optional) {
					fail("envFrom[%d].configMapRef: ConfigMap %s/%s not found", i, svc.Namespace, ef.ConfigMapRef.Name)
				}
				continue
			}
			for _, k := range sortedKeys(cm.Data) {
				r.define(ef.Prefix+k, cm.Data[k])
			}
		case ef.SecretRef != nil:
			s := set.Secret(svc.Namespace, ef.SecretRef.Name)
			if s == nil {
				if !isTrue(ef.SecretRef.Optional) {
					fail("envFrom[%d].secretRef: Secret %s/%s not found", i, svc.Namespace, ef.SecretRef.Name)
				}
				continue
			}
			for _, k := range sortedKeys(secretData(s)) {
				r.define(ef.Prefix+k, secretData(s)[k])
			}
		}
	}

	for _, e := range c.Env {
		if e.ValueFrom == nil {
			r.define(e.Name, expand(e.Value, r.lookup))
			continue
		}
		v, ok, err := r.valueFrom(e)
		if err != nil {
			fail("env %s: %w", e.Name, err)
			continue
		}
		if ok {
			r.define(e.Name, v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]EnvVar, len(r.order))
	for i, n := range r.order {
		out[i] = EnvVar{Name: n, Value: r.vals[n]}
	}
	return out, nil
}

type resolver struct {
	set   *Set
	ns    string
	vals  map[string]string
	order []string
}

func (r *resolver) define(name, value string) {
	// Like the kubelet, skip names that cannot be environment variables.
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return
	}
	if _, ok := r.vals[name]; !ok {
		r.order = append(r.order, name)
	}
	r.vals[name] = value
}

func (r *resolver) lookup(name string) (string, bool) {
	v, ok := r.vals[name]
	return v, ok
}

// valueFrom resolves env[].valueFrom. ok is false for an optional reference
// that does not resolve (the variable is then not set).
func (r *resolver) valueFrom(e corev1.EnvVar) (string, bool, error) {
	vf := e.ValueFrom
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm := r.set.ConfigMap(r.ns, ref.Name)
		if cm == nil {
			if isTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configMapKeyRef: ConfigMap %s/%s not found", r.ns, ref.Name)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if isTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configMapKeyRef: ConfigMap %s/%s has no key %q", r.ns, ref.Name, ref.Key)
		}
		return v, true, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s := r.set.Secret(r.ns, ref.Name)
		if s == nil {
			if isTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secretKeyRef: Secret %s/%s not found", r.ns, ref.Name)
		}
		v, ok := secretData(s)[ref.Key]
		if !ok {
			if isTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secretKeyRef: Secret %s/%s has no key %q", r.ns, ref.Name, ref.Key)
		}
		return v, true, nil
	case vf.FieldRef != nil:
		if vf.FieldRef.FieldPath == "metadata.namespace" {
			return r.ns, true, nil
		}
		return "", false, fmt.Errorf("fieldRef %q: only metadata.namespace can be resolved outside a cluster", vf.FieldRef.FieldPath)
	case vf.ResourceFieldRef != nil:
		return "", false, fmt.Errorf("resourceFieldRef %q cannot be resolved outside a cluster", vf.ResourceFieldRef.Resource)
	}
	return "", false, errors.New("valueFrom: no source set")
}

// secretData returns the Secret's values as strings, with stringData
// merged over data (Load already merges; this also handles Secrets built
// by hand).
func secretData(s *corev1.Secret) map[string]string {
	m := make(map[string]string, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		m[k] = string(v)
	}
	for k, v := range s.StringData {
		m[k] = v
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isTrue(b *bool) bool { return b != nil && *b }

// expand replaces $(VAR) in s the way Kubernetes expands container env
// values (k8s.io/kubernetes third_party/forked/golang/expansion): "$$" is a
// literal "$", a "$(VAR)" with VAR unknown and an unterminated "$(" are left
// as they are, and any other "$" is kept.
func expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	checkpoint := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			continue
		}
		b.WriteString(s[checkpoint:i])
		rest := s[i+1:]
		advance := 1
		switch rest[0] {
		case '$':
			b.WriteByte('$')
		case '(':
			if end := strings.IndexByte(rest, ')'); end > 0 {
				name := rest[1:end]
				if v, ok := lookup(name); ok {
					b.WriteString(v)
				} else {
					b.WriteString("$(" + name + ")")
				}
				advance = end + 1
			} else {
				b.WriteString("$(")
			}
		default:
			b.WriteByte('$')
			b.WriteByte(rest[0])
		}
		i += advance
		checkpoint = i + 1
	}
	b.WriteString(s[checkpoint:])
	return b.String()
}
