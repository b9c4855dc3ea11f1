package manifest

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadBytes runs everything Load, Check and ResolveEnv do on one file's
// content, without touching the disk.
func loadBytes(t testing.TB, data []byte) *Set {
	t.Helper()
	ctx, err := webhookContext(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := newLoader(ctx, DefaultNamespace)
	l.addFile("fuzz.yaml", data)
	_ = l.set.Problems.Error()
	for _, p := range Check(l.set, CheckOptions{EmittedTypes: map[string]bool{"a": true}}) {
		_ = p.String()
	}
	for _, svc := range l.set.Services() {
		_, _ = ResolveEnv(l.set, svc)
		_, _ = ContainerPort(svc)
		_, _ = KoImportPath(Image(svc))
	}
	return l.set
}

// testdataFiles returns the content of every YAML file under testdata.
func testdataFiles(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	err := filepath.WalkDir("testdata", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		out = append(out, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzLoad feeds arbitrary bytes through loading, validation, Check and
// ResolveEnv: nothing may panic. Run with
// `go test -fuzz FuzzLoad ./internal/manifest/`.
func FuzzLoad(f *testing.F) {
	for _, b := range testdataFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		loadBytes(t, data)
	})
}

// TestGarbageDoesNotPanic is a deterministic, always-on cousin of FuzzLoad:
// mutated copies of the testdata, random token soup, and the CESQL inputs
// that make the upstream parser panic.
func TestGarbageDoesNotPanic(t *testing.T) {
	seeds := testdataFiles(t)
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := []string{
		"apiVersion: ", "kind: ", "metadata:", "  name: ", "spec:", "  filters:", "    - cesql: ", "exact:", "any:", "not:",
		"eventing.knative.dev/v1", "serving.knative.dev/v1", "sources.knative.dev/v1", "v1", "apps/v1", "Trigger", "Broker",
		"Service", "SinkBinding", "Secret", "ConfigMap", "---", "\n", "  ", "- ", ": ", "[", "]", "{", "}", "'", "\"", "&a", "*a",
		"!!binary", "~", "null", "0", "-1", "1e400", "PT0.2S", "$(", ")", "ko://", "\x00", "\xff", "é", "#", "|", ">",
		"type = = 'x'", "type =", "subject = 'a' OR", "delivery:", "retry: ", "subscriber:", "ref:", "uri: ", "env:", "valueFrom:",
	}
	mutate := func(b []byte) []byte {
		b = []byte(string(b))
		switch rng.IntN(5) {
		case 0: // flip bytes
			for range 1 + rng.IntN(8) {
				if len(b) > 0 {
					b[rng.IntN(len(b))] = byte(rng.IntN(256))
				}
			}
		case 1: // truncate
			if len(b) > 0 {
				b = b[:rng.IntN(len(b))]
			}
		case 2: // delete a line
			lines := strings.Split(string(b), "\n")
			i := rng.IntN(len(lines))
			b = []byte(strings.Join(append(lines[:i], lines[i+1:]...), "\n"))
		case 3: // insert a token
			i := rng.IntN(len(b) + 1)
			tok := tokens[rng.IntN(len(tokens))]
			b = append(b[:i:i], append([]byte(tok), b[i:]...)...)
		case 4: // swap indentation
			b = []byte(strings.ReplaceAll(string(b), "  ", strings.Repeat(" ", rng.IntN(4))))
		}
		return b
	}

	inputs := [][]byte{
		nil, []byte("---"), []byte("--- # c\n---\n"), []byte("[]"), []byte("- a\n- b"), []byte("42"), []byte("\xef\xbb\xbf"),
		[]byte("apiVersion: 1\nkind: [x]"), []byte("apiVersion: v1\nkind: Secret\nmetadata: 3\n"),
		[]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 1}\n"),
	}
	for _, expr := range []string{"type = = 'x'", "type =", "subject = 'a' OR", "foo(", "'", "((((", "a LIKE"} {
		inputs = append(inputs, []byte("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n"+
			"spec:\n  broker: default\n  subscriber: {uri: 'http://x/'}\n  filters:\n    - cesql: \""+expr+"\"\n"+
			"    - not: {any: [{cesql: \""+expr+"\"}]}\n"))
	}
	for range 3000 {
		if rng.IntN(3) == 0 {
			var sb strings.Builder
			for range rng.IntN(60) {
				sb.WriteString(tokens[rng.IntN(len(tokens))])
			}
			inputs = append(inputs, []byte(sb.String()))
			continue
		}
		b := seeds[rng.IntN(len(seeds))]
		for range 1 + rng.IntN(3) {
			b = mutate(b)
		}
		inputs = append(inputs, b)
	}
	for i, in := range inputs {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("input %d panicked: %v\n%s", i, r, in)
				}
			}()
			loadBytes(t, in)
		}()
	}
}

func TestCESQLPanicsBecomeProblems(t *testing.T) {
	for _, expr := range []string{"type = = 'x'", "type =", "subject = 'a' OR"} {
		set := loadBytes(t, []byte("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n"+
			"spec:\n  broker: default\n  subscriber: {uri: 'http://x/'}\n  filters:\n    - exact: {type: a}\n    - all: [{cesql: \""+expr+"\"}]\n"))
		errs := set.Problems.Errors()
		if len(errs) != 1 || errs[0].Field != "spec.filters[1].all[0].cesql" || errs[0].Message != "invalid value: "+expr {
			t.Errorf("%q: problems = %v", expr, set.Problems)
		}
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "# header\n\na: 1\n---\n--- # only a comment\n# c\n---\r\nb: 2\r\n---x: not a separator\n  ---\n" +
		"--- \n\n\nc: 3\n---"
	var got []string
	for _, d := range splitDocuments("f.yaml", []byte(in)) {
		got = append(got, strings.Join([]string{d.Source.String(), strings.TrimSpace(string(d.data))}, " "))
		_ = d.Index
	}
	want := []string{
		"f.yaml:3 a: 1",
		"f.yaml:8 b: 2\n---x: not a separator\n  ---",
		"f.yaml:14 c: 3",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("splitDocuments =\n%q\nwant\n%q", got, want)
	}
	docs := splitDocuments("f.yaml", []byte(in))
	if docs[0].Index != 0 || docs[1].Index != 3 || docs[2].Index != 4 {
		t.Errorf("indexes = %d %d %d, want 0 3 4", docs[0].Index, docs[1].Index, docs[2].Index)
	}
}

func TestFeatureFlags(t *testing.T) {
	flags, err := featureFlags(map[string]string{
		"delivery-retryafter":            "Enabled",
		"delivery-timeout":               "disabled",
		"transport-encryption":           "strict",
		"default-authorization-mode":     "deny-all",
		"requestreply-default-timeout":   "PT10S",
		"oidc-discovery-base-url":        "https://example.com",
		"_example":                       "ignored",
		"apiserversources-nodeselector-": "x",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !flags.IsEnabled("delivery-retryafter") || flags.IsEnabled("delivery-timeout") || !flags.IsStrictTransportEncryption() ||
		!flags.IsAuthorizationDefaultModeDenyAll() || flags.RequestReplyDefaultTimeout() != "PT10S" || flags["_example"] != "" {
		t.Errorf("flags = %v", flags)
	}
	for _, bad := range []map[string]string{{"delivery-timeout": "on"}, {"delivery-timeout": "strict"}} {
		if _, err := featureFlags(bad); err == nil {
			t.Errorf("featureFlags(%v) accepted", bad)
		}
	}
}
