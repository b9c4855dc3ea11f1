package knfunc_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3/jwt"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/knfunc/oidctest"
	"github.com/ksaga/ksaga/sagatest"
)

const (
	testAudience = "serving.knative.dev/service/saga/test"
	triggerSub   = "system:serviceaccount:saga:test-on-start-oidc-eventing.knative.dev-trigger"
)

// post sends a start event with an Authorization header ("" for none).
func post(t *testing.T, url, id, auth string) sagatest.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	if auth != "" {
		h.Set("Authorization", auth)
	}
	return sagatest.PostRequest(t, req, newEvent(id, "io.ksaga.test.start", id, `{}`), h)
}

// TestSenderIdentity runs a function with KSAGA_OIDC_* over real HTTP
// against a real issuer: only a token of the issuer, for the function's
// audience, unexpired and of an allowed subject gets the event to the
// step; everything else is refused before the step runs and leaves no saga.
func TestSenderIdentity(t *testing.T) {
	is := oidctest.New(t)
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	f := startFunction(t, map[string]string{
		"REDIS_URL": srv.URL(), "KSAGA_OIDC_ISSUER": is.URL, "KSAGA_OIDC_AUDIENCE": testAudience,
		"KSAGA_OIDC_SUBJECTS": "system:serviceaccount:saga:test-on-*", "KSAGA_OIDC_CLOCK_SKEW": "30s",
	}, stepSetup)

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	wrongAud := is.Claims(triggerSub, testAudience, time.Hour)
	wrongAud.Audience = jwt.Audience{"serving.knative.dev/service/saga/payment"}
	wrongIss := is.Claims(triggerSub, testAudience, time.Hour)
	wrongIss.Issuer = "https://kubernetes.default.svc.cluster.local"
	noExp := is.Claims(triggerSub, testAudience, time.Hour)
	noExp.Expiry = nil
	valid := is.Token(t, triggerSub, testAudience)

	for _, c := range []struct {
		name, auth string
		status     int
	}{
		{"no Authorization header", "", http.StatusUnauthorized},
		{"not a bearer token", "Basic dXNlcjpwdw==", http.StatusUnauthorized},
		{"not a JWT", "Bearer not-a-jwt", http.StatusUnauthorized},
		{"another audience", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, wrongAud), http.StatusUnauthorized},
		{"expired", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, is.Claims(triggerSub, testAudience, -time.Minute)), http.StatusUnauthorized},
		{"another issuer", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, wrongIss), http.StatusUnauthorized},
		{"forged: another key under the issuer's key id", "Bearer " + oidctest.Sign(t, other, is.KeyID, is.Claims(triggerSub, testAudience, time.Hour)), http.StatusUnauthorized},
		{"forged: an unknown key id", "Bearer " + oidctest.Sign(t, other, "k2", is.Claims(triggerSub, testAudience, time.Hour)), http.StatusUnauthorized},
		{"tampered payload", "Bearer " + tamper(t, valid), http.StatusUnauthorized},
		{"no expiry", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, noExp), http.StatusUnauthorized},
		{"a subject not allowed", "Bearer " + is.Token(t, "system:serviceaccount:saga:payment-on-start-oidc-eventing.knative.dev-trigger", testAudience), http.StatusForbidden},
		{"valid", "Bearer " + valid, http.StatusOK},
		{"valid, again (cached)", "Bearer " + valid, http.StatusOK},
		{"expired within the clock skew", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, is.Claims(triggerSub, testAudience, -10*time.Second)), http.StatusOK},
		{"scheme in lower case", "bearer " + valid, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := "saga-" + strings.ReplaceAll(c.name, " ", "-")
			r := post(t, f.URL, id, c.auth)
			if r.Status != c.status {
				t.Fatalf("status %d %q, want %d", r.Status, r.Body, c.status)
			}
			exists := rdb.Exists(context.Background(), "ksaga:{"+id+"}").Val() == 1
			if ok := c.status == http.StatusOK; exists != ok {
				t.Fatalf("saga stored: %v, want %v", exists, ok)
			}
			if c.status == http.StatusUnauthorized && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %v", r.Header)
			}
			if strings.Contains(r.Body, "eyJ") {
				t.Errorf("the answer echoes a token: %q", r.Body)
			}
		})
	}

	t.Run("the health routes need no token", func(t *testing.T) {
		resp, err := http.Get(f.URL + "/readyz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /readyz: %v %v", resp, err)
		}
		_ = resp.Body.Close()
	})

	t.Run("refusals are logged as security events, without the token", func(t *testing.T) {
		var refused int
		for _, l := range f.Out.Lines(t) {
			if l["msg"] == "security: request refused" {
				refused++
			}
		}
		if refused < 10 {
			t.Errorf("%d refusals logged, want every refused request", refused)
		}
		if strings.Contains(f.Out.String(), valid) {
			t.Error("the log holds a token")
		}
	})
}

// tamper changes the payload of a signed token (the subject) keeping the
// signature.
func tamper(t *testing.T, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	tok, err := jwt.ParseSigned(raw)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	c["sub"] = "system:serviceaccount:saga:test-on-anything"
	b, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

// TestSenderIdentityIssuerDown: while the issuer cannot be reached the
// function answers 503 (Knative retries it), never 200, and recovers.
func TestSenderIdentityIssuerDown(t *testing.T) {
	is := oidctest.New(t)
	is.SetDown(true)
	srv := testredis.Start(t)
	f := startFunction(t, map[string]string{"REDIS_URL": srv.URL(), "KSAGA_OIDC_ISSUER": is.URL, "KSAGA_OIDC_AUDIENCE": testAudience}, stepSetup)
	if r := post(t, f.URL, "saga-down", "Bearer "+is.Token(t, triggerSub, testAudience)); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("issuer down: %d %q, want 503", r.Status, r.Body)
	}
	is.SetDown(false)
	sagatest.Eventually(t, 10*time.Second, func() error {
		if r := post(t, f.URL, "saga-up", "Bearer "+is.Token(t, triggerSub, testAudience)); r.Status != http.StatusOK {
			return fmt.Errorf("issuer back: %d %q", r.Status, r.Body)
		}
		return nil
	})
}

// TestSenderIdentityOff: without KSAGA_OIDC_ISSUER the route takes events
// without a token, as before, and says so once at start.
func TestSenderIdentityOff(t *testing.T) {
	srv := testredis.Start(t)
	f := startFunction(t, map[string]string{"REDIS_URL": srv.URL()}, stepSetup)
	if r := post(t, f.URL, "saga-off", ""); r.Status != http.StatusOK {
		t.Fatalf("no token, OIDC off: %d %q", r.Status, r.Body)
	}
	n := strings.Count(f.Out.String(), "sender identity off")
	if n != 1 {
		t.Errorf("%d start lines about sender identity, want 1", n)
	}
}

func TestOIDCConfigFromEnv(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"off", map[string]string{}, true},
		{"on", map[string]string{"X_ISSUER": "https://issuer", "X_AUDIENCE": "a", "X_SUBJECTS": "s1, s2*", "X_CLOCK_SKEW": "1m"}, true},
		{"audience without issuer", map[string]string{"X_AUDIENCE": "a"}, false},
		{"subjects without issuer", map[string]string{"X_SUBJECTS": "s"}, false},
		{"issuer without audience", map[string]string{"X_ISSUER": "https://issuer"}, false},
		{"issuer not a URL", map[string]string{"X_ISSUER": "issuer", "X_AUDIENCE": "a"}, false},
		{"a * inside a subject", map[string]string{"X_ISSUER": "https://i", "X_AUDIENCE": "a", "X_SUBJECTS": "a*b"}, false},
		{"bad skew", map[string]string{"X_ISSUER": "https://i", "X_AUDIENCE": "a", "X_CLOCK_SKEW": "soon"}, false},
	} {
		cfg, err := knfunc.OIDCConfigFromEnv(func(k string) string { return c.env[k] }, "X_")
		if (err == nil) != c.ok {
			t.Errorf("%s: %+v, %v", c.name, cfg, err)
		}
		if c.name == "on" && (len(cfg.Subjects) != 2 || cfg.Subjects[1] != "s2*" || cfg.ClockSkew != time.Minute) {
			t.Errorf("on: %+v", cfg)
		}
	}
}

// TestVerifierForAnAPI is the helper an API uses for its callers: the
// subject comes back (the user the request is for) and other claims can be
// read; a forbidden subject is 403.
func TestVerifierForAnAPI(t *testing.T) {
	is := oidctest.New(t)
	v, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: is.URL, Audience: testAudience, Subjects: []string{"1", "2"}})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/orders", nil)
	req.Header.Set("Authorization", "Bearer "+is.Token(t, "1", testAudience))
	c, err := v.Verify(req)
	if err != nil || c.Subject != "1" || c.Issuer != is.URL {
		t.Fatalf("Verify: %+v, %v", c, err)
	}
	var all map[string]any
	if err := c.Decode(&all); err != nil || all["aud"] != testAudience {
		t.Errorf("claims: %v, %v", all, err)
	}
	req.Header.Set("Authorization", "Bearer "+is.Token(t, "3", testAudience))
	if _, err := v.Verify(req); knfunc.AuthStatus(err) != http.StatusForbidden {
		t.Errorf("subject 3: %v, want 403", err)
	}
	req.Header.Del("Authorization")
	_, err = v.Verify(req)
	if knfunc.AuthStatus(err) != http.StatusUnauthorized {
		t.Errorf("no token: %v, want 401", err)
	}
	w := httptest.NewRecorder()
	knfunc.WriteAuthError(w, err)
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" || w.Header().Get("Content-Type") != "application/json" ||
		!strings.HasPrefix(w.Body.String(), `{"error":"no bearer token`) {
		t.Errorf("WriteAuthError: %d %v %q, want 401, a challenge, and the reason as JSON", w.Code, w.Header(), w.Body)
	}
}

// TestSinkSendsItsToken: the Sink sends the SinkBinding's token file as a
// bearer token and, when the file is renewed, the new token from the next
// send on; a 401 is tried again at once only if the file was renewed in the
// meantime.
func TestSinkSendsItsToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	write := func(tok string) {
		tmp := file + ".new"
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Error(err)
		}
		if err := os.Rename(tmp, file); err != nil { // as the kubelet swaps a projected volume
			t.Error(err)
		}
	}
	var mu sync.Mutex
	var got []string
	renewOn401 := "token-2" // the broker refuses it, after renewing the file
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
		switch a {
		case "Bearer " + renewOn401:
			write("token-3")
			w.WriteHeader(http.StatusUnauthorized)
		case "Bearer token-4":
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer broker.Close()
	write("token-1")
	tf, err := knfunc.SinkTokenFromEnv(func(k string) string { return map[string]string{knfunc.EnvSinkTokenFile: file}[k] })
	if err != nil || tf == nil {
		t.Fatal(tf, err)
	}
	s := knfunc.NewSink(broker.URL, nil)
	s.Token = tf
	ctx := context.Background()
	e := newEvent("e1", "io.ksaga.test.start", "", `{}`)
	if err := s.Send(ctx, e); err != nil {
		t.Fatal(err)
	}
	write("token-2") // renewed: a new inode, whatever the clock's resolution
	if err := s.Send(ctx, e); err != nil {
		t.Fatalf("send after a 401 and a renewal: %v", err)
	}
	write("token-4") // refused, and not renewed: the 401 is final
	if err := s.Send(ctx, e); err == nil {
		t.Fatal("a 401 without a renewed token succeeded")
	}
	want := "Bearer token-1,Bearer token-2,Bearer token-3,Bearer token-4"
	if strings.Join(got, ",") != want {
		t.Fatalf("Authorization headers %q, want %q", got, want)
	}
	if _, err := knfunc.SinkTokenFromEnv(func(k string) string {
		return map[string]string{knfunc.EnvSinkTokenFile: filepath.Join(t.TempDir(), "missing")}[k]
	}); err == nil {
		t.Error("a missing KSAGA_SINK_TOKEN_FILE is accepted")
	}
}

// TestAPICallers is how an API authenticates its callers (issue 15 §5):
// off without KSAGA_API_OIDC_ISSUER (one log line, every request passes,
// no caller), on with it: 401 without a valid token, and the handler sees
// the caller's subject, refusing an order for another user with 403.
func TestAPICallers(t *testing.T) {
	var log strings.Builder
	logger := slog.New(slog.NewTextHandler(&log, nil))
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := knfunc.CallerOf(r.Context())
		if ok && c.Subject != r.URL.Query().Get("user") {
			knfunc.WriteAuthError(w, knfunc.Forbidden("the token is %s's, the order %s's", c.Subject, r.URL.Query().Get("user")))
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	do := func(h http.Handler, user, auth string) int {
		r := httptest.NewRequest(http.MethodPost, "/orders?user="+user, nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}

	off, err := knfunc.VerifierFromEnv(func(string) string { return "" }, "KSAGA_API_OIDC_", "order API callers", logger)
	if err != nil || off != nil {
		t.Fatalf("off: %v, %v", off, err)
	}
	if code := do(off.Authenticate(orders, logger), "1", ""); code != http.StatusAccepted {
		t.Errorf("off: %d", code)
	}
	if !strings.Contains(log.String(), "order API callers are not authenticated") {
		t.Errorf("no start line saying authentication is off: %s", log.String())
	}

	is := oidctest.New(t)
	env := map[string]string{"KSAGA_API_OIDC_ISSUER": is.URL, "KSAGA_API_OIDC_AUDIENCE": testAudience}
	on, err := knfunc.VerifierFromEnv(func(k string) string { return env[k] }, "KSAGA_API_OIDC_", "order API callers", logger)
	if err != nil || on == nil {
		t.Fatalf("on: %v, %v", on, err)
	}
	h := on.Authenticate(orders, logger)
	for _, c := range []struct {
		name, user, auth string
		want             int
	}{
		{"no token", "1", "", http.StatusUnauthorized},
		{"expired", "1", "Bearer " + oidctest.Sign(t, is.Key, is.KeyID, is.Claims("1", testAudience, -time.Hour)), http.StatusUnauthorized},
		{"the user's own token", "1", "Bearer " + is.Token(t, "1", testAudience), http.StatusAccepted},
		{"another user's token", "3", "Bearer " + is.Token(t, "1", testAudience), http.StatusForbidden},
	} {
		if code := do(h, c.user, c.auth); code != c.want {
			t.Errorf("%s: %d, want %d", c.name, code, c.want)
		}
	}
}
