package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/manifest"
)

// Addresses are the dev URLs of one `ksaga dev`: a Knative Service at
// http://<svc>.<ns>.localhost:<port>, a Broker at
// http://localhost:<port>/<ns>/<broker>, both on the one ingress port.
type Addresses struct {
	port     int
	services map[types.NamespacedName]bool
	brokers  map[types.NamespacedName]bool
}

// NewAddresses returns the Addresses of the given Knative Services and
// Brokers behind an ingress on port.
func NewAddresses(port int, services, brokers []types.NamespacedName) *Addresses {
	a := &Addresses{port: port, services: make(map[types.NamespacedName]bool), brokers: make(map[types.NamespacedName]bool)}
	for _, s := range services {
		a.services[s] = true
	}
	for _, b := range brokers {
		a.brokers[b] = true
	}
	return a
}

// Port is the ingress port.
func (a *Addresses) Port() int { return a.port }

// host returns name:port, or name alone for port 80.
func (a *Addresses) host(name string) string {
	if a.port == 80 {
		return name
	}
	return net.JoinHostPort(name, strconv.Itoa(a.port))
}

// ServiceURL is the dev URL of a Knative Service.
func (a *Addresses) ServiceURL(namespace, name string) *apis.URL {
	return &apis.URL{Scheme: "http", Host: a.host(name + "." + namespace + ".localhost")}
}

// BrokerURL is the dev ingress URL of a Broker.
func (a *Addresses) BrokerURL(namespace, name string) *apis.URL {
	return &apis.URL{Scheme: "http", Host: a.host("localhost"), Path: "/" + namespace + "/" + name}
}

// HasService reports whether the Knative Service is served.
func (a *Addresses) HasService(nn types.NamespacedName) bool { return a.services[nn] }

// ServiceURLs maps every Knative Service to its dev URL, for
// devbroker.DefaultResolver.
func (a *Addresses) ServiceURLs() map[types.NamespacedName]*apis.URL {
	m := make(map[types.NamespacedName]*apis.URL, len(a.services))
	for nn := range a.services {
		m[nn] = a.ServiceURL(nn.Namespace, nn.Name)
	}
	return m
}

// Resolver resolves Destinations (Trigger subscribers, dead letter sinks,
// SinkBinding sinks) to dev URLs, as Knative's URI resolver does in a
// cluster: a ref to a Knative Service or a Broker gives its dev URL, and a
// uri that is a cluster address of one of them (see Rewrite) is rewritten
// to it, as cluster DNS would resolve it.
func (a *Addresses) Resolver() devbroker.Resolver {
	base := devbroker.DefaultResolver(a.ServiceURLs(), a.BrokerURL)
	return func(ctx context.Context, d duckv1.Destination, namespace string) (*apis.URL, error) {
		u, err := base(ctx, d, namespace)
		if err != nil || d.Ref != nil || u == nil {
			return u, err
		}
		if to, ok := a.Rewrite(u.String(), namespace); ok {
			return apis.ParseURL(to)
		}
		return u, nil
	}
}

// Rewrite returns value with a Knative Service's or the broker ingress's
// cluster address replaced by its dev URL, and whether it did. namespace is
// the namespace of the object whose env holds value. Recognised forms, all
// on port 80 (given or implied):
//
//	http://<svc>.<ns>.svc.cluster.local[/path]   → http://<svc>.<ns>.localhost:<port>[/path]
//	http://<svc>.<ns>.svc, http://<svc>.<ns>     → the same
//	http://<svc>  (a Service of the same namespace, as cluster DNS resolves it)
//	<svc>.<ns>.svc.cluster.local, <svc>.<ns>.svc, <svc>.<ns> (a bare host) → http://<svc>.<ns>.localhost:<port>
//	http://broker-ingress.knative-eventing.svc.cluster.local/<ns>/<broker> → http://localhost:<port>/<ns>/<broker>
//	(also kafka-broker-ingress and any other *broker-ingress of knative-eventing)
//
// Anything else, https URLs included, is left alone.
func (a *Addresses) Rewrite(value, namespace string) (string, bool) {
	if strings.Contains(value, "://") {
		u, err := url.Parse(value)
		if err != nil || u.Scheme != "http" || u.Host == "" || (u.Port() != "" && u.Port() != "80") {
			return value, false
		}
		host := normalizeHost(u.Hostname())
		if nn, ok := a.serviceForHost(host, namespace, true); ok {
			u.Host = a.ServiceURL(nn.Namespace, nn.Name).Host
			return u.String(), true
		}
		if isBrokerIngressHost(host) {
			parts := strings.Split(strings.Trim(u.Path, "/"), "/")
			if len(parts) == 2 && a.brokers[types.NamespacedName{Namespace: parts[0], Name: parts[1]}] {
				u.Host = a.host("localhost")
				return u.String(), true
			}
		}
		return value, false
	}
	host := value
	if h, p, err := net.SplitHostPort(value); err == nil {
		if p != "80" {
			return value, false
		}
		host = h
	}
	if nn, ok := a.serviceForHost(normalizeHost(host), namespace, false); ok {
		return a.ServiceURL(nn.Namespace, nn.Name).String(), true
	}
	return value, false
}

// serviceForHost finds the Knative Service a cluster host name designates.
func (a *Addresses) serviceForHost(host, namespace string, allowShort bool) (types.NamespacedName, bool) {
	l := strings.Split(host, ".")
	var nn types.NamespacedName
	switch {
	case len(l) == 5 && l[2] == "svc" && l[3] == "cluster" && l[4] == "local",
		len(l) == 3 && l[2] == "svc",
		len(l) == 2:
		nn = types.NamespacedName{Namespace: l[1], Name: l[0]}
	case len(l) == 1 && allowShort:
		nn = types.NamespacedName{Namespace: namespace, Name: l[0]}
	default:
		return nn, false
	}
	return nn, nn.Name != "" && a.services[nn]
}

func isBrokerIngressHost(host string) bool {
	l := strings.Split(host, ".")
	if len(l) < 2 || !strings.HasSuffix(l[0], "broker-ingress") || l[1] != "knative-eventing" {
		return false
	}
	rest := strings.Join(l[2:], ".")
	return rest == "" || rest == "svc" || rest == "svc.cluster.local"
}

func normalizeHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// envList is an ordered environment: a variable keeps the position of its
// first definition and the value of its last.
type envList struct {
	order []string
	vals  map[string]string
}

func (e *envList) set(k, v string) {
	if e.vals == nil {
		e.vals = make(map[string]string)
	}
	if _, ok := e.vals[k]; !ok {
		e.order = append(e.order, k)
	}
	e.vals[k] = v
}

// setKV sets a KEY=VALUE string; one without "=" is ignored.
func (e *envList) setKV(kv string) {
	if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
		e.set(k, v)
	}
}

// environ returns KEY=VALUE strings, as exec.Cmd.Env wants.
func (e *envList) environ() []string {
	out := make([]string, len(e.order))
	for i, k := range e.order {
		out[i] = k + "=" + e.vals[k]
	}
	return out
}

// envInput is what buildEnv needs to know about one function.
type envInput struct {
	Set            *manifest.Set
	Service        *servingv1.Service
	Port           int // the function's own port
	Addrs          *Addresses
	RedisURL       string
	FaultInjection bool
	OIDC           []string // KEY=VALUE of sender identity (senderIdentity.env)
	PassEnv        []string // inherited from ksaga (PATH, ..., OTEL_*)
	Extra          []string // --env
}

// rewrite is one env value changed from a cluster address to a dev URL.
type rewrite struct{ Name, From, To string }

// envResult is a function's environment and how it was made.
type envResult struct {
	Env          []string  // KEY=VALUE
	Rewrites     []rewrite // cluster addresses replaced by dev URLs
	SinkBindings []string  // "ns/name" of the SinkBindings applied, in order
}

// buildEnv assembles the environment Knative would give the function, plus
// the dev overrides, later entries winning:
//
//  1. PassEnv without OTEL_* (PATH, HOME, TMPDIR, TZ, Go runtime variables);
//  2. the manifests' envFrom and env (manifest.ResolveEnv), cluster addresses
//     rewritten to dev URLs;
//  3. Knative Serving's PORT, K_SERVICE, K_REVISION (<name>-00001),
//     K_CONFIGURATION (Serving rejects these names in a Service's env);
//  4. REDIS_URL (the dev Redis) and LISTEN_ADDRESS=127.0.0.1:<port> (in a
//     pod, Knative's queue-proxy reaches the container on PORT on all
//     interfaces; locally every function binds loopback only, so nothing is
//     exposed beyond this machine);
//  5. K_SINK and K_CE_OVERRIDES of each SinkBinding whose subject is the
//     Service, in apply order (the webhook appends them after the
//     container's env, so they win; with several, the last wins);
//  6. OIDC: sender identity (KSAGA_OIDC_*, KSAGA_SINK_TOKEN_FILE);
//  7. KSAGA_FAULT_INJECTION=true with FaultInjection;
//  8. OTEL_* of PassEnv;
//  9. Extra (--env).
func buildEnv(in envInput) (envResult, error) {
	svc := in.Service
	var env envList
	var res envResult
	var otel []string
	for _, kv := range in.PassEnv {
		if strings.HasPrefix(kv, "OTEL_") {
			otel = append(otel, kv)
			continue
		}
		env.setKV(kv)
	}

	vars, err := manifest.ResolveEnv(in.Set, svc)
	if err != nil {
		return envResult{}, err
	}
	for _, v := range vars {
		val := v.Value
		if to, ok := in.Addrs.Rewrite(val, svc.Namespace); ok {
			res.Rewrites = append(res.Rewrites, rewrite{Name: v.Name, From: val, To: to})
			val = to
		}
		env.set(v.Name, val)
	}

	port := strconv.Itoa(in.Port)
	env.set("PORT", port)
	env.set("K_SERVICE", svc.Name)
	rev := svc.Spec.Template.Name // the revision's name, when the Service gives one
	if rev == "" {
		rev = svc.Name + "-00001"
	}
	env.set("K_REVISION", rev)
	env.set("K_CONFIGURATION", svc.Name)
	env.set("REDIS_URL", in.RedisURL)
	env.set("LISTEN_ADDRESS", net.JoinHostPort("127.0.0.1", port))

	resolve := in.Addrs.Resolver()
	for _, sb := range sinkBindingsFor(in.Set, svc) {
		u, err := resolve(context.Background(), sb.Spec.Sink, sb.Namespace)
		if err != nil {
			return envResult{}, fmt.Errorf("sinkbinding %s/%s: sink: %w", sb.Namespace, sb.Name, err)
		}
		sink := u.String() // a uri sink's cluster address is rewritten by the resolver
		overrides := ""
		if sb.Spec.CloudEventOverrides != nil {
			b, err := json.Marshal(sb.Spec.CloudEventOverrides)
			if err != nil {
				return envResult{}, fmt.Errorf("sinkbinding %s/%s: ceOverrides: %w", sb.Namespace, sb.Name, err)
			}
			overrides = string(b)
		}
		env.set("K_SINK", sink)
		env.set("K_CE_OVERRIDES", overrides)
		res.SinkBindings = append(res.SinkBindings, sb.Namespace+"/"+sb.Name)
	}

	for _, kv := range in.OIDC {
		env.setKV(kv)
	}
	if in.FaultInjection {
		env.set("KSAGA_FAULT_INJECTION", "true")
	}
	for _, kv := range otel {
		env.setKV(kv)
	}
	for _, kv := range in.Extra {
		env.setKV(kv)
	}
	res.Env = env.environ()
	return res, nil
}

// sinkBindingsFor returns the SinkBindings of set whose subject is svc, by
// name or by label selector, in apply order.
func sinkBindingsFor(set *manifest.Set, svc *servingv1.Service) []*sourcesv1.SinkBinding {
	var out []*sourcesv1.SinkBinding
	for _, sb := range set.SinkBindings() {
		s := sb.Spec.Subject
		gv, err := schema.ParseGroupVersion(s.APIVersion)
		if err != nil || gv.Group != servingv1.SchemeGroupVersion.Group || s.Kind != "Service" {
			continue
		}
		ns := s.Namespace
		if ns == "" {
			ns = sb.Namespace
		}
		if ns != svc.Namespace {
			continue
		}
		switch {
		case s.Name != "":
			if s.Name == svc.Name {
				out = append(out, sb)
			}
		case s.Selector != nil:
			sel, err := metav1.LabelSelectorAsSelector(s.Selector)
			if err == nil && sel.Matches(labels.Set(svc.Labels)) {
				out = append(out, sb)
			}
		}
	}
	return out
}
