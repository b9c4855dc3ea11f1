package devoidc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// TokenFiles keeps token files up to date, as Knative does for a
// SinkBinding's subject (a Secret with the token, projected at
// /oidc/token and renewed before it expires): each file holds a token of
// one subject for one audience, replaced atomically (rename) when the
// Issuer renews it.
type TokenFiles struct {
	issuer *Issuer
	dir    string
	log    *slog.Logger

	mu    sync.Mutex
	files []*tokenFile
}

type tokenFile struct {
	path, subject, audience string
	written                 string
}

// NewTokenFiles keeps files under dir (created if needed, mode 0700).
func NewTokenFiles(issuer *Issuer, dir string, log *slog.Logger) (*TokenFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devoidc: token dir: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TokenFiles{issuer: issuer, dir: dir, log: log}, nil
}

// Add writes the token file name (a file name under the dir) for subject
// and audience and returns its path.
func (f *TokenFiles) Add(name, subject, audience string) (string, error) {
	tf := &tokenFile{path: filepath.Join(f.dir, name), subject: subject, audience: audience}
	if err := f.write(tf); err != nil {
		return "", err
	}
	f.mu.Lock()
	f.files = append(f.files, tf)
	f.mu.Unlock()
	return tf.path, nil
}

// write replaces the file's token if the issuer renewed it.
func (f *TokenFiles) write(tf *tokenFile) error {
	tok, _, err := f.issuer.Token(tf.subject, tf.audience)
	if err != nil {
		return err
	}
	if tok == tf.written {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(tf.path), ".token-*")
	if err != nil {
		return fmt.Errorf("devoidc: token file: %w", err)
	}
	_, werr := tmp.WriteString(tok)
	cerr := tmp.Close()
	if werr != nil || cerr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("devoidc: write token file: %w", errors.Join(werr, cerr))
	}
	if err := os.Rename(tmp.Name(), tf.path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("devoidc: token file: %w", err)
	}
	tf.written = tok
	return nil
}

// Run renews the files every interval until ctx is done (a minute is
// plenty: tokens live an hour and are renewed five minutes early).
func (f *TokenFiles) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		files := append([]*tokenFile(nil), f.files...)
		f.mu.Unlock()
		for _, tf := range files {
			if err := f.write(tf); err != nil {
				f.log.Warn("oidc: renew token file", "path", tf.path, "error", err)
			}
		}
	}
}
