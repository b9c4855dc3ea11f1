package knfunc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDC environment variables. A function reads them twice: with the prefix
// "KSAGA_OIDC_" for its CloudEvents route (sender identity: the Broker's
// Triggers), and an API can read them with its own prefix (e.g.
// "KSAGA_API_OIDC_") to authenticate its callers with NewVerifier.
const (
	envOIDCIssuer    = "ISSUER"          // the issuer tokens must come from; empty: off
	envOIDCDiscovery = "DISCOVERY_URL"   // where its discovery document is (default: the issuer)
	envOIDCAudience  = "AUDIENCE"        // the audience tokens must be issued for
	envOIDCSubjects  = "SUBJECTS"        // allowed subjects, comma-separated; a trailing * matches a prefix
	envOIDCSkew      = "CLOCK_SKEW"      // tolerance on expiry (default 30s)
	envOIDCCAFile    = "CA_FILE"         // PEM roots for the discovery and JWKS requests
	envOIDCTokenFile = "AUTH_TOKEN_FILE" // bearer token for the discovery and JWKS requests
)

// OIDCPrefix is the prefix of the sender-identity settings of a function's
// CloudEvents route.
const OIDCPrefix = "KSAGA_OIDC_"

// DefaultClockSkew is how long after its expiry a token is still accepted,
// for clocks that disagree.
const DefaultClockSkew = 30 * time.Second

// OIDCConfig says how to verify bearer tokens (JWTs) with OpenID Connect:
// the issuer's discovery document and JSON Web Key Set, the audience, the
// expiry (with ClockSkew) and, optionally, the allowed subjects. In a
// cluster with Knative's authentication-oidc feature the issuer is the
// Kubernetes API server's service-account issuer; `ksaga dev` runs its own.
// The zero value (no Issuer) means off.
type OIDCConfig struct {
	// Issuer is <prefix>ISSUER: the iss every token must carry, e.g.
	// https://kubernetes.default.svc.cluster.local. Empty: no verification.
	Issuer string
	// DiscoveryURL is <prefix>DISCOVERY_URL: where
	// /.well-known/openid-configuration is served, when not at Issuer (in a
	// cluster, https://kubernetes.default.svc, Knative's
	// oidc-discovery-base-url). Default: Issuer.
	DiscoveryURL string
	// Audience is <prefix>AUDIENCE: the aud a token must hold. Required with
	// Issuer. For a function reached through a Trigger it is the Trigger's
	// spec.subscriber.audience (Knative Serving publishes none).
	Audience string
	// Subjects is <prefix>SUBJECTS, comma-separated: the subs allowed
	// (compared like Knative's EventPolicy subjects: case-insensitive, a
	// trailing * matches any suffix). Empty: any subject the issuer vouches
	// for.
	Subjects []string
	// ClockSkew is <prefix>CLOCK_SKEW: how long after exp a token is still
	// accepted (default DefaultClockSkew; nbf gets go-oidc's 5 minutes).
	ClockSkew time.Duration
	// CAFile is <prefix>CA_FILE: PEM certificates trusted for the discovery
	// and JWKS requests, on top of the system's (in a pod:
	// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
	CAFile string
	// AuthTokenFile is <prefix>AUTH_TOKEN_FILE: a bearer token sent with the
	// discovery and JWKS requests, read again for every request (the API
	// server serves them to authenticated clients only, unless anonymous
	// discovery is allowed: /var/run/secrets/kubernetes.io/serviceaccount/token).
	AuthTokenFile string
}

// Enabled reports whether tokens are verified.
func (c OIDCConfig) Enabled() bool { return c.Issuer != "" }

// OIDCConfigFromEnv reads an OIDCConfig from the variables named prefix +
// ISSUER, DISCOVERY_URL, AUDIENCE, SUBJECTS, CLOCK_SKEW, CA_FILE and
// AUTH_TOKEN_FILE.
func OIDCConfigFromEnv(getenv func(string) string, prefix string) (OIDCConfig, error) {
	c := OIDCConfig{
		Issuer:        strings.TrimSpace(getenv(prefix + envOIDCIssuer)),
		DiscoveryURL:  strings.TrimSpace(getenv(prefix + envOIDCDiscovery)),
		Audience:      strings.TrimSpace(getenv(prefix + envOIDCAudience)),
		CAFile:        getenv(prefix + envOIDCCAFile),
		AuthTokenFile: getenv(prefix + envOIDCTokenFile),
		ClockSkew:     DefaultClockSkew,
	}
	for s := range strings.SplitSeq(getenv(prefix+envOIDCSubjects), ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Subjects = append(c.Subjects, s)
		}
	}
	var errs []error
	if v := getenv(prefix + envOIDCSkew); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s%s=%q: want a duration like 30s", prefix, envOIDCSkew, v))
		}
		c.ClockSkew = d
	}
	if err := c.validate(prefix); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

func (c OIDCConfig) validate(prefix string) error {
	if !c.Enabled() {
		if c.Audience != "" || len(c.Subjects) > 0 {
			return fmt.Errorf("%s%s is set but %s%s is not: set the issuer too, or nothing", prefix, envOIDCAudience, prefix, envOIDCIssuer)
		}
		return nil
	}
	var errs []error
	if !strings.HasPrefix(c.Issuer, "https://") && !strings.HasPrefix(c.Issuer, "http://") {
		errs = append(errs, fmt.Errorf("%s%s=%q: want an http(s) URL", prefix, envOIDCIssuer, c.Issuer))
	}
	if c.DiscoveryURL != "" && !strings.HasPrefix(c.DiscoveryURL, "https://") && !strings.HasPrefix(c.DiscoveryURL, "http://") {
		errs = append(errs, fmt.Errorf("%s%s=%q: want an http(s) URL", prefix, envOIDCDiscovery, c.DiscoveryURL))
	}
	if c.Audience == "" {
		errs = append(errs, fmt.Errorf("%s%s is required with %s%s: the audience tokens must be issued for", prefix, envOIDCAudience, prefix, envOIDCIssuer))
	}
	for _, s := range c.Subjects {
		if i := strings.IndexByte(s, '*'); i >= 0 && i != len(s)-1 {
			errs = append(errs, fmt.Errorf("%s%s: %q: '*' is only allowed at the end", prefix, envOIDCSubjects, s))
		}
	}
	return errors.Join(errs...)
}

// Claims are what a verified token says.
type Claims struct {
	Issuer   string
	Subject  string // for a Kubernetes service account: system:serviceaccount:<namespace>:<name>
	Audience []string
	Expiry   time.Time
	token    *oidc.IDToken
}

// Decode unmarshals the token's claims (all of them, as JSON) into v.
func (c Claims) Decode(v any) error {
	if c.token == nil {
		return errors.New("no token")
	}
	return c.token.Claims(v)
}

// AuthError is why a request was refused: Status is 401 (no token, or one
// that does not verify: forged, expired, another issuer or audience), 403
// (a valid token of a subject that is not allowed) or 503 (the issuer's
// keys could not be fetched: try again).
type AuthError struct {
	Status int
	Reason string
	Err    error
}

func (e *AuthError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *AuthError) Unwrap() error { return e.Err }

// AuthStatus returns the HTTP status for an error of Verify: an
// AuthError's Status, or 401.
func AuthStatus(err error) int {
	if ae, ok := errors.AsType[*AuthError](err); ok {
		return ae.Status
	}
	return http.StatusUnauthorized
}

// WriteAuthError answers a refused request: the status of AuthStatus, a
// WWW-Authenticate challenge on 401 (RFC 6750), Retry-After on 503, and the
// reason in a JSON body, {"error": reason}, as every other error of a
// function (never the token).
func WriteAuthError(w http.ResponseWriter, err error) {
	status := AuthStatus(err)
	reason := "unauthorized"
	if ae, ok := errors.AsType[*AuthError](err); ok {
		reason = ae.Reason
	}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": reason})
}

// Verifier checks bearer tokens against an OIDCConfig with go-oidc. The
// issuer's discovery document is fetched on first use (again after a
// failure, at most once a second), its keys when a token names a key not
// seen yet. Verified tokens are remembered until they expire, so a sender
// that reuses its token (Knative's dispatcher does, for up to an hour)
// costs one signature check. It is safe for concurrent use.
type Verifier struct {
	cfg    OIDCConfig
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	lastErr  error
	lastTry  time.Time
	cache    map[string]Claims
}

// maxCachedTokens bounds the verified-token cache; it is emptied when full.
const maxCachedTokens = 1024

// errIssuerUnavailable marks a failed request to the issuer.
var errIssuerUnavailable = errors.New("issuer unavailable")

// NewVerifier returns a Verifier for an enabled cfg. It does not contact
// the issuer.
func NewVerifier(cfg OIDCConfig) (*Verifier, error) {
	if !cfg.Enabled() {
		return nil, errors.New("oidc: no issuer configured")
	}
	if err := cfg.validate(""); err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	client := NewHTTPClient(10 * time.Second)
	t := client.Transport.(*http.Transport)
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.TLSClientConfig != nil {
			tc = t.TLSClientConfig.Clone()
		}
		tc.RootCAs = pool
		t.TLSClientConfig = tc
	}
	client.Transport = &issuerTransport{base: t, tokenFile: cfg.AuthTokenFile}
	return &Verifier{cfg: cfg, client: client, now: time.Now, cache: make(map[string]Claims)}, nil
}

// Config returns the verifier's configuration.
func (v *Verifier) Config() OIDCConfig { return v.cfg }

// Verify authenticates r by its Authorization: Bearer token and checks the
// subject against the allowed subjects. Errors are *AuthError (see
// AuthStatus).
func (v *Verifier) Verify(r *http.Request) (Claims, error) {
	raw, ok := BearerToken(r.Header)
	if !ok {
		return Claims{}, &AuthError{Status: http.StatusUnauthorized, Reason: "no bearer token (Authorization: Bearer <JWT>)"}
	}
	return v.VerifyToken(r.Context(), raw)
}

// VerifyToken verifies a raw JWT: issuer, audience, expiry, signature, then
// the allowed subjects.
func (v *Verifier) VerifyToken(ctx context.Context, raw string) (Claims, error) {
	now := v.now()
	v.mu.Lock()
	c, hit := v.cache[raw]
	v.mu.Unlock()
	if hit && now.Before(c.Expiry.Add(v.cfg.ClockSkew)) {
		return c, v.allowed(c)
	}
	iv, err := v.idVerifier(ctx)
	if err != nil {
		return Claims{}, &AuthError{Status: http.StatusServiceUnavailable, Reason: "token issuer unavailable", Err: err}
	}
	var failedFetch bool
	tok, err := iv.Verify(context.WithValue(ctx, fetchFailedKey{}, &failedFetch), raw)
	if err != nil {
		if failedFetch {
			return Claims{}, &AuthError{Status: http.StatusServiceUnavailable, Reason: "token issuer keys unavailable", Err: err}
		}
		return Claims{}, &AuthError{Status: http.StatusUnauthorized, Reason: "invalid token", Err: err}
	}
	c = Claims{Issuer: tok.Issuer, Subject: tok.Subject, Audience: tok.Audience, Expiry: tok.Expiry, token: tok}
	v.mu.Lock()
	if len(v.cache) >= maxCachedTokens {
		clear(v.cache)
	}
	v.cache[raw] = c
	v.mu.Unlock()
	return c, v.allowed(c)
}

// allowed checks the subject against cfg.Subjects.
func (v *Verifier) allowed(c Claims) error {
	if len(v.cfg.Subjects) == 0 || SubjectAllowed(c.Subject, v.cfg.Subjects) {
		return nil
	}
	return &AuthError{Status: http.StatusForbidden, Reason: fmt.Sprintf("subject %q is not allowed", c.Subject)}
}

// SubjectAllowed reports whether sub matches one of patterns the way
// Knative matches EventPolicy subjects: equal ignoring case, or, for a
// pattern ending in *, starting with what precedes the *.
func SubjectAllowed(sub string, patterns []string) bool {
	for _, p := range patterns {
		if strings.EqualFold(p, sub) || (strings.HasSuffix(p, "*") && strings.HasPrefix(sub, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// idVerifier returns the go-oidc verifier, running discovery if needed.
func (v *Verifier) idVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	if v.lastErr != nil && v.now().Sub(v.lastTry) < time.Second {
		return nil, v.lastErr
	}
	v.lastTry = v.now()
	// The discovery document and the key set are fetched with a context of
	// their own: the key set keeps it for later fetches.
	dctx := oidc.ClientContext(context.WithoutCancel(ctx), v.client)
	discovery := v.cfg.DiscoveryURL
	if discovery == "" {
		discovery = v.cfg.Issuer
	} else if strings.TrimSuffix(discovery, "/") != strings.TrimSuffix(v.cfg.Issuer, "/") {
		// The document is fetched from one address and names the issuer of
		// the tokens, as with Kubernetes' in-cluster address.
		dctx = oidc.InsecureIssuerURLContext(dctx, v.cfg.Issuer)
	}
	tctx, cancel := context.WithTimeout(dctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(tctx, discovery)
	if err != nil {
		v.lastErr = fmt.Errorf("discovery at %s: %w", discovery, err)
		return nil, v.lastErr
	}
	var meta struct {
		Issuer string `json:"issuer"`
	}
	if err := p.Claims(&meta); err == nil && meta.Issuer != v.cfg.Issuer {
		v.lastErr = fmt.Errorf("discovery at %s names issuer %q, want %q", discovery, meta.Issuer, v.cfg.Issuer)
		return nil, v.lastErr
	}
	keys := &fetchMarkingKeySet{remote: oidc.NewRemoteKeySet(dctx, jwksURL(p))}
	v.verifier = oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{
		ClientID:             v.cfg.Audience,
		SupportedSigningAlgs: algorithms(p),
		Now:                  func() time.Time { return v.now().Add(-v.cfg.ClockSkew) },
	})
	v.lastErr = nil
	return v.verifier, nil
}

// jwksURL reads jwks_uri from the discovery document.
func jwksURL(p *oidc.Provider) string {
	var meta struct {
		JWKS string `json:"jwks_uri"`
	}
	_ = p.Claims(&meta)
	return meta.JWKS
}

// algorithms reads the signing algorithms the issuer announces (go-oidc
// then defaults to RS256, what Kubernetes signs with).
func algorithms(p *oidc.Provider) []string {
	var meta struct {
		Algs []string `json:"id_token_signing_alg_values_supported"`
	}
	_ = p.Claims(&meta)
	return meta.Algs
}

// fetchFailedKey carries a *bool set when the key set could not be fetched.
type fetchFailedKey struct{}

// fetchMarkingKeySet tells a failed key fetch (the issuer is down: 503, to
// be retried) from a bad signature (401), which go-oidc's errors do not.
type fetchMarkingKeySet struct{ remote *oidc.RemoteKeySet }

func (k *fetchMarkingKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if err != nil && errors.Is(err, errIssuerUnavailable) {
		if p, ok := ctx.Value(fetchFailedKey{}).(*bool); ok {
			*p = true
		}
	}
	return payload, err
}

// issuerTransport adds the bearer token of AuthTokenFile to the requests to
// the issuer and turns every answer but 200 into an error marked
// errIssuerUnavailable.
type issuerTransport struct {
	base      http.RoundTripper
	tokenFile string
}

func (t *issuerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.tokenFile != "" {
		tok, err := os.ReadFile(t.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: token for the issuer: %w", errIssuerUnavailable, err)
		}
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errIssuerUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s", errIssuerUnavailable, r.URL.Redacted(), resp.Status)
	}
	return resp, nil
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive).
func BearerToken(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// RequireToken wraps a CloudEvents handler: with cfg enabled, a POST must
// carry a bearer token the Verifier accepts (401, 403 or 503 otherwise,
// logged as a security event, before the body is read); other methods pass
// (the handler answers OPTIONS and 405). It logs once, at start, whether
// tokens are required. With cfg off it returns h.
func RequireToken(h http.Handler, cfg OIDCConfig, logger *slog.Logger) (http.Handler, error) {
	if !cfg.Enabled() {
		logger.Info("sender identity off: CloudEvents are accepted without a token (set " + OIDCPrefix + envOIDCIssuer + " to require one)")
		return h, nil
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		return nil, err
	}
	logger.Info("sender identity on: CloudEvents need a bearer token", "issuer", cfg.Issuer, "audience", cfg.Audience, "subjects", strings.Join(cfg.Subjects, ","))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		c, err := v.Verify(r)
		if err != nil {
			logger.WarnContext(r.Context(), "security: request refused", "status", AuthStatus(err), "error", err.Error(),
				"subject", c.Subject, "remote", r.RemoteAddr, "ce_type", r.Header.Get("Ce-Type"))
			WriteAuthError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

// VerifierFromEnv is the authentication of an API's callers (what names
// them in the log, e.g. "order API callers"): the OIDCConfig of the
// variables with prefix (e.g. "KSAGA_API_OIDC_"), and its Verifier, or nil
// when no issuer is set. Either way it logs one line at start saying which.
func VerifierFromEnv(getenv func(string) string, prefix, what string, logger *slog.Logger) (*Verifier, error) {
	cfg, err := OIDCConfigFromEnv(getenv, prefix)
	if err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		logger.Info(what + " are not authenticated (set " + prefix + envOIDCIssuer + " and " + prefix + envOIDCAudience + " to require a bearer token)")
		return nil, nil
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		return nil, err
	}
	logger.Info(what+" need a bearer token", "issuer", cfg.Issuer, "audience", cfg.Audience)
	return v, nil
}

type callerKey struct{}

// Authenticate wraps an API's handler: every request must carry a token v
// accepts (401, 403 or 503 are answered here and logged as security
// events); the handler reads the caller with CallerOf, e.g. to refuse an
// order for another user than the token's subject with Forbidden. A nil
// Verifier (authentication off) returns h unchanged.
func (v *Verifier) Authenticate(h http.Handler, logger *slog.Logger) http.Handler {
	if v == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := v.Verify(r)
		if err != nil {
			logger.WarnContext(r.Context(), "security: request refused", "status", AuthStatus(err), "error", err.Error(),
				"subject", c.Subject, "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			WriteAuthError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// CallerOf returns the verified caller of a request that went through
// Authenticate (false when authentication is off).
func CallerOf(ctx context.Context) (Claims, bool) {
	c, ok := ctx.Value(callerKey{}).(Claims)
	return c, ok
}

// Forbidden is the error for a caller who may not do what it asks (403 by
// WriteAuthError), e.g. a subject that is not the order's user.
func Forbidden(format string, args ...any) error {
	return &AuthError{Status: http.StatusForbidden, Reason: fmt.Sprintf(format, args...)}
}
