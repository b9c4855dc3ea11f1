// Package deploy_test proves the cluster deploy paths of ksaga without a
// cluster, with Knative's own defaulting and validation code
// (internal/manifest):
//
//   - every YAML document under brokers/, triggers/ and manifests/ loads and
//     validates, for every broker × mode, both as `ksaga dev` loads the
//     folders and as `kubectl apply -k deploy/overlays/<mode>-<broker>` sees
//     them (rendered by kubectl kustomize when it is installed), and the two
//     views hold the same objects;
//   - deliberately broken copies of the real files fail with the expected
//     field paths;
//   - every ko:// image builds, small and free of knative.dev packages, with
//     the Dockerfile's own go build line (images_test.go);
//   - deploy/kn.sh creates the same objects as the overlays (kn_test.go).
package deploy_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/serving/pkg/apis/autoscaling"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/ordersaga"
)

// TestKustomizationsListEveryFile: the kustomization.yaml of manifests/,
// brokers/<class>/ and triggers/<mode>/ list exactly the YAML files of their
// folder, so that `ksaga dev` (which loads the folders) and `kubectl apply -k`
// (which reads the lists) see the same objects; and every broker × mode has
// an overlay.
func TestKustomizationsListEveryFile(t *testing.T) {
	dirs := []string{"manifests", "deploy/demo"}
	for _, b := range brokers {
		dirs = append(dirs, "brokers/"+b)
	}
	for _, m := range modes {
		dirs = append(dirs, "triggers/"+m)
	}
	for _, d := range dirs {
		listed := kustomizeFiles(t, path(d))
		if d == "manifests" {
			// Opt-in folders of manifests/, with a kustomization of their own
			// that a component of deploy/components adds.
			listed = append(listed, kustomizeFiles(t, path(optionalManifests))...)
		}
		if diff := cmp.Diff(yamlFiles(t, path(d)), listed, sortStrings); diff != "" {
			t.Errorf("%s: the kustomization.yaml resources differ from the folder's YAML files (-folder +listed):\n%s", d, diff)
		}
		// Any other kustomization.yaml would be a folder nobody deploys.
		var ks []string
		for _, f := range kustomizations(t, path(d)) {
			if f != path(d) && f != path(optionalManifests) {
				ks = append(ks, f)
			}
		}
		if len(ks) > 0 {
			t.Errorf("%s: unexpected kustomizations %v", d, ks)
		}
	}

	entries, err := os.ReadDir(path("deploy/overlays"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for _, m := range modes {
		for _, b := range brokers {
			want = append(want, m+"-"+b)
			k := readKustomization(t, path("deploy/overlays/"+m+"-"+b))
			if diff := cmp.Diff([]string{"../../../manifests", "../../../brokers/" + b, "../../../triggers/" + m}, k.Resources); diff != "" {
				t.Errorf("deploy/overlays/%s-%s resources (-want +got):\n%s", m, b, diff)
			}
		}
	}
	if diff := cmp.Diff(want, got, sortStrings); diff != "" {
		t.Errorf("deploy/overlays (-want +got):\n%s", diff)
	}
	entries, err = os.ReadDir(path("brokers"))
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if diff := cmp.Diff(brokers, got, sortStrings); diff != "" {
		t.Errorf("brokers/ holds (-want +got):\n%s", diff)
	}
}

// optionalManifests is the folder of manifests/ that only
// deploy/components/observability deploys (its objects need the Prometheus
// Operator's CRDs); `ksaga dev` loads it like the rest of manifests/.
const optionalManifests = "manifests/observability"

// kustomizations returns the folders under dir holding a kustomization.yaml.
func kustomizations(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "kustomization.yaml" {
			out = append(out, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var sortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

// TestDevView: what `ksaga dev` loads for every broker × mode
// (brokers/<class>/, triggers/<mode>/, manifests/, recursively) loads,
// defaults and validates as the admission webhooks would, with no error and
// no warning, holds exactly one object per kind/namespace/name and one
// Broker, and passes the cross-object checks of `ksaga validate`. Together
// the combinations cover every YAML file of the three folders.
func TestDevView(t *testing.T) {
	covered := make(map[string]bool)
	for _, m := range modes {
		for _, b := range brokers {
			t.Run(m+"-"+b, func(t *testing.T) {
				set := loadClean(t, "brokers/"+b, "triggers/"+m, "manifests")
				for _, o := range append(set.Objects, set.Skipped...) {
					covered[o.File] = true
				}
				bs := set.Brokers()
				if len(bs) != 1 || bs[0].Namespace != "saga" || bs[0].Name != "default" {
					t.Fatalf("Brokers = %v, want exactly saga/default", bs)
				}
				if got := bs[0].Annotations[eventingv1.BrokerClassAnnotationKey]; got != brokerClass[b] {
					t.Errorf("broker class = %q, want %q", got, brokerClass[b])
				}
				wantTriggers := len(yamlFiles(t, path("triggers/"+m)))
				if got := len(set.Triggers()); got != wantTriggers {
					t.Errorf("%d Triggers, want %d", got, wantTriggers)
				}
			})
		}
	}
	var all []string
	for _, d := range []string{"brokers", "triggers", "manifests"} {
		all = append(all, yamlFiles(t, path(d))...)
	}
	for _, f := range all {
		if !covered[f] {
			t.Errorf("%s is in no broker × mode combination", f)
		}
	}
}

// TestTriggersWireTheDefinition: the Triggers of each mode deliver exactly
// what ordersaga.Saga routes: in choreography the start command to the
// order step and every result a step runs on to that step; in
// orchestration every command to its step and every result to the
// orchestrator. A routed event without a Trigger would leave sagas waiting
// until their deadline; a Trigger the definition does not route would only
// dead-letter (the step answers 400).
func TestTriggersWireTheDefinition(t *testing.T) {
	d := ordersaga.Saga
	want := map[string]map[string]bool{"choreography": {}, "orchestration": {}}
	want["choreography"][d.Steps[0].Command+" -> "+d.Steps[0].Name] = true
	for _, typ := range d.Commands() {
		r, _ := d.Route(typ)
		want["orchestration"][typ+" -> "+d.StepDef(r).Name] = true
	}
	for _, typ := range d.Results() {
		if r, ok := d.Route(typ); ok {
			want["choreography"][typ+" -> "+d.StepDef(r).Name] = true
		}
		want["orchestration"][typ+" -> orchestrator"] = true
	}
	for _, m := range modes {
		got := map[string]bool{}
		for _, tr := range loadClean(t, "brokers/mt-channel", "triggers/"+m, "manifests").Triggers() {
			if tr.Spec.Filter == nil || tr.Spec.Subscriber.Ref == nil {
				t.Errorf("%s: Trigger %s has no type filter or no subscriber ref", m, tr.Name)
				continue
			}
			got[tr.Spec.Filter.Attributes["type"]+" -> "+tr.Spec.Subscriber.Ref.Name] = true
		}
		if diff := cmp.Diff(want[m], got); diff != "" {
			t.Errorf("%s: Triggers vs ordersaga.Saga (-definition +triggers/%s):\n%s", m, m, diff)
		}
	}
}

// componentAnnotations are the Trigger annotations the broker components of
// deploy/components add (absent from the shared triggers/).
var componentAnnotations = []string{"autoscaling.eventing.knative.dev/", "rabbitmq.eventing.knative.dev/"}

// TestOverlays: `kubectl kustomize deploy/overlays/<mode>-<broker>` (what
// `make deploy` applies before ko resolves the images; here with
// OBSERVABILITY=1) validates cleanly, holds exactly the objects `ksaga dev`
// loads for the same combination, equal after defaulting except for the
// broker component's Trigger annotations, and carries the broker-specific
// settings.
func TestOverlays(t *testing.T) {
	for _, m := range modes {
		for _, b := range brokers {
			t.Run(m+"-"+b, func(t *testing.T) {
				file, real := render(t, m, b, "OBSERVABILITY=1")
				if !real {
					t.Logf("kubectl kustomize unavailable (%v): checking the resources lists without components", kubectl())
				}
				set := loadClean(t, file)
				got, want := objects(set), objects(loadClean(t, "brokers/"+b, "triggers/"+m, "manifests"))
				if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
					t.Fatalf("objects (-ksaga dev +kubectl apply -k):\n%s", diff)
				}
				for id, o := range got {
					if diff := cmp.Diff(toMap(t, want[id], componentAnnotations...), toMap(t, o, componentAnnotations...)); diff != "" {
						t.Errorf("%s differs (-ksaga dev +kubectl apply -k):\n%s", id, diff)
					}
				}
				checkBroker(t, set, b, real)
			})
		}
	}
}

// TestOptionalParts: REDIS=external (deploy/components/external-redis)
// leaves exactly the in-cluster Redis (and its ACL file) out, the default (OBSERVABILITY=0)
// exactly the objects of manifests/observability, and DEMO=1 adds exactly
// the demo data Job.
func TestOptionalParts(t *testing.T) {
	full, _ := render(t, "choreography", "kafka", "OBSERVABILITY=1")
	fullObjs := objects(loadClean(t, full))
	var observability []string
	for id := range objects(loadClean(t, optionalManifests)) {
		observability = append(observability, id)
	}
	for _, tt := range []struct {
		env     []string
		removed []string
	}{
		{[]string{"REDIS=external", "OBSERVABILITY=1"}, []string{"Secret saga/ksaga-redis-acl", "Service saga/redis", "Service saga/redis-headless", "StatefulSet saga/redis"}},
		{nil, observability},
		{[]string{"OBSERVABILITY=1", "DEMO=1"}, nil},
	} {
		t.Run(strings.Join(append([]string{"defaults"}, tt.env...), "-"), func(t *testing.T) {
			file, _ := render(t, "choreography", "kafka", tt.env...)
			objs := objects(loadClean(t, file))
			var removed []string
			for id := range fullObjs {
				if objs[id] == nil {
					removed = append(removed, id)
				}
			}
			if diff := cmp.Diff(tt.removed, removed, sortStrings); diff != "" {
				t.Errorf("%v leaves out (-want +got):\n%s", tt.env, diff)
			}
			var added []string
			for id := range objs {
				if fullObjs[id] == nil {
					added = append(added, id)
				}
			}
			var wantAdded []string
			if strings.Contains(strings.Join(tt.env, " "), "DEMO=1") {
				wantAdded = []string{"Job saga/ksaga-seed-demo-data"}
			}
			if diff := cmp.Diff(wantAdded, added); diff != "" {
				t.Errorf("%v adds (-want +got):\n%s", tt.env, diff)
			}
		})
	}
}

// checkBroker checks the broker-specific settings of a rendered overlay.
// componentsApplied says whether kustomize components were applied.
func checkBroker(t *testing.T, set *manifest.Set, broker string, componentsApplied bool) {
	t.Helper()
	br := set.Broker("saga", "default")
	cfg := br.Spec.Config
	if cfg == nil {
		t.Fatal("Broker saga/default has no spec.config")
	}
	if br.Spec.Delivery == nil || br.Spec.Delivery.DeadLetterSink == nil || br.Spec.Delivery.DeadLetterSink.Ref == nil ||
		br.Spec.Delivery.DeadLetterSink.Ref.Name != "deadletter" {
		t.Errorf("Broker delivery = %+v, want a deadLetterSink to the deadletter Service", br.Spec.Delivery)
	}
	switch broker {
	case "mt-channel":
		if cfg.Kind != "ConfigMap" || cfg.Name != "config-br-default-channel" || cfg.Namespace != "knative-eventing" {
			t.Errorf("spec.config = %+v, want knative-eventing/config-br-default-channel", cfg)
		}
		// the channel answers 202 once it has the event, not after the
		// whole synchronous chain of replies (a saga's length)
		if v := br.Annotations["messaging.knative.dev/async-handler"]; v != "true" {
			t.Errorf("messaging.knative.dev/async-handler = %q, want \"true\"", v)
		}
	case "kafka":
		cm := set.ConfigMap(cfg.Namespace, cfg.Name)
		if cfg.Kind != "ConfigMap" || cfg.APIVersion != "v1" || cm == nil {
			t.Fatalf("spec.config = %+v: want a ConfigMap of the set", cfg)
		}
		if cm.Data["bootstrap.servers"] == "" {
			t.Error("kafka-broker-config: bootstrap.servers is empty")
		}
		partitions := positiveInt(t, cm.Data, "default.topic.partitions")
		positiveInt(t, cm.Data, "default.topic.replication.factor")
		positiveInt(t, cm.Data, "default.topic.config.retention.ms")
		if componentsApplied {
			checkKEDA(t, set, partitions)
		}
	case "rabbitmq":
		// The RabbitMQ broker's own webhook (eventing-rabbitmq
		// pkg/apis/eventing/v1alpha1/broker_validation.go, not a dependency
		// here) requires apiVersion, kind, name and namespace, and one of two kinds.
		if cfg.APIVersion != "eventing.knative.dev/v1alpha1" || cfg.Kind != "RabbitmqBrokerConfig" || cfg.Name == "" || cfg.Namespace == "" {
			t.Errorf("spec.config = %+v: want a RabbitmqBrokerConfig with a namespace", cfg)
		}
		rbc := skippedObject(set, "RabbitmqBrokerConfig", cfg.Namespace, cfg.Name)
		if rbc == nil {
			t.Fatalf("RabbitmqBrokerConfig %s/%s is not in the overlay", cfg.Namespace, cfg.Name)
		}
		if q, _, _ := unstructured.NestedString(rbc.Object, "spec", "queueType"); q != "quorum" {
			t.Errorf("RabbitmqBrokerConfig queueType = %q, want quorum", q)
		}
		name, _, _ := unstructured.NestedString(rbc.Object, "spec", "rabbitmqClusterReference", "name")
		ns, _, _ := unstructured.NestedString(rbc.Object, "spec", "rabbitmqClusterReference", "namespace")
		if skippedObject(set, "RabbitmqCluster", ns, name) == nil {
			t.Errorf("the RabbitmqBrokerConfig names RabbitmqCluster %s/%s, which is not in the overlay", ns, name)
		}
		for _, tr := range set.Triggers() {
			// The RabbitMQ trigger reconciler reads only spec.filter.attributes.
			if len(tr.Spec.Filters) > 0 {
				t.Errorf("Trigger %s uses spec.filters, which the RabbitMQ broker ignores", tr.Name)
			}
			if !componentsApplied {
				continue
			}
			// eventing-rabbitmq's Trigger webhook accepts 1..1000.
			p, err := strconv.Atoi(tr.Annotations["rabbitmq.eventing.knative.dev/parallelism"])
			if err != nil || p < 1 || p > 1000 {
				t.Errorf("Trigger %s: rabbitmq.eventing.knative.dev/parallelism = %q, want 1..1000",
					tr.Name, tr.Annotations["rabbitmq.eventing.knative.dev/parallelism"])
			}
		}
	}
}

// checkKEDA checks the KEDA annotations of every Trigger of a Kafka overlay:
// the class that turns KEDA on, integer settings, min ≤ max ≤ partitions
// (more consumers than partitions idle).
func checkKEDA(t *testing.T, set *manifest.Set, partitions int) {
	t.Helper()
	const p = "autoscaling.eventing.knative.dev/"
	for _, tr := range set.Triggers() {
		a := tr.Annotations
		if a[p+"class"] != "keda.autoscaling.knative.dev" {
			t.Errorf("Trigger %s: %sclass = %q, want keda.autoscaling.knative.dev", tr.Name, p, a[p+"class"])
			continue
		}
		vals := make(map[string]int)
		for _, k := range []string{"min-scale", "max-scale", "lag-threshold", "polling-interval", "cooldown-period"} {
			n, err := strconv.Atoi(a[p+k])
			if err != nil || n < 0 {
				t.Errorf("Trigger %s: %s%s = %q, want a non-negative integer", tr.Name, p, k, a[p+k])
			}
			vals[k] = n
		}
		if vals["min-scale"] > vals["max-scale"] || vals["max-scale"] > partitions || vals["lag-threshold"] < 1 {
			t.Errorf("Trigger %s: KEDA min-scale %d, max-scale %d, lag-threshold %d: want min ≤ max ≤ %d partitions, lag ≥ 1",
				tr.Name, vals["min-scale"], vals["max-scale"], vals["lag-threshold"], partitions)
		}
	}
}

func positiveInt(t *testing.T, data map[string]string, key string) int {
	t.Helper()
	n, err := strconv.Atoi(data[key])
	if err != nil || n < 1 {
		t.Errorf("%s = %q, want a positive integer", key, data[key])
	}
	return n
}

func skippedObject(set *manifest.Set, kind, ns, name string) *unstructured.Unstructured {
	for _, o := range set.Skipped {
		if o.Kind == kind && o.Namespace == ns && o.Name == name {
			u, _ := o.Value.(*unstructured.Unstructured)
			return u
		}
	}
	return nil
}

// TestRedis: the in-cluster Redis persists with AOF on a volume, loads its
// users from the ksaga-redis-acl Secret, and the admin REDIS_URL points at
// its Service with REDIS_PASSWORD (the users themselves: redisacl_test.go).
func TestRedis(t *testing.T) {
	set := loadClean(t, "brokers/mt-channel", "manifests")
	o := set.Find("apps", "StatefulSet", "saga", "redis")
	if o == nil {
		t.Fatal("no StatefulSet saga/redis")
	}
	sts := o.Value.(*appsv1.StatefulSet)
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("redis has %d containers, want 1", len(sts.Spec.Template.Spec.Containers))
	}
	c := sts.Spec.Template.Spec.Containers[0]
	args := " " + strings.Join(c.Args, " ") + " "
	for _, want := range []string{" --appendonly yes ", " --appendfsync everysec ", " --aclfile /etc/redis/acl/users.acl ", " --dir /data "} {
		if !strings.Contains(args, want) {
			t.Errorf("redis args %q lack %q", c.Args, strings.TrimSpace(want))
		}
	}
	var pw *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "REDIS_PASSWORD" {
			pw = &c.Env[i]
		}
	}
	if pw == nil || pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil ||
		pw.ValueFrom.SecretKeyRef.Name != "ksaga-redis" || pw.ValueFrom.SecretKeyRef.Key != "REDIS_PASSWORD" {
		t.Errorf("REDIS_PASSWORD = %+v, want secretKeyRef ksaga-redis/REDIS_PASSWORD", pw)
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Error("redis needs a readiness and a liveness probe")
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || vm.MountPath == "/data" && len(sts.Spec.VolumeClaimTemplates) == 1 && vm.Name == sts.Spec.VolumeClaimTemplates[0].Name
	}
	if !mounted {
		t.Error("/data is not the volumeClaimTemplate's volume")
	}
	aclMounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range sts.Spec.Template.Spec.Volumes {
			aclMounted = aclMounted || vm.MountPath == "/etc/redis/acl" && vm.Name == v.Name && v.Secret != nil && v.Secret.SecretName == "ksaga-redis-acl"
		}
	}
	if !aclMounted {
		t.Error("/etc/redis/acl is not the ksaga-redis-acl Secret")
	}
	if sc := sts.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("redis must run as non-root (restricted)")
	}

	svc := set.Find("", "Service", "saga", "redis")
	if svc == nil {
		t.Fatal("no Service saga/redis")
	}
	for k, v := range svc.Value.(*corev1.Service).Spec.Selector {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("Service redis selects %s=%s, which the pods lack", k, v)
		}
	}
	if hs := set.Find("", "Service", "saga", sts.Spec.ServiceName); hs == nil || hs.Value.(*corev1.Service).Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("serviceName %q is not a headless Service of the set", sts.Spec.ServiceName)
	}

	sec := set.Secret("saga", "ksaga-redis")
	url, pass := string(sec.Data["REDIS_URL"]), string(sec.Data["REDIS_PASSWORD"])
	if want := "redis://:" + pass + "@redis.saga.svc.cluster.local:6379/0"; url != want {
		t.Errorf("REDIS_URL = %q, want %q (the Service, with REDIS_PASSWORD)", url, want)
	}
}

// TestAutoscaling: every Knative Service states its scaling on the revision
// template (class kpa, metric, target, min/max/initial scale, and a
// retention period where it scales to zero), with a containerConcurrency at
// least the target, restricted security, probes and resources; and
// docs/deploy.md's table says what the manifests say.
func TestAutoscaling(t *testing.T) {
	set := loadClean(t, "brokers/mt-channel", "manifests")
	table := docsTable(t)
	const a = autoscaling.GroupName + "/"
	for _, s := range set.Services() {
		t.Run(s.Name, func(t *testing.T) {
			for k := range s.Annotations {
				if strings.HasPrefix(k, a) {
					t.Errorf("%s on the Service's metadata: it belongs on spec.template.metadata", k)
				}
			}
			ann := s.Spec.Template.Annotations
			if ann[autoscaling.ClassAnnotationKey] != autoscaling.KPA {
				t.Errorf("class = %q, want %s", ann[autoscaling.ClassAnnotationKey], autoscaling.KPA)
			}
			for _, k := range []string{autoscaling.MetricAnnotationKey, autoscaling.TargetAnnotationKey,
				autoscaling.MinScaleAnnotationKey, autoscaling.MaxScaleAnnotationKey, autoscaling.InitialScaleAnnotationKey} {
				if ann[k] == "" {
					t.Errorf("%s is not set", k)
				}
			}
			if ann[autoscaling.MinScaleAnnotationKey] == "0" && ann[autoscaling.ScaleToZeroPodRetentionPeriodKey] == "" {
				t.Errorf("scales to zero without %s", autoscaling.ScaleToZeroPodRetentionPeriodKey)
			}
			cc := s.Spec.Template.Spec.ContainerConcurrency
			target, _ := strconv.ParseFloat(ann[autoscaling.TargetAnnotationKey], 64)
			if cc == nil || *cc <= 0 || ann[autoscaling.MetricAnnotationKey] == autoscaling.Concurrency && target > float64(*cc) {
				t.Errorf("containerConcurrency = %v, want > 0 and ≥ the concurrency target %v", cc, target)
			}
			c := manifest.ServingContainer(s)
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("securityContext = %+v, want restricted", sc)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
				c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Error("want HTTP probes /readyz (readiness) and /healthz (liveness)")
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
			}

			row, ok := table[s.Name]
			if !ok {
				t.Fatalf("docs/deploy.md's autoscaling table has no row for %s", s.Name)
			}
			delete(table, s.Name)
			want := []string{ann[autoscaling.MetricAnnotationKey], ann[autoscaling.TargetAnnotationKey], strconv.FormatInt(*cc, 10),
				ann[autoscaling.MinScaleAnnotationKey], ann[autoscaling.MaxScaleAnnotationKey],
				orDash(ann[autoscaling.ScaleToZeroPodRetentionPeriodKey]), ann[autoscaling.InitialScaleAnnotationKey]}
			if diff := cmp.Diff(want, row); diff != "" {
				t.Errorf("docs/deploy.md row for %s (metric, target, containerConcurrency, min, max, retention, initial) (-manifest +docs):\n%s", s.Name, diff)
			}
		})
	}
	for name := range table {
		t.Errorf("docs/deploy.md's autoscaling table has a row for %s, which has no Knative Service", name)
	}
}

// TestDemoData: the demo data Job writes exactly ordersaga.Fixture, under
// the keys the functions read, with the Redis URL the functions use.
func TestDemoData(t *testing.T) {
	set, ps := load(t, "deploy/demo/seed-job.yaml")
	if len(ps) > 0 || len(set.Skipped) != 1 {
		t.Fatalf("deploy/demo/seed-job.yaml: %v, %d objects of skipped kinds, want one Job", ps, len(set.Skipped))
	}
	job := set.Skipped[0].Value.(*unstructured.Unstructured)
	containers, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0].(map[string]any)
	env, _, _ := unstructured.NestedSlice(c, "env")
	ref, _, _ := unstructured.NestedStringMap(env[0].(map[string]any), "valueFrom", "secretKeyRef")
	if len(env) != 1 || ref["name"] != "ksaga-redis" || ref["key"] != "REDIS_URL" {
		t.Errorf("env = %v, want REDIS_URL from the ksaga-redis Secret", env)
	}
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	if len(args) != 1 {
		t.Fatalf("args = %q, want one script", args)
	}
	_, body, ok := strings.Cut(args[0], "<<'COMMANDS'\n")
	body, _, ok2 := strings.Cut(body, "\nCOMMANDS\n")
	if !ok || !ok2 {
		t.Fatalf("the script has no <<'COMMANDS' ... COMMANDS block:\n%s", args[0])
	}
	var want []string
	for _, u := range ordersaga.Fixture.Users {
		want = append(want,
			fmt.Sprintf("HSETNX %s username %s", ordersaga.UserKey(u.ID), u.Username),
			fmt.Sprintf("HSETNX %s email %s", ordersaga.UserKey(u.ID), u.Email),
			fmt.Sprintf("SETNX %s %d", ordersaga.BalanceKey(u.ID), u.BalanceCents))
	}
	for _, p := range ordersaga.Fixture.Products {
		want = append(want,
			fmt.Sprintf("SETNX %s %d", ordersaga.CatalogKey(p.SKU), p.PriceCents),
			fmt.Sprintf("SETNX %s %d", ordersaga.StockKey(p.SKU), p.Stock))
	}
	for _, w := range want {
		if n := len(strings.Fields(w)); n != 3 && n != 4 || strings.ContainsAny(w, "\"'\\") {
			t.Fatalf("a fixture value needs quoting for redis-cli: %q", w)
		}
	}
	if diff := cmp.Diff(want, strings.Split(body, "\n")); diff != "" {
		t.Errorf("seed commands (-ordersaga.Fixture +seed-job.yaml):\n%s", diff)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// docsTable reads docs/deploy.md's autoscaling table: function →
// [metric, target, containerConcurrency, min, max, retention, initial].
func docsTable(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path("docs/deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := make(map[string][]string)
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| function | metric |") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| ---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 8 {
			t.Fatalf("docs/deploy.md: short table row %q", line)
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		rows[cells[0]] = cells[1:8]
	}
	if len(rows) == 0 {
		t.Fatal("docs/deploy.md has no table starting with | function | metric |")
	}
	return rows
}

// TestBrokenCopies: deliberately broken copies of the real files (mutated in
// a temporary folder) fail Knative's validation at the expected field path.
// Each mutation must apply to the current file, so the table keeps testing
// the real manifests as they change.
func TestBrokenCopies(t *testing.T) {
	const tmpl = "spec.template.metadata.annotations."
	tests := []struct {
		name, file string
		old, new   string
		field      string // a path the error must name
		message    string // a substring of its message or detail
	}{
		{
			name: "min-scale above max-scale", file: "manifests/31-payment.yaml",
			old: `autoscaling.knative.dev/min-scale: "0"`, new: `autoscaling.knative.dev/min-scale: "11"`,
			field: tmpl + "autoscaling.knative.dev/min-scale", message: "max-scale=10 is less than min-scale=11",
		},
		{
			name: "autoscaling annotation on the Service's metadata", file: "manifests/31-payment.yaml",
			old: "  annotations:\n    # Redis keys", new: "  annotations:\n    autoscaling.knative.dev/min-scale: \"1\"\n    # Redis keys",
			// Knative names the map, and the key in the message:
			// invalid key name "autoscaling.knative.dev/min-scale", with the
			// detail: "autoscaling annotations must be put under
			// spec.template.metadata.annotations to work".
			field: "metadata.annotations", message: `invalid key name "autoscaling.knative.dev/min-scale"`,
		},
		{
			name: "initial-scale 0 without allow-zero-initial-scale", file: "manifests/33-notification.yaml",
			old: `autoscaling.knative.dev/initial-scale: "1"`, new: `autoscaling.knative.dev/initial-scale: "0"`,
			// Knative builds this path from its message: the "field" is
			// ".../initial-scale=0 not allowed by cluster", the message "invalid value: 0".
			field: tmpl + "autoscaling.knative.dev/initial-scale=0 not allowed by cluster", message: "invalid value: 0",
		},
		{
			name: "retention period above one hour", file: "manifests/34-users.yaml",
			old: "scale-to-zero-pod-retention-period: 10m", new: "scale-to-zero-pod-retention-period: 2h",
			field: tmpl + "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
		},
		{
			// Knative checks a named probe port against the container's port
			// name (h2c for users); a number it replaces with the container port.
			name: "probe on a port name other than the container's", file: "manifests/34-users.yaml",
			old: "      httpGet:\n            path: /readyz\n", new: "      httpGet:\n            path: /readyz\n            port: grpc\n",
			field: "spec.template.spec.containers[0].readinessProbe.httpGet.port", message: "Probe port must match container port",
		},
		{
			name: "trigger without subscriber", file: "triggers/choreography/01-payment-on-order-created.yaml",
			old: "  subscriber:\n    ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      name: payment\n", new: "",
			field: "spec.subscriber.ref", message: "expected at least one, got none",
		},
		{
			name: "filter dialects mixed in one filters element", file: "triggers/choreography/01-payment-on-order-created.yaml",
			old:   "  filter:\n    attributes:\n      type: io.ksaga.order.created\n",
			new:   "  filters:\n  - exact:\n      type: io.ksaga.order.created\n    prefix:\n      source: /ksaga\n",
			field: "spec.filters[0]", message: "multiple dialects found",
		},
		{
			name: "bad backoffDelay on a trigger", file: "triggers/orchestration/03-inventory-on-reserve.yaml",
			old: "backoffDelay: PT0.2S", new: "backoffDelay: 200ms",
			field: "spec.delivery.backoffDelay",
		},
		{
			name: "bad backoffDelay on a broker", file: "brokers/kafka/broker.yaml",
			old: "backoffDelay: PT0.2S", new: "backoffDelay: 10s",
			field: "spec.delivery.backoffDelay",
		},
		{
			name: "retryAfterMax without the delivery-retryafter feature", file: "brokers/rabbitmq/broker.yaml",
			old: "    timeout: PT10S\n", new: "    timeout: PT10S\n    retryAfterMax: PT30S\n",
			field: "spec.delivery.retryAfterMax",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, err := os.ReadFile(path(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			// The real file itself is valid.
			if _, ps := load(t, tt.file); len(ps.Errors()) > 0 {
				t.Fatalf("%s itself is invalid:\n%v", tt.file, ps.Errors())
			}
			if strings.Count(string(orig), tt.old) != 1 {
				t.Fatalf("%s no longer holds %q exactly once: update the mutation", tt.file, tt.old)
			}
			copyPath := filepath.Join(t.TempDir(), filepath.Base(tt.file))
			if err := os.WriteFile(copyPath, []byte(strings.Replace(string(orig), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, ps := load(t, copyPath)
			for _, p := range ps.Errors() {
				if fieldNamed(p.Field, tt.field) && strings.Contains(p.Message+"\n"+p.Detail, tt.message) {
					return
				}
			}
			t.Errorf("want an error at %s (message containing %q), got:\n%v", tt.field, tt.message, ps)
		})
	}
}

// fieldNamed reports whether a Problem's Field (paths joined by ", ") names
// want, or a field inside it.
func fieldNamed(fields, want string) bool {
	for _, f := range strings.Split(fields, ", ") {
		if f == want || strings.HasPrefix(f, want+".") || strings.HasPrefix(f, want+"[") {
			return true
		}
	}
	return false
}
