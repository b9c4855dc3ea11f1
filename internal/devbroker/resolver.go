package devbroker

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
)

// DefaultResolver resolves Destinations the way Knative's URIResolver
// (knative.dev/pkg/resolver AddressableFromDestinationV1) does, against a
// static table instead of the API server:
//
//   - ref to a serving.knative.dev Service → services[{ns, name}];
//   - ref to an eventing.knative.dev Broker → ingressURL(ns, name);
//   - ref + uri: uri must be relative and is resolved against the ref's URL;
//   - uri alone: must be absolute with a host, used as is.
//
// A ref without a namespace uses the namespace of the object that holds
// the Destination. Any other kind of ref is an error.
func DefaultResolver(services map[types.NamespacedName]*apis.URL, ingressURL func(namespace, name string) *apis.URL) Resolver {
	return func(_ context.Context, d duckv1.Destination, namespace string) (*apis.URL, error) {
		if d.Ref != nil {
			ns := d.Ref.Namespace
			if ns == "" {
				ns = namespace
			}
			nn := types.NamespacedName{Namespace: ns, Name: d.Ref.Name}
			gv, err := schema.ParseGroupVersion(d.Ref.APIVersion)
			if err != nil {
				return nil, fmt.Errorf("ref %s %s: %w", d.Ref.APIVersion, d.Ref.Kind, err)
			}
			var u *apis.URL
			switch {
			case gv.Group == "serving.knative.dev" && d.Ref.Kind == "Service":
				u = services[nn]
			case gv.Group == "eventing.knative.dev" && d.Ref.Kind == "Broker":
				if ingressURL != nil {
					u = ingressURL(ns, d.Ref.Name)
				}
			default:
				return nil, fmt.Errorf("ref %s %s %s: only serving.knative.dev Services and eventing.knative.dev Brokers can be resolved locally", d.Ref.APIVersion, d.Ref.Kind, nn)
			}
			if u == nil {
				return nil, fmt.Errorf("ref %s %s: not found", d.Ref.Kind, nn)
			}
			if d.URI != nil {
				if d.URI.URL().IsAbs() {
					return nil, errors.New("absolute URI is not allowed when Ref or [apiVersion, kind, name] exists")
				}
				return u.ResolveReference(d.URI), nil
			}
			c := *u
			return &c, nil
		}
		if d.URI != nil {
			if !d.URI.URL().IsAbs() || d.URI.Host == "" {
				return nil, fmt.Errorf("URI is not absolute (both scheme and host should be non-empty): %q", d.URI.String())
			}
			c := *d.URI
			return &c, nil
		}
		return nil, errors.New("destination missing Ref and URI, expected at least one")
	}
}
