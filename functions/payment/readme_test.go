package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite the README's payment example from the files")

// TestReadmeShowsTheRealFiles: the README's "Write a saga" example is this
// function's main.go and step.go, verbatim, each in a fenced block that
// closes on a line of its own. go test ./functions/payment -update-readme
// refreshes it.
func TestReadmeShowsTheRealFiles(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	for _, name := range []string{"main.go", "step.go"} {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		header := "// functions/payment/" + name + "\n"
		block := regexp.MustCompile("(?s)```go\n" + regexp.QuoteMeta(header) + ".*?```\n")
		want := "```go\n" + header + strings.TrimRight(string(src), "\n") + "\n```\n"
		loc := block.FindStringIndex(text)
		if loc == nil {
			t.Fatalf("README.md has no ```go block starting with %q", header)
		}
		if *updateReadme {
			text = text[:loc[0]] + want + text[loc[1]:]
			continue
		}
		if text[loc[0]:loc[1]] != want {
			t.Errorf("README.md's %s is not the file (go test ./functions/payment -update-readme)", name)
		}
	}
	if *updateReadme {
		if err := os.WriteFile("../../README.md", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
