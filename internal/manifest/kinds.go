package manifest

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingv1alpha1 "knative.dev/eventing/pkg/apis/eventing/v1alpha1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// knownKinds are the apiVersions and kinds Load decodes and checks.
var knownKinds = []struct {
	apiVersion, kind string
	info             kindInfo
}{
	{"eventing.knative.dev/v1", "Broker", kindInfo{namespaced: true, newValue: func() any { return &eventingv1.Broker{} }}},
	{"eventing.knative.dev/v1", "Trigger", kindInfo{namespaced: true, newValue: func() any { return &eventingv1.Trigger{} }}},
	{"serving.knative.dev/v1", "Service", kindInfo{namespaced: true, newValue: func() any { return &servingv1.Service{} }}},
	{"sources.knative.dev/v1", "SinkBinding", kindInfo{namespaced: true, newValue: func() any { return &sourcesv1.SinkBinding{} }}},
	{"sources.knative.dev/v1", "PingSource", kindInfo{namespaced: true, newValue: func() any { return &sourcesv1.PingSource{} }}},
	{"eventing.knative.dev/v1alpha1", "EventPolicy", kindInfo{namespaced: true, newValue: func() any { return &eventingv1alpha1.EventPolicy{} }}},
	{"v1", "ConfigMap", kindInfo{namespaced: true, newValue: func() any { return &corev1.ConfigMap{} }, check: checkConfigMap}},
	{"v1", "Secret", kindInfo{namespaced: true, newValue: func() any { return &corev1.Secret{} }, check: checkSecret}},
	{"v1", "Namespace", kindInfo{newValue: func() any { return &corev1.Namespace{} }}},
	{"v1", "Service", kindInfo{namespaced: true, newValue: func() any { return &corev1.Service{} }, check: checkCoreService}},
	{"apps/v1", "Deployment", kindInfo{namespaced: true, newValue: func() any { return &appsv1.Deployment{} }, check: checkDeployment}},
	{"apps/v1", "StatefulSet", kindInfo{namespaced: true, newValue: func() any { return &appsv1.StatefulSet{} }, check: checkStatefulSet}},
	{"monitoring.coreos.com/v1", "PrometheusRule", kindInfo{namespaced: true, check: checkPrometheusRule}},
	{"kustomize.config.k8s.io/v1beta1", "Kustomization", kindInfo{noMeta: true}},
}

// skippedKinds are the kinds, by API group and kind (any version), that a
// project holds for its cluster and that have nothing to run on one
// machine: cluster plumbing (access control, scaling, network policy,
// monitoring), the brokers' own infrastructure (a RabbitMQ cluster and
// its broker config: the local data plane replaces every broker class)
// and the demo data Job (`ksaga dev --seed` loads the same data). Load
// keeps them in Set.Skipped without decoding them. Any other kind Load
// does not decode is an error (CodeUnknownKind): a misspelt kind or API
// version would otherwise vanish silently from what `ksaga dev` runs.
// docs/deploy.md lists them; keep the two in step.
var skippedKinds = []struct{ group, kind string }{
	{"", "ServiceAccount"},
	{"", "PersistentVolumeClaim"},
	{"rbac.authorization.k8s.io", "Role"},
	{"rbac.authorization.k8s.io", "RoleBinding"},
	{"rbac.authorization.k8s.io", "ClusterRole"},
	{"rbac.authorization.k8s.io", "ClusterRoleBinding"},
	{"networking.k8s.io", "NetworkPolicy"},
	{"policy", "PodDisruptionBudget"},
	{"autoscaling", "HorizontalPodAutoscaler"},
	{"batch", "Job"},
	{"batch", "CronJob"},
	{"keda.sh", "ScaledObject"},
	{"keda.sh", "TriggerAuthentication"},
	{"monitoring.coreos.com", "PodMonitor"},
	{"monitoring.coreos.com", "ServiceMonitor"},
	{"rabbitmq.com", "RabbitmqCluster"},
	{"eventing.knative.dev", "RabbitmqBrokerConfig"},
	{"kustomize.config.k8s.io", "Component"},
}

// SkippedKinds returns the kinds Load skips on purpose, as "group/Kind"
// ("Kind" for the core group), in the order of the list.
func SkippedKinds() []string {
	out := make([]string, len(skippedKinds))
	for i, k := range skippedKinds {
		out[i] = strings.TrimPrefix(k.group+"/"+k.kind, "/")
	}
	return out
}

// lookupKind returns what to do with apiVersion/kind, or false if this
// package does not decode the kind.
func lookupKind(apiVersion, kind string) (kindInfo, bool) {
	for _, k := range knownKinds {
		if k.apiVersion == apiVersion && k.kind == kind {
			return k.info, true
		}
	}
	return kindInfo{}, false
}

// skipped reports whether objects of group/kind are skipped on purpose.
func skipped(group, kind string) bool {
	return slices.ContainsFunc(skippedKinds, func(k struct{ group, kind string }) bool {
		return k.group == group && k.kind == kind
	})
}

// unknownKind explains why id is an error: a known kind under another API
// version, or a kind nobody knows, with the nearest known name.
func unknownKind(id ID) (field, msg string) {
	var versions []string
	for _, k := range knownKinds {
		if k.kind == id.Kind && (ID{APIVersion: k.apiVersion}).Group() == id.Group() {
			versions = append(versions, k.apiVersion)
		}
	}
	if len(versions) > 0 {
		return "apiVersion", fmt.Sprintf("ksaga reads %s only as %s, not %s: this object would not run under ksaga dev",
			id.Kind, strings.Join(versions, " or "), id.APIVersion)
	}
	msg = fmt.Sprintf("unknown kind %s %s", id.APIVersion, id.Kind)
	if near := nearestKind(id.Kind); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	return "kind", msg + ": ksaga dev would not run it. ksaga reads Brokers, Triggers, Knative Services, SinkBindings, " +
		"PingSources, EventPolicies, ConfigMaps, Secrets and Namespaces, checks core Services, Deployments, StatefulSets and PrometheusRules, " +
		"and skips the cluster-only kinds listed in docs/deploy.md; anything else is an error"
}

// nearestKind is the known or skipped kind closest to kind (at most two
// edits, ignoring case), or "".
func nearestKind(kind string) string {
	best, bestD := "", 3
	try := func(k string) {
		if d := editDistance(strings.ToLower(kind), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	for _, k := range knownKinds {
		try(k.kind)
	}
	for _, k := range skippedKinds {
		try(k.kind)
	}
	if best == kind {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
