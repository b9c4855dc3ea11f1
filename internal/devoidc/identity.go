package devoidc

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/auth"
)

// serviceAccountPrefix starts a Kubernetes service account's subject.
const serviceAccountPrefix = "system:serviceaccount:"

// ProducerServiceAccount is the service account a local client that sends
// no token counts as, in the namespace of the Broker it posts to: curl, a
// test, a script. EventPolicies name it to decide what such a client may
// send (`ksaga dev` only: in a cluster a sender without a token gets 401).
// A workload given this service account in the cluster is the same sender.
const ProducerServiceAccount = "ksaga-producer"

// ServiceAccountSubject is the sub of a service account's tokens.
func ServiceAccountSubject(namespace, name string) string {
	return serviceAccountPrefix + namespace + ":" + name
}

// ServiceAccountOf splits a service account's subject.
func ServiceAccountOf(subject string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(subject, serviceAccountPrefix)
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	return namespace, name, ok && namespace != "" && name != "" && !strings.Contains(name, ":")
}

// ProducerSubject is the outside producer's subject for a Broker in namespace.
func ProducerSubject(namespace string) string {
	return ServiceAccountSubject(namespace, ProducerServiceAccount)
}

// TriggerSubject is the identity a Trigger's deliveries and replies carry:
// its OIDC service account, named by Knative's
// GetOIDCServiceAccountNameForResource (<trigger>-oidc-eventing.knative.dev-trigger,
// shortened with a hash when too long).
func TriggerSubject(namespace, name string) string {
	return ResourceSubject(eventingv1.SchemeGroupVersion.WithKind("Trigger"), namespace, name)
}

// ResourceSubject is the identity Knative gives a resource that sends
// events (a Trigger, a SinkBinding, a PingSource, ...): its OIDC service
// account, <name>-oidc-<group>-<kind>.
func ResourceSubject(gvk schema.GroupVersionKind, namespace, name string) string {
	sa := auth.GetOIDCServiceAccountNameForResource(gvk, metav1.ObjectMeta{Namespace: namespace, Name: name})
	return ServiceAccountSubject(namespace, sa)
}

// BrokerAudience is a Broker's audience, as Knative publishes it in
// status.address.audience: eventing.knative.dev/broker/<ns>/<name>.
func BrokerAudience(namespace, name string) string {
	return auth.GetAudienceDirect(eventingv1.SchemeGroupVersion.WithKind("Broker"), namespace, name)
}

// ServiceAudience is the audience of a Knative Service, in Knative's format
// for addressables: serving.knative.dev/service/<ns>/<name>. Serving
// publishes no audience, so a Trigger must name it in
// spec.subscriber.audience for Knative to send a token.
func ServiceAudience(namespace, name string) string {
	return auth.GetAudienceDirect(servingv1.SchemeGroupVersion.WithKind("Service"), namespace, name)
}
