// Package oidctest is a real OpenID Connect issuer for tests: a discovery
// document and a JSON Web Key Set served over HTTP on a free loopback port,
// as the Kubernetes API server's service-account issuer (or an identity
// provider) serves them, and RS256 tokens signed with go-jose. A function
// under test points its knfunc OIDC settings at Issuer.URL
// (KSAGA_OIDC_ISSUER for its CloudEvents route, KSAGA_API_OIDC_ISSUER for
// an API's callers) and gets requests carrying Issuer.Token — or forged,
// expired or misdirected tokens built with Claims and Sign.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
)

// Paths the issuer serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/openid/v1/jwks"
)

// Issuer is one issuer with one RSA key, for one test.
type Issuer struct {
	// URL is the issuer (iss) and where its discovery document is.
	URL string
	// Key signs its tokens; KeyID names it in their header and its key set.
	Key   *rsa.PrivateKey
	KeyID string

	fetches atomic.Int32
	down    atomic.Bool
}

// New starts an issuer, closed at the end of the test.
func New(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{Key: key, KeyID: "k1"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case DiscoveryPath:
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.URL, "jwks_uri": is.URL + JWKSPath,
				"id_token_signing_alg_values_supported": []string{"RS256"}})
		case JWKSPath:
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: is.KeyID, Algorithm: "RS256", Use: "sig"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	return is
}

// Fetches counts the requests for the discovery document and the key set.
func (is *Issuer) Fetches() int { return int(is.fetches.Load()) }

// SetDown makes the issuer answer 503 to everything (true) or serve again.
func (is *Issuer) SetDown(down bool) { is.down.Store(down) }

// Claims are valid claims of this issuer for sub and audience, issued a
// minute ago, expiring in exp (negative: expired).
func (is *Issuer) Claims(sub, audience string, exp time.Duration) jwt.Claims {
	now := time.Now()
	return jwt.Claims{Issuer: is.URL, Subject: sub, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(exp))}
}

// Token is a valid token of sub for audience, for an hour, with extra
// claims (maps or structs, merged into the token's claims) if any.
func (is *Issuer) Token(t testing.TB, sub, audience string, extra ...any) string {
	t.Helper()
	return Sign(t, is.Key, is.KeyID, append([]any{is.Claims(sub, audience, time.Hour)}, extra...)...)
}

// Sign signs claims (merged, in order) with key under key id kid: with the
// issuer's own key for a valid token, with another for a forgery.
func Sign(t testing.TB, key *rsa.PrivateKey, kid string, claims ...any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	b := jwt.Signed(s)
	for _, c := range claims {
		b = b.Claims(c)
	}
	raw, err := b.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
