package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxBinaryBytes is the size budget of one function's stripped binary.
const maxBinaryBytes = 15_000_000

// TestNoGRPCGoAndSmallBinary checks that the function speaks gRPC without
// linking grpc-go (google.golang.org/grpc alone made it 22 MiB), and that its
// stripped binary, built as for an image, stays within maxBinaryBytes.
func TestNoGRPCGoAndSmallBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "google.golang.org/grpc" || strings.HasPrefix(pkg, "google.golang.org/grpc/") {
			t.Errorf("the function depends on %s", pkg)
		}
	}
	bin := filepath.Join(t.TempDir(), "fn")
	build := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped binary: %d bytes", fi.Size())
	if fi.Size() > maxBinaryBytes {
		t.Errorf("stripped binary is %d bytes, want ≤ %d", fi.Size(), maxBinaryBytes)
	}
}
