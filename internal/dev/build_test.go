package dev

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/sagatest"
)

// TestBuildProgress: the lines of `go build -v` become progress in the log:
// each function built, every 25th dependency, and go's own messages; a
// failed build's error keeps only the compiler's lines.
func TestBuildProgress(t *testing.T) {
	var logs sagatest.Buffer
	prog := &buildProgress{log: slog.New(slog.NewTextHandler(&logs, nil)), total: 2,
		mains: map[string]bool{"example.com/m/functions/order": true, "example.com/m/functions/users": true}}
	w := newLineWriter(prog, "")
	out := "go: downloading github.com/redis/go-redis/v9 v9.23.0\n"
	for i := range 30 {
		out += "example.com/dep" + strings.Repeat("x", i) + "\n"
	}
	out += "example.com/m/functions/order\n# example.com/m/functions/users\nfunctions/users/main.go:3:2: undefined: nope\n"
	_, _ = w.Write([]byte(out))
	w.Flush()
	l := logs.String()
	for _, want := range []string{
		`msg="go: downloading github.com/redis/go-redis/v9 v9.23.0"`,
		`msg="compiling dependencies" packages=25 latest=example.com/dep` + strings.Repeat("x", 24),
		`msg="building function" function=order progress=1/2 dependencies_compiled=30`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}
	if strings.Contains(l, "users") {
		t.Errorf("a function that failed to compile was logged as built:\n%s", l)
	}
	if got := prog.errors(out); got != "go: downloading github.com/redis/go-redis/v9 v9.23.0\n# example.com/m/functions/users\nfunctions/users/main.go:3:2: undefined: nope" {
		t.Errorf("errors: %q", got)
	}
}
