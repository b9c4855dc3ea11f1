package deploy_test

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/ksaga/ksaga/internal/manifest"
)

// maxImageBinary bounds a function's stripped binary, a guard against
// accidental growth (a knative.dev import would add tens of MB), not a
// goal: OpenTelemetry's own OTLP exporter, which links gRPC, put every
// function at about 26 MB. (Sender identity, go-oidc and go-jose, adds
// about 0.45 MB to every function: docs/security.md.)
const maxImageBinary = 30_000_000

// functionNames returns the folders of functions/ that hold a main package.
func functionNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(path("functions"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(path("functions/" + e.Name() + "/main.go")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestFunctionLists: the lists of functions the deploy paths build and
// deploy (KSAGA_FUNCTIONS of Makefile.deploy.mk: make images and make
// docker; FUNCTIONS of deploy/kn.sh) hold every folder of functions/, once.
func TestFunctionLists(t *testing.T) {
	want := functionNames(t)
	for file, re := range map[string]*regexp.Regexp{
		"Makefile.deploy.mk": regexp.MustCompile(`(?m)^KSAGA_FUNCTIONS := (.*)$`),
		"deploy/kn.sh":       regexp.MustCompile(`(?m)^FUNCTIONS="(.*)"$`),
	} {
		b, err := os.ReadFile(path(file))
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no list of functions", file)
		}
		got := strings.Fields(string(m[1]))
		if diff := cmp.Diff(want, got, sortStrings); diff != "" {
			t.Errorf("%s lists (-functions/ +list):\n%s", file, diff)
		}
	}
}

// goMod returns go.mod's module path and go version (major.minor).
func goMod(t *testing.T) (module, goVersion string) {
	t.Helper()
	b, err := os.ReadFile(path("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "module":
			module = f[1]
		case len(f) == 2 && f[0] == "go":
			v := strings.SplitN(f[1], ".", 3)
			goVersion = strings.Join(v[:min(2, len(v))], ".")
		}
	}
	return module, goVersion
}

// dockerBuild is the Dockerfile's go build step: its environment and its go
// arguments, with FUNCTION still to substitute.
type dockerBuild struct {
	env  []string // K=V set on the command line
	args []string // after "go"
}

// dockerfile reads the Dockerfile: the go build step (TARGETOS=linux,
// TARGETARCH of this machine), the GO_VERSION default and the final base image.
func dockerfile(t *testing.T) (build dockerBuild, goVersion, base string) {
	t.Helper()
	b, err := os.ReadFile(path("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "ARG GO_VERSION="):
			goVersion = strings.TrimPrefix(line, "ARG GO_VERSION=")
		case strings.HasPrefix(line, "FROM "):
			f := strings.Fields(line)
			base = f[len(f)-1]
			if len(f) >= 4 && f[len(f)-2] == "AS" {
				base = f[len(f)-3]
			}
		case strings.HasPrefix(line, "RUN ") && strings.Contains(line, " go build "):
			if build.args != nil {
				t.Fatal("Dockerfile: more than one go build")
			}
			line = strings.NewReplacer("${FUNCTION}", "@FUNCTION@", "$FUNCTION", "@FUNCTION@",
				"$TARGETOS", "linux", "$TARGETARCH", runtime.GOARCH).Replace(strings.TrimPrefix(line, "RUN "))
			words, err := splitShell(line)
			if err != nil {
				t.Fatalf("Dockerfile go build step: %v", err)
			}
			i := 0
			for ; i < len(words) && strings.HasPrefix(words[i], "--mount="); i++ {
			}
			for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
				build.env = append(build.env, words[i])
			}
			if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
				t.Fatalf("Dockerfile: cannot read the go build step %q", line)
			}
			build.args = words[i+1:]
		}
	}
	if build.args == nil || goVersion == "" || base == "" {
		t.Fatalf("Dockerfile: go build %q, GO_VERSION %q, base %q: one is missing", build.args, goVersion, base)
	}
	return build, goVersion, base
}

// TestBuildConfig: the Dockerfile and .ko.yaml build alike: the same base
// image (distroless static, nonroot), CGO off, -trimpath, -s -w; and the
// Dockerfile's Go is go.mod's.
func TestBuildConfig(t *testing.T) {
	build, goVersion, base := dockerfile(t)
	if _, want := goMod(t); goVersion != want {
		t.Errorf("Dockerfile GO_VERSION = %s, go.mod says go %s", goVersion, want)
	}
	b, err := os.ReadFile(path(".ko.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ko struct {
		DefaultBaseImage string   `json:"defaultBaseImage"`
		DefaultEnv       []string `json:"defaultEnv"`
		DefaultFlags     []string `json:"defaultFlags"`
		DefaultLdflags   []string `json:"defaultLdflags"`
	}
	if err := yaml.UnmarshalStrict(b, &ko); err != nil {
		t.Fatalf(".ko.yaml: %v", err)
	}
	if ko.DefaultBaseImage != "gcr.io/distroless/static:nonroot" || base != ko.DefaultBaseImage {
		t.Errorf("base images: .ko.yaml %q, Dockerfile %q, want both gcr.io/distroless/static:nonroot", ko.DefaultBaseImage, base)
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if !has(ko.DefaultEnv, "CGO_ENABLED=0") || !has(build.env, "CGO_ENABLED=0") {
		t.Errorf("CGO: .ko.yaml defaultEnv %q, Dockerfile %q: want CGO_ENABLED=0 in both", ko.DefaultEnv, build.env)
	}
	for _, f := range ko.DefaultFlags {
		if !has(build.args, f) {
			t.Errorf(".ko.yaml flag %s is not in the Dockerfile's go build %q", f, build.args)
		}
	}
	if !has(ko.DefaultFlags, "-trimpath") {
		t.Error(".ko.yaml: defaultFlags lacks -trimpath")
	}
	if want := "-ldflags=" + strings.Join(ko.DefaultLdflags, " "); want != "-ldflags=-s -w" || !has(build.args, want) {
		t.Errorf(".ko.yaml defaultLdflags %q, Dockerfile go build %q: want -s -w in both", ko.DefaultLdflags, build.args)
	}
}

// TestImages: the ko:// images of manifests/ are exactly the functions, and
// every one builds with the Dockerfile's own go build line, both from the
// repository (as ko does) and from the Docker build context that
// .dockerignore leaves; the stripped binary stays under maxImageBinary, no
// function depends on a knative.dev package (they stay small and start
// fast; Knative's Go code is for the tooling), and grpc-go comes only with
// the OTLP exporter.
func TestImages(t *testing.T) {
	module, _ := goMod(t)
	set, ps := load(t, "manifests")
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	var images, want []string
	for _, s := range set.Services() {
		p, ok := manifest.KoImportPath(manifest.Image(s))
		if !ok {
			t.Errorf("Service %s: image %q is not ko://<import path>", s.Name, manifest.Image(s))
		}
		images = append(images, p)
	}
	for _, fn := range functionNames(t) {
		want = append(want, module+"/functions/"+fn)
	}
	sort.Strings(images)
	if diff := cmp.Diff(want, images); diff != "" {
		t.Errorf("ko:// images of manifests/ (-functions/ +manifests):\n%s", diff)
	}

	build, _, _ := dockerfile(t)
	context := dockerContext(t)
	out := t.TempDir()
	for _, fn := range functionNames(t) {
		t.Run(fn, func(t *testing.T) {
			t.Parallel()
			for _, dir := range []string{root, context} {
				bin := filepath.Join(out, fn+"-"+filepath.Base(dir))
				args := make([]string, len(build.args))
				for i, a := range build.args {
					args[i] = strings.ReplaceAll(a, "@FUNCTION@", fn)
					if i > 0 && build.args[i-1] == "-o" {
						args[i] = bin
					}
				}
				cmd := exec.Command("go", args...)
				cmd.Dir = dir
				// As in the build container: no GOFLAGS of this machine.
				cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOWORK=off"), build.env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					where := "the repository"
					if dir == context {
						where = "the Docker build context (.dockerignore)"
					}
					t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), where, err, out)
				}
				info, err := os.Stat(bin)
				if err != nil {
					t.Fatal(err)
				}
				if info.Size() > maxImageBinary {
					t.Errorf("%s: %d bytes stripped, want ≤ %d", fn, info.Size(), maxImageBinary)
				}
				if dir == root {
					t.Logf("%s: %.1f MB", fn, float64(info.Size())/1e6)
				}
			}

			cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./functions/"+fn)
			cmd.Dir = root
			deps, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps: %v", err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(deps)), "\n") {
				pkg, imports, _ := strings.Cut(line, " ")
				if strings.HasPrefix(pkg, "knative.dev/") {
					t.Errorf("%s depends on %s: functions must stay free of knative.dev packages", fn, pkg)
				}
				// grpc-go comes only with OpenTelemetry's OTLP exporter (its
				// config and the collector's generated service); the
				// functions' own gRPC is connect-go.
				if grpcUser(pkg) {
					continue
				}
				for _, imp := range strings.Fields(imports) {
					if strings.HasPrefix(imp, "google.golang.org/grpc") {
						t.Errorf("%s imports %s: gRPC functions use connect-go, grpc-go only comes with the OTLP exporter", pkg, imp)
					}
				}
			}
		})
	}
}

// grpcUser reports whether pkg may import grpc-go: grpc-go itself, and
// what OpenTelemetry's OTLP/HTTP exporter brings along.
func grpcUser(pkg string) bool {
	for _, p := range []string{"google.golang.org/grpc", "google.golang.org/genproto/", "github.com/grpc-ecosystem/grpc-gateway/",
		"go.opentelemetry.io/proto/otlp/collector/", "go.opentelemetry.io/otel/exporters/otlp/"} {
		if strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}

// dockerContext copies the repository into a temporary folder the way
// `docker build .` sends it: without what .dockerignore excludes. It
// supports the patterns .dockerignore uses: names and globs relative to the
// root (excluding a folder excludes what is in it) and **/<glob> (at any
// depth).
func dockerContext(t *testing.T) string {
	t.Helper()
	f, err := os.Open(path(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var patterns []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "!") || strings.Contains(strings.TrimPrefix(p, "**/"), "**") {
			t.Fatalf(".dockerignore: pattern %q is not supported by this test", p)
		}
		patterns = append(patterns, strings.TrimPrefix(p, "/"))
	}
	excluded := func(rel string) bool {
		comps := strings.Split(rel, "/")
		for _, p := range patterns {
			if q, ok := strings.CutPrefix(p, "**/"); ok {
				for _, c := range comps {
					if m, _ := filepath.Match(q, c); m {
						return true
					}
				}
				continue
			}
			for k := 1; k <= len(comps); k++ {
				if m, _ := filepath.Match(p, strings.Join(comps[:k], "/")); m {
					return true
				}
			}
		}
		return false
	}
	dst := t.TempDir()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if excluded(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(p, target)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
