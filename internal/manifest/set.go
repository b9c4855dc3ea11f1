package manifest

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingv1alpha1 "knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// Source locates a YAML document.
type Source struct {
	File  string // the file, as given to Load or found under a folder given to Load
	Index int    // 0-based index of the document in the file (documents are separated by "---")
	Line  int    // 1-based line of the file: where the document's content starts or, in a Problem, the line it is about
}

// String returns "file:line".
func (s Source) String() string {
	if s.Line > 0 {
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
	return s.File
}

// ID names an object the way the API server does.
type ID struct {
	APIVersion string // e.g. "eventing.knative.dev/v1"
	Kind       string // e.g. "Trigger"
	Namespace  string // empty for cluster-scoped objects
	Name       string
}

// Group returns the API group of APIVersion ("" for the core group).
func (id ID) Group() string {
	if i := strings.LastIndex(id.APIVersion, "/"); i >= 0 {
		return id.APIVersion[:i]
	}
	return ""
}

// String returns "Kind namespace/name". A Knative Service is written
// "Service.serving.knative.dev namespace/name" so that it cannot be mistaken
// for a core Service.
func (id ID) String() string {
	kind := id.Kind
	if kind == "" {
		kind = "<no kind>"
	}
	if kind == "Service" && id.Group() != "" {
		kind += "." + id.Group()
	}
	name := id.Name
	if name == "" {
		name = "<no name>"
	}
	if id.Namespace != "" {
		name = id.Namespace + "/" + name
	}
	return kind + " " + name
}

// key identifies an object across API versions: group, kind, namespace, name.
func (id ID) key() string {
	return id.Group() + "|" + id.Kind + "|" + id.Namespace + "|" + id.Name
}

// Object is one decoded document.
//
// Value holds the decoded object after the admission webhook's defaulting:
//
//	eventing.knative.dev/v1 Broker           *eventingv1.Broker
//	eventing.knative.dev/v1 Trigger          *eventingv1.Trigger
//	serving.knative.dev/v1 Service           *servingv1.Service
//	sources.knative.dev/v1 SinkBinding       *sourcesv1.SinkBinding
//	sources.knative.dev/v1 PingSource        *sourcesv1.PingSource

//	eventing.knative.dev/v1alpha1 EventPolicy *eventingv1alpha1.EventPolicy
//	v1 ConfigMap, Secret, Namespace, Service *corev1.ConfigMap, ...
//	apps/v1 Deployment, StatefulSet          *appsv1.Deployment, ...
//	monitoring.coreos.com/v1 PrometheusRule  *unstructured.Unstructured
//	kustomize.config.k8s.io/v1beta1 Kustomization *unstructured.Unstructured
//
// For objects in Set.Skipped, Value is an *unstructured.Unstructured.
// A Secret's stringData is merged into data, as the API server does on write.
type Object struct {
	Source
	ID
	Value any
}

// Set is the result of Load: every document of the loaded files, in apply
// order (files in lexical order, documents in file order).
type Set struct {
	// Objects holds the objects of the kinds this package knows, including
	// objects that failed validation (so that Check does not report
	// references to them as dangling).
	Objects []*Object
	// Skipped holds the objects of the kinds Load skips on purpose
	// (SkippedKinds), undecoded, so callers can list them. An object of any
	// other kind is an error (CodeUnknownKind) and is in neither list.
	Skipped []*Object
	// Problems holds everything Load found, errors and warnings.
	Problems Problems
}

// Find returns the object with the given API group, kind, namespace and name
// (the API version is ignored, as the API server does), or nil.
func (s *Set) Find(group, kind, namespace, name string) *Object {
	for _, o := range s.Objects {
		if o.Group() == group && o.Kind == kind && o.Namespace == namespace && o.Name == name {
			return o
		}
	}
	return nil
}

// ObjectOf returns the Object whose Value is v (the same pointer), or nil.
// Use it to find the Source of a typed object returned by Brokers, Triggers, ...
func (s *Set) ObjectOf(v any) *Object {
	for _, o := range s.Objects {
		if o.Value == v {
			return o
		}
	}
	return nil
}

// Brokers returns the Brokers in apply order.
func (s *Set) Brokers() []*eventingv1.Broker { return valuesOf[*eventingv1.Broker](s) }

// Triggers returns the Triggers in apply order.
func (s *Set) Triggers() []*eventingv1.Trigger { return valuesOf[*eventingv1.Trigger](s) }

// Services returns the Knative Services in apply order.
func (s *Set) Services() []*servingv1.Service { return valuesOf[*servingv1.Service](s) }

// SinkBindings returns the SinkBindings in apply order.
func (s *Set) SinkBindings() []*sourcesv1.SinkBinding { return valuesOf[*sourcesv1.SinkBinding](s) }

// PingSources returns the PingSources in apply order.
func (s *Set) PingSources() []*sourcesv1.PingSource { return valuesOf[*sourcesv1.PingSource](s) }

// EventPolicies returns the EventPolicies in apply order.
func (s *Set) EventPolicies() []*eventingv1alpha1.EventPolicy {
	return valuesOf[*eventingv1alpha1.EventPolicy](s)
}

// ConfigMap returns the named ConfigMap, or nil.
func (s *Set) ConfigMap(namespace, name string) *corev1.ConfigMap {
	return valueOf[*corev1.ConfigMap](s.Find("", "ConfigMap", namespace, name))
}

// Secret returns the named Secret, or nil.
func (s *Set) Secret(namespace, name string) *corev1.Secret {
	return valueOf[*corev1.Secret](s.Find("", "Secret", namespace, name))
}

// Broker returns the named Broker, or nil.
func (s *Set) Broker(namespace, name string) *eventingv1.Broker {
	return valueOf[*eventingv1.Broker](s.Find(eventingv1.SchemeGroupVersion.Group, "Broker", namespace, name))
}

// Service returns the named Knative Service, or nil.
func (s *Set) Service(namespace, name string) *servingv1.Service {
	return valueOf[*servingv1.Service](s.Find(servingv1.SchemeGroupVersion.Group, "Service", namespace, name))
}

func valuesOf[T any](s *Set) []T {
	var out []T
	for _, o := range s.Objects {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func valueOf[T any](o *Object) T {
	var zero T
	if o == nil {
		return zero
	}
	if v, ok := o.Value.(T); ok {
		return v
	}
	return zero
}
