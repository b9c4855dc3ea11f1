package knfunc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
)

// DefaultSinkTokenFile is where Knative's SinkBinding mounts its subject's
// OIDC token when the cluster has authentication-oidc enabled and the sink
// has an audience (a projected Secret, renewed before the token expires).
const DefaultSinkTokenFile = "/oidc/token"

// EnvSinkTokenFile names the token file the Sink sends, instead of
// DefaultSinkTokenFile.
const EnvSinkTokenFile = "KSAGA_SINK_TOKEN_FILE"

// SinkTokenFromEnv returns the token file a Sink sends as its bearer token:
// KSAGA_SINK_TOKEN_FILE, which must exist, or else DefaultSinkTokenFile if
// it exists, or nil (no token: what a SinkBinding gives without
// authentication-oidc).
func SinkTokenFromEnv(getenv func(string) string) (*TokenFile, error) {
	if p := getenv(EnvSinkTokenFile); p != "" {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvSinkTokenFile, err)
		}
		return &TokenFile{Path: p}, nil
	}
	if _, err := os.Stat(DefaultSinkTokenFile); err == nil {
		return &TokenFile{Path: DefaultSinkTokenFile}, nil
	}
	return nil, nil
}

// TokenFile is a bearer token kept in a file that is renewed in place (the
// kubelet swaps a projected volume's files atomically; `ksaga dev` renames a
// new file over the old). Get reads it again whenever the file changed (another
// inode, size or modification time), so a renewed token is sent from the
// next request on. A nil *TokenFile has no
// token. It is safe for concurrent use.
type TokenFile struct {
	Path string

	mu    sync.Mutex
	token string
	info  fs.FileInfo // of the file the token was read from
}

// Get returns the current token ("" for a nil TokenFile).
func (t *TokenFile) Get() (string, error) {
	if t == nil {
		return "", nil
	}
	st, err := os.Stat(t.Path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.info != nil && os.SameFile(t.info, st) && st.ModTime().Equal(t.info.ModTime()) && st.Size() == t.info.Size() {
		return t.token, nil
	}
	return t.load(st)
}

// Reload reads the file again and reports whether the token changed (a
// 401 may mean that it was renewed between the check and the request).
func (t *TokenFile) Reload() bool {
	if t == nil {
		return false
	}
	st, err := os.Stat(t.Path)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.token
	tok, err := t.load(st)
	return err == nil && tok != old
}

// load reads the file; t.mu is held.
func (t *TokenFile) load(st fs.FileInfo) (string, error) {
	b, err := os.ReadFile(t.Path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("token file " + t.Path + " is empty")
	}
	t.token, t.info = tok, st
	return tok, nil
}
