package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// runKn runs deploy/kn.sh with env and returns its standard output.
func runKn(t *testing.T, env ...string) string {
	t.Helper()
	cmd := exec.Command("bash", path("deploy/kn.sh"))
	cmd.Env = append(os.Environ(), "DRY_RUN=1", "MODE=choreography", "BROKER=mt-channel", "REDIS=in-cluster",
		"OBSERVABILITY=0", "DEMO=0", "KO_DOCKER_REPO=", "KN=kn", "KUBECTL=kubectl")
	for _, fn := range functionNames(t) {
		cmd.Env = append(cmd.Env, imageVar(fn)+"=")
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("deploy/kn.sh %v: %v\n%s", env, err, stderr.Bytes())
	}
	return string(out)
}

// imageVar is kn.sh's IMAGE_<FUNCTION> variable of a function.
func imageVar(fn string) string {
	return "IMAGE_" + strings.ToUpper(strings.ReplaceAll(fn, "-", "_"))
}

// commands splits kn.sh's dry-run output into commands, skipping comments.
func commands(t *testing.T, out string) [][]string {
	t.Helper()
	var cmds [][]string
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		args, err := splitShell(line)
		if err != nil {
			t.Fatalf("kn.sh printed a line that is not a plain command: %v", err)
		}
		cmds = append(cmds, args)
	}
	return cmds
}

// knModel plays kn.sh's commands onto objects, the way kn and kubectl
// would turn them into API objects. It models exactly the flags the script
// uses (after knative/client's pkg/commands/service/configuration_edit_flags.go,
// pkg/flags/podspec_helper.go and the broker and trigger commands) and
// rejects any other, so that a new flag in the script needs a model here.
// Not modelled: the client.knative.dev/* annotations kn adds on its own.
type knModel struct {
	applied  []string // files and folders given to kubectl apply, in order
	objects  []any    // Services, Brokers, Triggers, SinkBindings, PingSources, in creation order
	triggers map[string]*eventingv1.Trigger
	brokers  map[string]*eventingv1.Broker
	pings    map[string]*sourcesv1.PingSource
	log      []string // one line per command, for order checks
}

func (m *knModel) run(t *testing.T, argv []string) {
	t.Helper()
	m.log = append(m.log, strings.Join(argv, " "))
	if len(argv) < 3 {
		t.Fatalf("unexpected command %q", argv)
	}
	var err error
	switch cmd := argv[0] + " " + argv[1] + " " + argv[2]; {
	case cmd == "kn service create":
		err = m.service(argv[3:])
	case cmd == "kn broker create":
		err = m.broker(argv[3:])
	case cmd == "kn trigger create":
		err = m.trigger(argv[3:])
	case cmd == "kn source binding" && len(argv) > 3 && argv[3] == "create":
		err = m.sinkBinding(argv[4:])
	case cmd == "kn source ping" && len(argv) > 3 && argv[3] == "create":
		err = m.pingSource(argv[4:])
	case argv[0] == "kubectl" && argv[1] == "apply":
		err = m.apply(argv[2:])
	case argv[0] == "kubectl" && argv[1] == "patch":
		err = m.patch(argv[2:])
	case argv[0] == "kubectl" && argv[1] == "rollout":
		// waits; nothing to model
	default:
		err = fmt.Errorf("not modelled")
	}
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
}

// flags parses "--name value" pairs (and the boolean flags given) into a
// list of name/value pairs, in order. The first argument is the object's name.
func flags(args []string, booleans ...string) (name string, fs [][2]string, err error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, fmt.Errorf("no name")
	}
	name = args[0]
	for i := 1; i < len(args); i++ {
		f := args[i]
		if !strings.HasPrefix(f, "-") {
			return "", nil, fmt.Errorf("unexpected argument %q", f)
		}
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(f, "--") {
			fs = append(fs, [2]string{k, v})
			continue
		}
		isBool := false
		for _, b := range booleans {
			isBool = isBool || f == b
		}
		if isBool {
			fs = append(fs, [2]string{f, ""})
			continue
		}
		if i+1 == len(args) {
			return "", nil, fmt.Errorf("%s needs a value", f)
		}
		fs = append(fs, [2]string{f, args[i+1]})
		i++
	}
	return name, fs, nil
}

func keyValue(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("%q: want key=value", s)
	}
	return k, v, nil
}

func (m *knModel) service(args []string) error {
	name, fs, err := flags(args, "--force", "--cluster-local")
	if err != nil {
		return err
	}
	svc := &servingv1.Service{}
	svc.APIVersion, svc.Kind, svc.Name = "serving.knative.dev/v1", "Service", name
	tmpl := &svc.Spec.Template
	var c corev1.Container
	setLabel := func(m *map[string]string, k, v string) {
		if *m == nil {
			*m = make(map[string]string)
		}
		(*m)[k] = v
	}
	for _, f := range fs {
		flag, val := f[0], f[1]
		switch flag {
		case "--force": // create or replace: the same object
		case "-n", "--namespace":
			svc.Namespace = val
		case "--image":
			c.Image = val
		case "-l", "--label", "--label-service":
			k, v, err := keyValue(val)
			if err != nil {
				return err
			}
			setLabel(&svc.Labels, k, v)
			if flag != "--label-service" {
				setLabel(&tmpl.Labels, k, v)
			}
		case "--annotation-service", "--annotation-revision":
			k, v, err := keyValue(val)
			if err != nil {
				return err
			}
			if flag == "--annotation-service" {
				setLabel(&svc.Annotations, k, v)
			} else {
				setLabel(&tmpl.Annotations, k, v)
			}
		case "--cluster-local":
			setLabel(&svc.Labels, "networking.knative.dev/visibility", "cluster-local")
		case "--env-from":
			kind, ref, ok := strings.Cut(val, ":")
			var src corev1.EnvFromSource
			switch {
			case ok && (kind == "cm" || kind == "config-map"):
				src.ConfigMapRef = &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: ref}}
			case ok && (kind == "secret" || kind == "sc"):
				src.SecretRef = &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: ref}}
			default:
				return fmt.Errorf("--env-from %q: want cm:NAME or secret:NAME", val)
			}
			c.EnvFrom = append(c.EnvFrom, src)
		case "-e", "--env":
			k, v, err := keyValue(val)
			if err != nil {
				return err
			}
			c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
		case "--env-value-from":
			k, v, err := keyValue(val)
			if err != nil {
				return err
			}
			kind, rest, _ := strings.Cut(v, ":")
			name, key, ok := strings.Cut(rest, ":")
			if !ok || (kind != "secret" && kind != "sc") {
				return fmt.Errorf("--env-value-from %q: only NAME=secret:SECRET:KEY is modelled", val)
			}
			c.Env = append(c.Env, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}})
		case "--probe-readiness", "--probe-liveness":
			p, err := knProbe(val)
			if err != nil {
				return err
			}
			if flag == "--probe-readiness" {
				c.ReadinessProbe = p
			} else {
				c.LivenessProbe = p
			}
		case "--security-context":
			if val != "strict" {
				return fmt.Errorf("--security-context %q: only strict is modelled", val)
			}
			// knative/client pkg/flags DefaultStrictSecCon.
			no, yes := false, true
			c.SecurityContext = &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no,
				RunAsNonRoot:             &yes,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			}
		case "-p", "--port":
			portName, num, ok := strings.Cut(val, ":")
			if !ok {
				portName, num = "", val
			}
			n, err := strconv.ParseInt(num, 10, 32)
			if err != nil {
				return fmt.Errorf("--port %q: %v", val, err)
			}
			c.Ports = []corev1.ContainerPort{{Name: portName, ContainerPort: int32(n)}}
		case "--concurrency-limit", "--timeout":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return fmt.Errorf("%s %q: %v", flag, val, err)
			}
			if flag == "--timeout" {
				tmpl.Spec.TimeoutSeconds = &n
			} else {
				tmpl.Spec.ContainerConcurrency = &n
			}
		case "--scale-init", "--scale-min", "--scale-max", "--scale-target", "--scale-metric":
			key := map[string]string{
				"--scale-init":   autoscaling.InitialScaleAnnotationKey,
				"--scale-min":    autoscaling.MinScaleAnnotationKey,
				"--scale-max":    autoscaling.MaxScaleAnnotationKey,
				"--scale-target": autoscaling.TargetAnnotationKey,
				"--scale-metric": autoscaling.MetricAnnotationKey,
			}[flag]
			if flag != "--scale-metric" {
				if _, err := strconv.Atoi(val); err != nil {
					return fmt.Errorf("%s %q: kn takes an integer", flag, val)
				}
			}
			setLabel(&tmpl.Annotations, key, val)
		case "--request", "--limit":
			list := corev1.ResourceList{}
			for _, kv := range strings.Split(val, ",") {
				k, v, err := keyValue(kv)
				if err != nil {
					return err
				}
				q, err := resource.ParseQuantity(v)
				if err != nil {
					return fmt.Errorf("%s %q: %v", flag, val, err)
				}
				list[corev1.ResourceName(k)] = q
			}
			if flag == "--request" {
				c.Resources.Requests = list
			} else {
				c.Resources.Limits = list
			}
		default:
			return fmt.Errorf("kn service flag %s is not modelled by this test", flag)
		}
	}
	tmpl.Spec.Containers = []corev1.Container{c}
	m.objects = append(m.objects, svc)
	return nil
}

// knProbe parses kn's [http,https]:host:port:path probe format.
func knProbe(s string) (*corev1.Probe, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || (parts[0] != "http" && parts[0] != "https") {
		return nil, fmt.Errorf("probe %q: only http[s]:host:port:path is modelled", s)
	}
	get := &corev1.HTTPGetAction{Host: parts[1], Path: parts[3]}
	if parts[0] == "https" {
		get.Scheme = corev1.URISchemeHTTPS
	}
	if parts[2] != "" {
		get.Port = intstr.Parse(parts[2])
	}
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: get}}, nil
}

// knSink parses kn's --sink / --dl-sink ksvc:NAME[:NS] and broker:NAME[:NS]
// (kn names the namespace in the reference).
func knSink(s, ns string) (*duckv1.Destination, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("sink %q: only ksvc:NAME[:NS] and broker:NAME[:NS] are modelled", s)
	}
	if len(parts) == 3 {
		ns = parts[2]
	}
	ref := &duckv1.KReference{Name: parts[1], Namespace: ns}
	switch parts[0] {
	case "ksvc":
		ref.APIVersion, ref.Kind = "serving.knative.dev/v1", "Service"
	case "broker":
		ref.APIVersion, ref.Kind = "eventing.knative.dev/v1", "Broker"
	default:
		return nil, fmt.Errorf("sink %q: only ksvc:NAME[:NS] and broker:NAME[:NS] are modelled", s)
	}
	return &duckv1.Destination{Ref: ref}, nil
}

// sinkBinding models kn source binding create NAME -n NS --subject
// KIND:APIVERSION:NAME --sink SINK.
func (m *knModel) sinkBinding(args []string) error {
	name, fs, err := flags(args)
	if err != nil {
		return err
	}
	sb := &sourcesv1.SinkBinding{}
	sb.APIVersion, sb.Kind, sb.Name = "sources.knative.dev/v1", "SinkBinding", name
	var sink string
	for _, f := range fs {
		switch flag, val := f[0], f[1]; flag {
		case "-n", "--namespace":
			sb.Namespace = val
		case "--subject":
			p := strings.Split(val, ":")
			if len(p) != 3 || strings.Contains(p[2], "=") {
				return fmt.Errorf("--subject %q: only KIND:APIVERSION:NAME is modelled", val)
			}
			sb.Spec.Subject.Kind, sb.Spec.Subject.APIVersion, sb.Spec.Subject.Name = p[0], p[1], p[2]
		case "-s", "--sink":
			sink = val
		default:
			return fmt.Errorf("kn source binding flag %s is not modelled by this test", flag)
		}
	}
	dest, err := knSink(sink, sb.Namespace)
	if err != nil {
		return err
	}
	sb.Spec.Sink = *dest
	m.objects = append(m.objects, sb)
	return nil
}

// pingSource models kn source ping create NAME -n NS --schedule CRON --sink SINK.
func (m *knModel) pingSource(args []string) error {
	name, fs, err := flags(args)
	if err != nil {
		return err
	}
	ps := &sourcesv1.PingSource{}
	ps.APIVersion, ps.Kind, ps.Name = "sources.knative.dev/v1", "PingSource", name
	var sink string
	for _, f := range fs {
		switch flag, val := f[0], f[1]; flag {
		case "-n", "--namespace":
			ps.Namespace = val
		case "--schedule":
			ps.Spec.Schedule = val
		case "-s", "--sink":
			sink = val
		default:
			return fmt.Errorf("kn source ping flag %s is not modelled by this test", flag)
		}
	}
	dest, err := knSink(sink, ps.Namespace)
	if err != nil {
		return err
	}
	ps.Spec.Sink = *dest
	if m.pings == nil {
		m.pings = make(map[string]*sourcesv1.PingSource)
	}
	m.pings[name] = ps
	m.objects = append(m.objects, ps)
	return nil
}

// knBrokerConfig parses kn's --broker-config: <kind>:<name>:<namespace> for
// ConfigMaps (cm), or <apiVersion>:<kind>:<name>:<namespace>.
func knBrokerConfig(s string) (*duckv1.KReference, error) {
	p := strings.Split(s, ":")
	switch {
	case len(p) == 3 && (p[0] == "cm" || p[0] == "configmap"):
		return &duckv1.KReference{APIVersion: "v1", Kind: "ConfigMap", Name: p[1], Namespace: p[2]}, nil
	case len(p) == 4:
		return &duckv1.KReference{APIVersion: p[0], Kind: p[1], Name: p[2], Namespace: p[3]}, nil
	}
	return nil, fmt.Errorf("--broker-config %q: form not modelled", s)
}

func (m *knModel) broker(args []string) error {
	name, fs, err := flags(args)
	if err != nil {
		return err
	}
	b := &eventingv1.Broker{}
	b.APIVersion, b.Kind, b.Name = "eventing.knative.dev/v1", "Broker", name
	d := &eventingduckv1.DeliverySpec{}
	var dls string
	for _, f := range fs {
		switch flag, val := f[0], f[1]; flag {
		case "-n", "--namespace":
			b.Namespace = val
		case "--class":
			b.Annotations = map[string]string{eventingv1.BrokerClassAnnotationKey: val}
		case "--broker-config":
			if b.Spec.Config, err = knBrokerConfig(val); err != nil {
				return err
			}
		case "--retry":
			n, err := strconv.ParseInt(val, 10, 32)
			if err != nil {
				return err
			}
			r := int32(n)
			d.Retry = &r
		case "--backoff-policy":
			p := eventingduckv1.BackoffPolicyType(val)
			d.BackoffPolicy = &p
		case "--backoff-delay":
			d.BackoffDelay = &val
		case "--timeout":
			d.Timeout = &val
		case "--dl-sink":
			dls = val
		default:
			return fmt.Errorf("kn broker flag %s is not modelled by this test", flag)
		}
	}
	if dls != "" {
		if d.DeadLetterSink, err = knSink(dls, b.Namespace); err != nil {
			return err
		}
	}
	b.Spec.Delivery = d
	m.objects = append(m.objects, b)
	if m.brokers == nil {
		m.brokers = make(map[string]*eventingv1.Broker)
	}
	m.brokers[b.Name] = b
	return nil
}

func (m *knModel) trigger(args []string) error {
	name, fs, err := flags(args)
	if err != nil {
		return err
	}
	tr := &eventingv1.Trigger{}
	tr.APIVersion, tr.Kind, tr.Name = "eventing.knative.dev/v1", "Trigger", name
	tr.Spec.Broker = "default" // kn's --broker default
	var sink string
	for _, f := range fs {
		switch flag, val := f[0], f[1]; flag {
		case "-n", "--namespace":
			tr.Namespace = val
		case "--broker":
			tr.Spec.Broker = val
		case "--filter":
			k, v, err := keyValue(val)
			if err != nil {
				return err
			}
			if tr.Spec.Filter == nil {
				tr.Spec.Filter = &eventingv1.TriggerFilter{Attributes: eventingv1.TriggerFilterAttributes{}}
			}
			tr.Spec.Filter.Attributes[k] = v
		case "-s", "--sink":
			sink = val
		default:
			return fmt.Errorf("kn trigger flag %s is not modelled by this test", flag)
		}
	}
	dest, err := knSink(sink, tr.Namespace)
	if err != nil {
		return err
	}
	tr.Spec.Subscriber = *dest
	if m.triggers == nil {
		m.triggers = make(map[string]*eventingv1.Trigger)
	}
	if m.triggers[name] != nil {
		return fmt.Errorf("Trigger %s created twice", name)
	}
	m.triggers[name] = tr
	m.objects = append(m.objects, tr)
	return nil
}

// apply records kubectl apply -f FILE... / -k DIR (relative to the root).
func (m *knModel) apply(args []string) error {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-f", "-k":
			if i+1 == len(args) {
				return fmt.Errorf("%s needs a value", args[i])
			}
			m.applied = append(m.applied, args[i]+" "+args[i+1])
			i++
		default:
			return fmt.Errorf("kubectl apply argument %q is not modelled", args[i])
		}
	}
	return nil
}

// patch applies kubectl patch trigger NAME -n NS --type merge -p JSON (an
// RFC 7386 merge patch) to a Trigger created before.
func (m *knModel) patch(args []string) error {
	if len(args) != 8 || (args[0] != "trigger" && args[0] != "broker" && args[0] != "pingsource") || args[2] != "-n" || args[4] != "--type" || args[5] != "merge" || args[6] != "-p" {
		return fmt.Errorf("only `kubectl patch trigger|broker|pingsource NAME -n NS --type merge -p JSON` is modelled")
	}
	if args[0] == "pingsource" {
		ps := m.pings[args[1]]
		if ps == nil || ps.Namespace != args[3] {
			return fmt.Errorf("patch of PingSource %s/%s, which kn has not created", args[3], args[1])
		}
		return mergePatch(ps, args[7])
	}
	if args[0] == "broker" {
		b := m.brokers[args[1]]
		if b == nil || b.Namespace != args[3] {
			return fmt.Errorf("patch of Broker %s/%s, which kn has not created", args[3], args[1])
		}
		return mergePatch(b, args[7])
	}
	tr := m.triggers[args[1]]
	if tr == nil || tr.Namespace != args[3] {
		return fmt.Errorf("patch of Trigger %s/%s, which kn has not created", args[3], args[1])
	}
	return mergePatch(tr, args[7])
}

// mergePatch applies a JSON merge patch to o in place.
func mergePatch[T any](o *T, patch string) error {
	orig, err := json.Marshal(o)
	if err != nil {
		return err
	}
	patched, err := jsonpatch.MergePatch(orig, []byte(patch))
	if err != nil {
		return err
	}
	var out T
	if err := json.Unmarshal(patched, &out); err != nil {
		return err
	}
	*o = out
	return nil
}

// files returns what the model created: the applied files (absolute), and
// one file holding the objects kn created.
func (m *knModel) files(t *testing.T) []string {
	t.Helper()
	var paths []string
	for _, a := range m.applied {
		flag, p, _ := strings.Cut(a, " ")
		if flag == "-k" {
			paths = append(paths, kustomizeFiles(t, path(p))...)
		} else {
			paths = append(paths, path(p))
		}
	}
	var buf bytes.Buffer
	for _, o := range m.objects {
		j, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(y)
	}
	f := filepath.Join(t.TempDir(), "kn-objects.yaml")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(paths, f)
}

// TestKnScriptMatchesOverlays: deploy/kn.sh (DRY_RUN=1) creates, for every
// broker × mode (and with REDIS=external, OBSERVABILITY=1), exactly the
// objects of the matching rendered overlay: the kn-made Services, Broker and
// Triggers, played through a model of kn and defaulted and validated by
// Knative like the overlay's, are equal to them field for field (images,
// env, ports, probes, resources, scale annotations, containerConcurrency,
// broker class, config and delivery, trigger filters, subscribers, delivery
// and annotations), and the files it applies with kubectl supply the rest.
func TestKnScriptMatchesOverlays(t *testing.T) {
	type combo struct {
		mode, broker string
		env          []string
	}
	var combos []combo
	for _, m := range modes {
		for _, b := range brokers {
			combos = append(combos, combo{m, b, nil})
		}
	}
	combos = append(combos, combo{"orchestration", "kafka", []string{"REDIS=external", "OBSERVABILITY=1", "DEMO=1"}})
	for _, c := range combos {
		t.Run(strings.Join(append([]string{c.mode, c.broker}, c.env...), "-"), func(t *testing.T) {
			overlay, real := render(t, c.mode, c.broker, c.env...)
			want := objects(loadClean(t, overlay))

			var model knModel
			for _, argv := range commands(t, runKn(t, append([]string{"MODE=" + c.mode, "BROKER=" + c.broker}, c.env...)...)) {
				model.run(t, argv)
			}
			got := objects(loadClean(t, model.files(t)...))
			if diff := cmp.Diff(keys(want), keys(got)); diff != "" {
				t.Fatalf("objects (-kubectl apply -k +kn.sh):\n%s", diff)
			}
			var drop []string
			if !real {
				drop = componentAnnotations // the fallback rendering has no patches
			}
			for id, o := range got {
				if diff := cmp.Diff(toMap(t, want[id], drop...), toMap(t, o, drop...)); diff != "" {
					t.Errorf("%s differs (-kubectl apply -k +kn.sh):\n%s", id, diff)
				}
			}
			checkOrder(t, model.log)
		})
	}
}

// checkOrder checks the order of kn.sh's commands where it matters: the
// namespace first, Redis ready before the functions start (their readiness
// probe pings it), the Broker before its Triggers, each Trigger patched
// right after its creation, the SinkBindings after the Services and Broker
// they bind.
func checkOrder(t *testing.T, log []string) {
	t.Helper()
	first := func(prefix string) int {
		for i, l := range log {
			if strings.HasPrefix(l, prefix) {
				return i
			}
		}
		return -1
	}
	last := func(prefix string) int {
		for i := len(log) - 1; i >= 0; i-- {
			if strings.HasPrefix(log[i], prefix) {
				return i
			}
		}
		return -1
	}
	if !strings.HasPrefix(log[0], "kubectl apply -f manifests/00-namespace.yaml") {
		t.Errorf("first command %q, want the namespace", log[0])
	}
	if r := first("kubectl rollout status statefulset/redis"); r >= 0 && r > first("kn service create") {
		t.Error("Services created before Redis is ready")
	}
	if first("kn trigger create") < first("kn broker create") {
		t.Error("Triggers created before the Broker")
	}
	sb := first("kn source binding create")
	if sb < 0 || sb < last("kn service create") || sb < first("kn broker create") {
		t.Error("SinkBindings created before the Services or the Broker")
	}
	ping := first("kn source ping create sweeper-ping")
	if ping < 0 || ping < last("kn service create") || ping+1 == len(log) || !strings.HasPrefix(log[ping+1], "kubectl patch pingsource sweeper-ping ") {
		t.Error("the PingSource is not created after the Services and patched right after")
	}
	for i, l := range log {
		if strings.HasPrefix(l, "kn trigger create ") {
			name := strings.Fields(l)[3]
			if i+1 == len(log) || !strings.HasPrefix(log[i+1], "kubectl patch trigger "+name+" ") {
				t.Errorf("Trigger %s is not patched right after its creation", name)
			}
		}
	}
}

// TestKnScriptRunsWhatItPrints runs kn.sh for real against stub kn and
// kubectl commands that log their arguments: the commands it runs are
// exactly the ones its dry run prints (with IMAGE_<FUNCTION> images), and
// when the Broker and Triggers exist it updates them instead, keeping the
// Broker's class.
func TestKnScriptRunsWhatItPrints(t *testing.T) {
	dir := t.TempDir()
	stub := `#!/usr/bin/env bash
{ printf '%s\x1f' "$(basename "$0")" "$@"; printf '\x1e'; } >>"$STUB_LOG"
if [[ $1 == get ]]; then
  [[ ${STUB_EXISTS:-0} == 1 ]] || exit 1
  [[ " $* " == *" -o "* ]] && printf '%s' "$STUB_CLASS"
fi
exit 0
`
	for _, n := range []string{"kn", "kubectl"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stubs := []string{"KN=" + filepath.Join(dir, "kn"), "KUBECTL=" + filepath.Join(dir, "kubectl"), "KO=false"}
	var images []string
	for _, fn := range functionNames(t) {
		images = append(images, imageVar(fn)+"=registry.example.com/ksaga/"+fn+"@sha256:"+strings.Repeat("0", 64))
	}
	realRun := func(t *testing.T, env ...string) ([][]string, error) {
		logFile := filepath.Join(t.TempDir(), "log")
		cmd := exec.Command("bash", path("deploy/kn.sh"))
		cmd.Env = append(os.Environ(), "MODE=orchestration", "BROKER=rabbitmq", "REDIS=in-cluster", "OBSERVABILITY=0", "DEMO=0", "STUB_LOG="+logFile)
		cmd.Env = append(append(append(cmd.Env, stubs...), images...), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		b, err := os.ReadFile(logFile)
		if err != nil {
			return nil, err
		}
		var cmds [][]string
		for _, rec := range strings.Split(strings.TrimSuffix(string(b), "\x1e"), "\x1e") {
			argv := strings.Split(strings.TrimSuffix(rec, "\x1f"), "\x1f")
			if argv[1] != "get" {
				cmds = append(cmds, argv)
			}
		}
		return cmds, nil
	}

	t.Run("fresh namespace", func(t *testing.T) {
		got, err := realRun(t, "DRY_RUN=0")
		if err != nil {
			t.Fatal(err)
		}
		want := commands(t, runKn(t, append([]string{"MODE=orchestration", "BROKER=rabbitmq"}, images...)...))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("commands run (-dry run +real run):\n%s", diff)
		}
	})
	t.Run("existing objects", func(t *testing.T) {
		got, err := realRun(t, "DRY_RUN=0", "STUB_EXISTS=1", "STUB_CLASS=RabbitMQBroker")
		if err != nil {
			t.Fatal(err)
		}
		var updates, creates int
		for _, c := range got {
			switch strings.Join(c[:3], " ") {
			case "kn broker update", "kn trigger update":
				updates++
			case "kn broker create", "kn trigger create":
				creates++
			case "kn source binding", "kn source ping":
				if c[3] == "create" {
					creates++
				} else {
					updates++
				}
			}
		}
		if creates != 0 || updates != 1+len(yamlFiles(t, path("triggers/orchestration")))+4+1 {
			t.Errorf("%d creates and %d updates of the Broker and Triggers, want only updates", creates, updates)
		}
	})
	t.Run("broker of another class", func(t *testing.T) {
		_, err := realRun(t, "DRY_RUN=0", "STUB_EXISTS=1", "STUB_CLASS=Kafka")
		if err == nil || !strings.Contains(err.Error(), "exists with class Kafka, not RabbitMQBroker") {
			t.Errorf("err = %v, want the class conflict", err)
		}
	})
	t.Run("no image", func(t *testing.T) {
		logFile := filepath.Join(t.TempDir(), "log")
		cmd := exec.Command("bash", path("deploy/kn.sh"))
		cmd.Env = append(os.Environ(), "DRY_RUN=0", "KO_DOCKER_REPO=", "IMAGE_DEADLETTER=", "STUB_LOG="+logFile,
			"KN="+filepath.Join(dir, "kn"), "KUBECTL="+filepath.Join(dir, "kubectl"))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no image for deadletter: set KO_DOCKER_REPO") {
			t.Errorf("kn.sh without images: %v: %s", err, out)
		}
		if _, err := os.Stat(logFile); err == nil {
			t.Error("kn.sh ran kn or kubectl before it had every image")
		}
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, env := range []string{"MODE=saga", "BROKER=nats", "REDIS=cloud", "DRY_RUN=yes", "OBSERVABILITY=on", "DEMO=yes"} {
			cmd := exec.Command("bash", path("deploy/kn.sh"))
			cmd.Env = append(os.Environ(), env)
			if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), strings.SplitN(env, "=", 2)[0]+"=") {
				t.Errorf("%s: %v: %s", env, err, out)
			}
		}
	})
}
