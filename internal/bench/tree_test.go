package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestGitTreeIgnoresResults: the changes a report lists are the code's,
// not the results earlier runs wrote.
func TestGitTreeIgnoresResults(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q")
	write("main.go", "package main\n")
	write("docs/benchmarks/results/latest.md", "old\n")
	git("add", ".")
	git("commit", "-q", "-m", "init")

	write("docs/benchmarks/results/latest.md", "new\n")
	write("docs/benchmarks/results/20261125T000000Z.md", "run\n")
	if got := gitTree(dir, filepath.Join(dir, DefaultOut)); got.Commit == "" || len(got.Dirty) != 0 {
		t.Fatalf("only results changed: %+v", got)
	}
	write("main.go", "package main // changed\n")
	write("new.go", "package main\n")
	if got := gitTree(dir, filepath.Join(dir, DefaultOut)).Dirty; !slices.Equal(got, []string{"M main.go", "?? new.go"}) {
		t.Fatalf("Dirty = %q", got)
	}
}
