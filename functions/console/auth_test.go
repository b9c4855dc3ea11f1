package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ksaga/ksaga/knfunc/oidctest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

const consoleAudience = "ksaga-console"

// startOIDC runs the console with operators' OIDC tokens of is (subjects
// allowed: ops:*) and, unless token is "", the shared token too.
func startOIDC(t *testing.T, is *oidctest.Issuer, token string) console {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	defs, err := json.Marshal([]*saga.Definition{ordersaga.Saga})
	if err != nil {
		t.Fatal(err)
	}
	b := sagatest.NewBroker(t)
	env := map[string]string{"REDIS_URL": url, "K_SERVICE": "console", "K_SINK": b.URL, "KSAGA_SAGAS": string(defs),
		"KSAGA_CONSOLE_OIDC_ISSUER": is.URL, "KSAGA_CONSOLE_OIDC_AUDIENCE": consoleAudience, "KSAGA_CONSOLE_OIDC_SUBJECTS": "ops:*"}
	if token != "" {
		env["KSAGA_CONSOLE_TOKEN"] = token
	}
	return console{sagatest.Start(t, setup, env), b, sagatest.New(t, ordersaga.Saga, rdb)}
}

// TestOperatorsOIDC: with KSAGA_CONSOLE_OIDC_* an action may carry an
// operator's JWT, verified against a real issuer over HTTP (discovery and
// keys, knfunc/oidctest): its subject is the actor in the saga's history,
// whatever Ksaga-Actor says; a token for another audience, expired, forged
// or neither a JWT nor the shared token is 401, a subject that is not an
// operator's 403, and none acts. The shared token keeps working beside it.
func TestOperatorsOIDC(t *testing.T) {
	is := oidctest.New(t)
	c := startOIDC(t, is, "s3cret")
	c.kit.Run("s1", order, ordersaga.PayAuthorized)
	c.kit.Run("s2", order, ordersaga.PayAuthorized)
	forged := oidctest.New(t).Key
	for name, tc := range map[string]struct {
		auth string
		want int
	}{
		"another audience":        {is.Token(t, "ops:bob", "ksaga-order-api"), http.StatusUnauthorized},
		"expired":                 {oidctest.Sign(t, is.Key, is.KeyID, is.Claims("ops:bob", consoleAudience, -time.Hour)), http.StatusUnauthorized},
		"forged":                  {oidctest.Sign(t, forged, is.KeyID, is.Claims("ops:bob", consoleAudience, time.Hour)), http.StatusUnauthorized},
		"not a JWT nor the token": {"s3cret-not", http.StatusUnauthorized},
		"not an operator":         {is.Token(t, "user:1", consoleAudience), http.StatusForbidden},
	} {
		if status, _, body := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer "+tc.auth); status != tc.want {
			t.Errorf("%s: %d %s, want %d", name, status, body, tc.want)
		}
	}
	if st := c.kit.Record("s1"); st.Status != saga.StatusRunning || len(c.broker.Events()) != 0 {
		t.Fatalf("a refused abort acted: %s, %d events", st.Status, len(c.broker.Events()))
	}

	status, _, body := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer "+is.Token(t, "ops:bob", consoleAudience), "Ksaga-Actor", "alice")
	if status != http.StatusAccepted {
		t.Fatalf("abort with bob's token: %d %s", status, body)
	}
	st := c.kit.Record("s1")
	if last := st.Steps[len(st.Steps)-1]; st.Status != saga.StatusCompensating || last.Actor != "ops:bob" {
		t.Fatalf("saga %s, last %+v: want the token's subject as the actor", st.Status, last)
	}
	status, _, body = c.call(t, http.MethodPost, "/api/v1/sagas/s2/abort", "Authorization", "Bearer s3cret", "Ksaga-Actor", "carol")
	if st := c.kit.Record("s2"); status != http.StatusAccepted || st.Steps[len(st.Steps)-1].Actor != "carol (token)" {
		t.Fatalf("abort with the shared token: %d %s", status, body)
	}
}

// TestOperatorsOIDCOnly: OIDC without a shared token: a JWT acts, nothing
// else does.
func TestOperatorsOIDCOnly(t *testing.T) {
	is := oidctest.New(t)
	c := startOIDC(t, is, "")
	c.kit.Run("s1", order, ordersaga.PayAuthorized)
	if status, _, _ := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer change-me"); status != http.StatusUnauthorized {
		t.Fatalf("a static token without KSAGA_CONSOLE_TOKEN: %d", status)
	}
	if status, _, body := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer "+is.Token(t, "ops:dana", consoleAudience)); status != http.StatusAccepted {
		t.Fatalf("abort with an operator's token: %d %s", status, body)
	}
}
