// Package devoidc plays, for `ksaga dev`, the parts of a Kubernetes cluster
// that Knative's sender identity (the authentication-oidc feature) relies on:
//
//   - an OIDC issuer, like the API server's service-account issuer: a
//     discovery document and a JSON Web Key Set (Issuer.Handler), and
//     tokens signed with go-jose for a subject and an audience (Issuer.Token,
//     cached and renewed like Knative's token provider);
//   - the identities Knative gives senders: a Trigger's OIDC service account
//     (TriggerSubject), a SinkBinding's (SourceSubject), and one named outside
//     producer for local clients that send no token (ProducerSubject);
//   - the audiences Knative names: a Broker's, and a Knative Service's
//     (ServiceAudience, the convention a Trigger's spec.subscriber.audience
//     follows, since Serving publishes none);
//   - token files a SinkBinding's subject reads (WriteTokenFile), renewed in
//     place before they expire;
//   - the Broker ingress's EventPolicy checks (Policies), with Knative's own
//     pkg/auth helpers and filters.
package devoidc

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
)

// Paths of the issuer's documents, as the Kubernetes API server serves them.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/openid/v1/jwks"
)

// TokenTTL is the lifetime of a token: an hour, as Knative requests from
// the TokenRequest API. Tokens are renewed RenewBefore their expiry.
const (
	TokenTTL    = time.Hour
	RenewBefore = 5 * time.Minute
)

// Issuer is an OIDC issuer at URL with one RSA key (RS256, what Kubernetes
// signs service-account tokens with), made at start. It is safe for
// concurrent use.
type Issuer struct {
	url    string
	key    *rsa.PrivateKey
	kid    string
	signer jose.Signer
	now    func() time.Time

	mu     sync.Mutex
	tokens map[tokenKey]cachedToken
}

type tokenKey struct{ subject, audience string }

type cachedToken struct {
	raw    string
	expiry time.Time
}

// NewIssuer returns an issuer whose iss (and discovery base) is url, e.g.
// http://localhost:8080.
func NewIssuer(url string) (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("devoidc: key: %w", err)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("devoidc: key id: %w", err)
	}
	kid := hex.EncodeToString(b)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, fmt.Errorf("devoidc: signer: %w", err)
	}
	return &Issuer{url: strings.TrimSuffix(url, "/"), key: key, kid: kid, signer: signer, now: time.Now,
		tokens: make(map[tokenKey]cachedToken)}, nil
}

// URL is the issuer's iss.
func (i *Issuer) URL() string { return i.url }

// Handler serves the discovery document at DiscoveryPath and the key set
// at JWKSPath (GET only).
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{
			"issuer":                                i.url,
			"jwks_uri":                              i.url + JWKSPath,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{string(jose.RS256)},
		})
	})
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{i.PublicKey()}})
	})
	return mux
}

// PublicKey is the issuer's verification key.
func (i *Issuer) PublicKey() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &i.key.PublicKey, KeyID: i.kid, Algorithm: string(jose.RS256), Use: "sig"}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Claims are a token's claims: the registered ones and, for a service
// account, the kubernetes.io claim the API server adds.
type Claims struct {
	jwt.Claims
	Kubernetes *KubernetesClaim `json:"kubernetes.io,omitempty"`
}

// KubernetesClaim is the kubernetes.io claim of a service-account token.
type KubernetesClaim struct {
	Namespace      string `json:"namespace"`
	ServiceAccount struct {
		Name string `json:"name"`
	} `json:"serviceaccount"`
}

// Sign signs claims as they are (tests use it for expired or misaddressed
// tokens).
func (i *Issuer) Sign(c Claims) (string, error) {
	return jwt.Signed(i.signer).Claims(c).CompactSerialize()
}

// Token returns a token of subject for audience, valid TokenTTL, reusing a
// cached one until RenewBefore its expiry.
func (i *Issuer) Token(subject, audience string) (string, time.Time, error) {
	now := i.now()
	k := tokenKey{subject, audience}
	i.mu.Lock()
	c, ok := i.tokens[k]
	i.mu.Unlock()
	if ok && now.Add(RenewBefore).Before(c.expiry) {
		return c.raw, c.expiry, nil
	}
	exp := now.Add(TokenTTL)
	claims := Claims{Claims: jwt.Claims{
		Issuer: i.url, Subject: subject, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
	}}
	if ns, name, ok := ServiceAccountOf(subject); ok {
		claims.Kubernetes = &KubernetesClaim{Namespace: ns}
		claims.Kubernetes.ServiceAccount.Name = name
	}
	raw, err := i.Sign(claims)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("devoidc: sign: %w", err)
	}
	i.mu.Lock()
	i.tokens[k] = cachedToken{raw: raw, expiry: exp}
	i.mu.Unlock()
	return raw, exp, nil
}
