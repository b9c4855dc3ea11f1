package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ksaga/ksaga/internal/manifest"
)

// root is the repository root; `go test` runs in deploy/.
var root = func() string {
	r, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return r
}()

// path returns the absolute path of a slash-separated path of the repository.
func path(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }

var (
	modes   = []string{"choreography", "orchestration"}
	brokers = []string{"mt-channel", "kafka", "rabbitmq"}
	// brokerClass is the eventing.knative.dev/broker.class of brokers/<name>.
	brokerClass = map[string]string{
		"mt-channel": "MTChannelBasedBroker",
		"kafka":      "Kafka",
		"rabbitmq":   "RabbitMQBroker",
	}
)

// loadOptions is the context the admission webhooks would have. The
// manifests rely on one Eventing feature: spec.delivery.timeout of Brokers
// and Triggers ("delivery-timeout", Beta, enabled by default). It is named
// here so that the dependency is explicit: a cluster that switched it off
// would reject the manifests, and so would this test without it.
var loadOptions = []manifest.Option{
	manifest.WithNamespace("saga"),
	manifest.WithFeatures(map[string]string{"delivery-timeout": "enabled"}),
}

// load loads paths (relative to the repository root, or absolute) with
// Knative's defaulting and validation, and returns the Set and every problem
// (errors and warnings).
func load(t *testing.T, paths ...string) (*manifest.Set, manifest.Problems) {
	t.Helper()
	abs := make([]string, len(paths))
	for i, p := range paths {
		if !filepath.IsAbs(p) {
			p = path(p)
		}
		abs[i] = p
	}
	set, err := manifest.Load(abs, loadOptions...)
	var ps manifest.Problems
	if err != nil && !errors.As(err, &ps) {
		t.Fatalf("Load(%v): %v", paths, err)
	}
	return set, set.Problems
}

// loadClean loads paths and fails the test on any problem, error or
// warning, of Load or of Check (the cross-object checks of ksaga validate,
// with the event types the functions declare they emit).
func loadClean(t *testing.T, paths ...string) *manifest.Set {
	t.Helper()
	set, ps := load(t, paths...)
	if len(ps) > 0 {
		t.Fatalf("Load(%v):\n%v", paths, ps)
	}
	if ps := manifest.Check(set, manifest.CheckOptions{EmittedTypes: emittedTypes(set)}); len(ps) > 0 {
		t.Fatalf("Check(%v):\n%v", paths, ps)
	}
	return set
}

// emittedTypes collects the ksaga.io/emits annotations of the Knative Services.
func emittedTypes(set *manifest.Set) map[string]bool {
	m := make(map[string]bool)
	for _, s := range set.Services() {
		for _, typ := range strings.Split(s.Annotations["ksaga.io/emits"], ",") {
			if typ = strings.TrimSpace(typ); typ != "" {
				m[typ] = true
			}
		}
	}
	return m
}

// objects returns the API objects of a set (decoded and skipped kinds, not the
// Kustomization files), keyed by "Kind namespace/name".
func objects(set *manifest.Set) map[string]*manifest.Object {
	m := make(map[string]*manifest.Object)
	for _, list := range [][]*manifest.Object{set.Objects, set.Skipped} {
		for _, o := range list {
			if o.Kind != "Kustomization" {
				m[o.ID.String()] = o
			}
		}
	}
	return m
}

// keys returns the sorted keys of m.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// toMap returns an object's value (after defaulting) as JSON-like data, with
// the annotations whose key starts with one of dropAnnotations removed.
func toMap(t *testing.T, o *manifest.Object, dropAnnotations ...string) map[string]any {
	t.Helper()
	var v any = o.Value
	if u, ok := v.(*unstructured.Unstructured); ok {
		v = u.Object
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: %v", o.ID, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", o.ID, err)
	}
	if meta, ok := m["metadata"].(map[string]any); ok {
		if ann, ok := meta["annotations"].(map[string]any); ok {
			for k := range ann {
				for _, p := range dropAnnotations {
					if strings.HasPrefix(k, p) {
						delete(ann, k)
					}
				}
			}
			if len(ann) == 0 {
				delete(meta, "annotations")
			}
		}
	}
	return m
}

// kustomization is the part of a kustomization.yaml these tests read.
type kustomization struct {
	Resources  []string `json:"resources"`
	Components []string `json:"components"`
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// kustomizeFiles returns the resource files a kustomization includes,
// following resource folders (other kustomizations) and the resources of its
// components recursively. Patches are not applied.
func kustomizeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	k := readKustomization(t, dir)
	for _, c := range k.Components {
		files = append(files, kustomizeFiles(t, filepath.Join(dir, filepath.FromSlash(c)))...)
	}
	for _, r := range k.Resources {
		p := filepath.Join(dir, filepath.FromSlash(r))
		info, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s/kustomization.yaml: resource %s: %v", dir, r, err)
		}
		if info.IsDir() {
			files = append(files, kustomizeFiles(t, p)...)
		} else {
			files = append(files, p)
		}
	}
	return files
}

// yamlFiles returns the *.yaml and *.yml files under dir, recursively, as
// Load finds them, without the kustomization.yaml files.
func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(p))
		if !d.IsDir() && (ext == ".yaml" || ext == ".yml") && d.Name() != "kustomization.yaml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// kubectl reports whether `kubectl kustomize` can render the overlays here.
var kubectl = sync.OnceValue(func() error {
	if _, err := exec.LookPath("kubectl"); err != nil {
		return err
	}
	if out, err := exec.Command("kubectl", "kustomize", "--help").CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl kustomize: %v: %s", err, out)
	}
	return nil
})

// render writes the manifests of one deployment to a file and returns its
// path, and whether kustomize itself rendered it (patches applied). With
// kubectl it runs deploy/render.sh, as `make deploy` does, with the
// environment env (REDIS=..., OBSERVABILITY=...). Without kubectl it
// concatenates the files the overlay and its components list (following
// folders), without patches; REDIS=external then skips the test, since only
// a patch can leave Redis out.
func render(t *testing.T, mode, broker string, env ...string) (file string, real bool) {
	t.Helper()
	file = filepath.Join(t.TempDir(), mode+"-"+broker+".yaml")
	if err := kubectl(); err == nil {
		cmd := exec.Command("bash", path("deploy/render.sh"))
		cmd.Env = append(append(os.Environ(), "MODE="+mode, "BROKER="+broker, "REDIS=in-cluster", "OBSERVABILITY=0", "DEMO=0", "OIDC=0",
			"KUSTOMIZE=kubectl kustomize"), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("deploy/render.sh MODE=%s BROKER=%s %v: %v\n%s", mode, broker, env, err, stderr.Bytes())
		}
		if err := os.WriteFile(file, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return file, true
	}
	dirs := []string{path("deploy/overlays/" + mode + "-" + broker)}
	for _, e := range env {
		switch e {
		case "OBSERVABILITY=1":
			dirs = append(dirs, path("deploy/components/observability"))
		case "DEMO=1":
			dirs = append(dirs, path("deploy/components/demo-data"))
		case "REDIS=in-cluster", "OBSERVABILITY=0", "DEMO=0", "OIDC=0":
		default:
			t.Skipf("%s needs kustomize itself: %v", e, kubectl())
		}
	}
	var files []string
	for _, d := range dirs {
		files = append(files, kustomizeFiles(t, d)...)
	}
	var buf bytes.Buffer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
		buf.WriteString("\n")
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, false
}

// splitShell splits a command line into words: bare words, '...' (no
// escapes inside), "..." (no $, ` or \ inside) and \x outside quotes. It
// rejects anything else a shell would expand.
func splitShell(line string) ([]string, error) {
	var (
		args []string
		cur  strings.Builder
		word bool
	)
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case ' ', '\t':
			if word {
				args = append(args, cur.String())
				cur.Reset()
				word = false
			}
		case '\'', '"':
			end := strings.IndexByte(line[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c in %q", c, line)
			}
			s := line[i+1 : i+1+end]
			if c == '"' && strings.ContainsAny(s, "$`\\") {
				return nil, fmt.Errorf("expansion inside \"...\" in %q", line)
			}
			cur.WriteString(s)
			word = true
			i += end + 1
		case '\\':
			if i+1 == len(line) {
				return nil, fmt.Errorf("trailing \\ in %q", line)
			}
			i++
			cur.WriteByte(line[i])
			word = true
		case '$', '`', '|', '&', ';', '<', '>', '(', ')', '*', '?', '[', '#', '~':
			if c == '#' && word || c == '~' && word {
				cur.WriteByte(c)
				continue
			}
			return nil, fmt.Errorf("unsupported shell syntax %q in %q", c, line)
		default:
			cur.WriteByte(c)
			word = true
		}
	}
	if word {
		args = append(args, cur.String())
	}
	return args, nil
}
