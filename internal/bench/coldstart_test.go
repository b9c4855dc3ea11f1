package bench

import (
	"slices"
	"testing"
)

// TestWithPort: a cold start runs on its own port, without sender
// identity (no token is sent, and the sink's token file is ksaga dev's).
func TestWithPort(t *testing.T) {
	env := []string{"PORT=8080", "LISTEN_ADDRESS=127.0.0.1:8080", "REDIS_URL=redis://u:p@127.0.0.1:1/0", "KSAGA_OIDC_ISSUER=http://x",
		"KSAGA_OIDC_AUDIENCE=a", "KSAGA_SINK_TOKEN_FILE=/tmp/t", "K_SINK=http://localhost:1/saga/default"}
	got := withPort(env, 9000)
	want := []string{"REDIS_URL=redis://u:p@127.0.0.1:1/0", "K_SINK=http://localhost:1/saga/default", "PORT=9000", "LISTEN_ADDRESS=127.0.0.1:9000"}
	if !slices.Equal(got, want) {
		t.Errorf("withPort = %q, want %q", got, want)
	}
	if env[0] != "PORT=8080" {
		t.Error("withPort changed its input")
	}
}

// TestTailBuffer keeps the end of a function's log.
func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	for range 300 {
		_, _ = b.Write([]byte("0123456789"))
	}
	_, _ = b.Write([]byte("the end\n"))
	if s := b.String(); len(s) != 1023 || s[len(s)-7:] != "the end" {
		t.Errorf("tail %d bytes ending %q", len(s), s[max(0, len(s)-10):])
	}
}
