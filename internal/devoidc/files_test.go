package devoidc

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestTokenFilesAreRenewed: a token file is written at once (mode 0600 in
// a 0700 folder) and replaced by a renewal run once the issuer renews the
// token, RenewBefore its expiry; before that, runs leave it alone.
func TestTokenFilesAreRenewed(t *testing.T) {
	is, err := NewIssuer("http://localhost:1")
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	var reads atomic.Int64 // the issuer's clock is read by every write a run makes
	is.now = func() time.Time { reads.Add(1); return clock }
	dir := filepath.Join(t.TempDir(), "tokens")
	files, err := NewTokenFiles(is, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	path, err := files.Add("order.token", ServiceAccountSubject("saga", "sb"), BrokerAudience("saga", "default"))
	if err != nil {
		t.Fatal(err)
	}
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %v, want 0700", st.Mode().Perm())
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	first := read()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	before := reads.Load()
	go func() { defer close(done); files.Run(ctx, time.Millisecond) }()
	for deadline := time.Now().Add(10 * time.Second); reads.Load() < before+3; { // a few runs; the token is still fresh
		if time.Now().After(deadline) {
			t.Fatal("no renewal run within 10s")
		}
		runtime.Gosched()
	}
	cancel()
	<-done
	if read() != first {
		t.Fatal("a fresh token was replaced")
	}

	clock = clock.Add(TokenTTL - RenewBefore + time.Second)
	if err := files.write(files.files[0]); err != nil {
		t.Fatal(err)
	}
	if second := read(); second == first || second == "" {
		t.Fatal("the token was not renewed")
	}
}
