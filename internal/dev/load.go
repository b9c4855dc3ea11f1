package dev

import (
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/types"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/devscale"
	"github.com/ksaga/ksaga/internal/manifest"
)

// EmitsAnnotation on a Knative Service lists, comma-separated, the
// CloudEvent types the function emits; `ksaga validate` checks every Trigger
// filter against the union.
const EmitsAnnotation = "ksaga.io/emits"

// loaded is a loaded, checked set of manifests.
type loaded struct {
	set *manifest.Set
	// problems are Load's and Check's problems, errors and warnings.
	problems manifest.Problems
	// skipped is one line summing up the objects `ksaga dev` does not run
	// (none when it runs everything).
	skipped []string
}

// used reports whether `ksaga dev` uses objects of this group and kind.
func used(group, kind string) bool {
	switch group + "/" + kind {
	case "eventing.knative.dev/Broker", "eventing.knative.dev/Trigger",
		"serving.knative.dev/Service", "sources.knative.dev/SinkBinding", "sources.knative.dev/PingSource",
		"eventing.knative.dev/EventPolicy",
		"/ConfigMap", "/Secret", "/Namespace":
		return true
	}
	return false
}

// load reads paths with manifest.Load and runs manifest.Check, with the
// unemitted-type check when checkEmitted is set, as a cluster with sender
// identity (authentication-oidc) would when oidc is set (EventPolicies are
// refused without it). It fails only when a path cannot be read; the
// problems are in loaded.problems.
func load(paths []string, checkEmitted, oidc bool) (*loaded, error) {
	var opts []manifest.Option
	if oidc {
		opts = append(opts, manifest.WithFeatures(oidcFeatures))
	}
	set, err := manifest.Load(paths, opts...)
	if set == nil {
		return nil, err
	}
	var emitted map[string]bool
	if checkEmitted {
		emitted = EmittedTypes(set)
	}
	l := &loaded{set: set}
	l.problems = append(l.problems, set.Problems...)
	l.problems = append(l.problems, manifest.Check(set, manifest.CheckOptions{EmittedTypes: emitted})...)
	if s := skippedSummary(set); s != "" {
		l.skipped = []string{s}
	}
	return l, nil
}

// skippedSummary is one line counting the objects `ksaga dev` loads but
// does not run, by kind: the kustomization files, and the cluster-only
// kinds (checked, like core Services and StatefulSets, or skipped
// undecoded, like a PodMonitor: manifest.SkippedKinds). Objects of kinds
// ksaga does not know are errors, not in this line.
func skippedSummary(set *manifest.Set) string {
	kustomizations := 0
	n := map[string]int{}
	for _, o := range set.Objects {
		switch {
		case used(o.Group(), o.Kind):
		case o.Kind == "Kustomization":
			kustomizations++
		default:
			n[o.Kind]++
		}
	}
	for _, o := range set.Skipped {
		n[o.Kind]++
	}
	var parts []string
	if kustomizations > 0 {
		parts = append(parts, plural(kustomizations, "Kustomization")+" (ksaga dev reads folders, not kustomize)")
	}
	if len(n) > 0 {
		kinds := make([]string, 0, len(n))
		for k := range n {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for i, k := range kinds {
			kinds[i] = plural(n[k], k)
		}
		parts = append(parts, strings.Join(kinds, ", ")+" (cluster-only kinds)")
	}
	if len(parts) == 0 {
		return ""
	}
	return "not run by ksaga dev: " + strings.Join(parts, "; ")
}

// EmittedTypes is the union of the EmitsAnnotation of every Knative
// Service, or nil when no Service has the annotation (then nothing can be
// said about unemitted types).
func EmittedTypes(set *manifest.Set) map[string]bool {
	var out map[string]bool
	for _, svc := range set.Services() {
		v, ok := svc.Annotations[EmitsAnnotation]
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]bool)
		}
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out[t] = true
			}
		}
	}
	return out
}

// localProblems are the reasons `ksaga dev` could not run a set that is
// valid for a cluster: a Service whose environment cannot be resolved
// locally, a SinkBinding or Trigger destination that cannot be resolved to
// a dev URL, a Broker the local data plane rejects. They are warnings
// (CodeNotLocal); `ksaga dev` fails on them. Non-ko images are reported by
// manifest.Check already.
//
// An invalid knative-serving/config-autoscaler is an error: Knative's
// autoscaler rejects it too.
func localProblems(set *manifest.Set) manifest.Problems {
	var ps manifest.Problems
	addrs := addressesOf(set, DefaultPort)
	cm := set.ConfigMap(devscale.ConfigNamespace, devscale.ConfigName)
	ascfg, cfgErr := devscale.ParseConfig(cm)
	if cfgErr != nil {
		p := manifest.Problem{Message: cfgErr.Error(), Severity: manifest.SeverityError, Code: manifest.CodeInvalid}
		if o := set.ObjectOf(cm); o != nil {
			p.Source, p.Object = o.Source, o.ID.String()
		}
		ps = append(ps, p)
	}
	for _, svc := range set.Services() {
		if _, err := buildEnv(envInput{Set: set, Service: svc, Port: DefaultPort, Addrs: addrs}); err != nil {
			ps = append(ps, localProblem(set, svc, "", err))
		}
		if cfgErr == nil {
			if _, err := devscale.NewSettings(svc, ascfg, devscale.Override{}); err != nil {
				ps = append(ps, localProblem(set, svc, "spec.template.metadata.annotations", err))
			}
		}
	}
	if len(set.Brokers()) == 0 {
		return ps
	}
	// A dry run of the data plane: New checks and resolves every Trigger
	// without touching Redis (the client is never used).
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
	defer func() { _ = rdb.Close() }()
	_, err := devbroker.New(devbroker.Config{
		Redis: rdb, Brokers: set.Brokers(), Triggers: set.Triggers(),
		Resolve: addrs.Resolver(), IngressURL: addrs.BrokerURL,
	})
	if err != nil {
		ps = append(ps, manifest.Problem{Message: "not runnable by ksaga dev: " + err.Error(),
			Severity: manifest.SeverityWarning, Code: manifest.CodeNotLocal})
	}
	return ps
}

func localProblem(set *manifest.Set, v any, field string, err error) manifest.Problem {
	p := manifest.Problem{Field: field, Message: "not runnable by ksaga dev: " + err.Error(),
		Severity: manifest.SeverityWarning, Code: manifest.CodeNotLocal}
	if o := set.ObjectOf(v); o != nil {
		p.Source, p.Object = o.Source, o.ID.String()
	}
	return p
}

// addressesOf returns the dev Addresses of the set's Services and Brokers.
func addressesOf(set *manifest.Set, port int) *Addresses {
	var svcs, brokers []types.NamespacedName
	for _, s := range set.Services() {
		svcs = append(svcs, types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
	}
	for _, b := range set.Brokers() {
		brokers = append(brokers, types.NamespacedName{Namespace: b.Namespace, Name: b.Name})
	}
	return NewAddresses(port, svcs, brokers)
}

// brokerClass returns a Broker's eventing.knative.dev/broker.class.
func brokerClass(b *eventingv1.Broker) string {
	if c := b.Annotations[eventingv1.BrokerClassAnnotationKey]; c != "" {
		return c
	}
	return "MTChannelBasedBroker"
}

// counts summarises a set: "1 Broker, 9 Triggers, ...".
func counts(set *manifest.Set) string {
	n := map[string]int{}
	for _, o := range set.Objects {
		k := o.Kind
		if k == "Service" && o.Group() == servingv1.SchemeGroupVersion.Group {
			k = "Knative Service"
		}
		if used(o.Group(), o.Kind) {
			n[k]++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	order := map[string]int{"Broker": 0, "Trigger": 1, "Knative Service": 2, "SinkBinding": 3, "PingSource": 4, "EventPolicy": 5, "ConfigMap": 6, "Secret": 7, "Namespace": 8}
	sort.Slice(keys, func(i, j int) bool { return order[keys[i]] < order[keys[j]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = plural(n[k], k)
	}
	if len(parts) == 0 {
		return "nothing to run"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if w, ok := strings.CutSuffix(word, "y"); ok {
		return fmt.Sprintf("%d %sies", n, w)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
