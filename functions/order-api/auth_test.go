package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3/jwt"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/knfunc/oidctest"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// apiAudience is the audience the order API's tokens are issued for in
// these tests.
const apiAudience = "ksaga-order-api"

// bearer is an Authorization header.
func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// carolsBook is carol's (user 3) order of one book.
const carolsBook = `{"user_id": 3, "items": [{"sku": "book", "qty": 1}]}`

// TestCallersAreAuthenticated runs order-api with KSAGA_API_OIDC_* against
// a real issuer (discovery and keys over HTTP): without a token, or with
// one that does not verify, every route answers 401 with a challenge and
// does nothing; a valid token acts only for the user its subject names
// ("user:<id>"): another user's order is 403 to place, to read and to
// cancel, and nothing is sent, recorded or moved; the order's own user
// places, reads and cancels it.
func TestCallersAreAuthenticated(t *testing.T) {
	is := oidctest.New(t)
	w := newWorld(t, map[string]string{"KSAGA_API_OIDC_ISSUER": is.URL, "KSAGA_API_OIDC_AUDIENCE": apiAudience})
	carol, alice := is.Token(t, "user:3", apiAudience), is.Token(t, "user:1", apiAudience)
	forged := oidctest.New(t).Key
	invalid := map[string]map[string]string{
		"no token":             nil,
		"not a bearer token":   {"Authorization": "Basic Y2Fyb2w6cHc="},
		"another audience":     bearer(is.Token(t, "user:3", "serving.knative.dev/service/saga/payment")),
		"expired":              bearer(oidctest.Sign(t, is.Key, is.KeyID, is.Claims("user:3", apiAudience, -time.Hour))),
		"forged: another key":  bearer(oidctest.Sign(t, forged, is.KeyID, is.Claims("user:3", apiAudience, time.Hour))),
		"another issuer's URL": bearer(oidctest.Sign(t, is.Key, is.KeyID, withIssuer(is.Claims("user:3", apiAudience, time.Hour), "https://evil.example"))),
	}
	for name, h := range invalid {
		r := w.request(t, http.MethodPost, "/orders", carolsBook, h)
		if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") || strings.Contains(string(r.Body), "eyJ") {
			t.Errorf("POST /orders, %s: %d %v %s, want 401 with a challenge", name, r.Status, r.Header, r.Body)
		}
	}
	for name, h := range map[string]map[string]string{
		"alice for carol": bearer(alice),
		"no user":         bearer(is.Token(t, "system:serviceaccount:saga:default", apiAudience)),
		"user 03":         bearer(is.Token(t, "user:03", apiAudience)),
		"user 0":          bearer(is.Token(t, "user:0", apiAudience)),
	} {
		if r := w.request(t, http.MethodPost, "/orders", carolsBook, h); r.Status != http.StatusForbidden {
			t.Errorf("POST /orders, %s: %d %s, want 403", name, r.Status, r.Body)
		}
	}
	if n, s := len(w.broker.Received()), len(w.sagas(t)); n != 0 || s != 0 {
		t.Fatalf("refused requests sent %d events and recorded %d sagas", n, s)
	}

	r := w.request(t, http.MethodPost, "/orders", carolsBook, bearer(carol))
	if r.Status != http.StatusAccepted {
		t.Fatalf("carol's own order: %d %s", r.Status, r.Body)
	}
	var a accepted
	r.decode(t, &a)
	// Accepted, not started yet: read from the saga's record.
	for name, c := range map[string]struct {
		h    map[string]string
		want int
	}{"no token": {nil, http.StatusUnauthorized}, "alice": {bearer(alice), http.StatusForbidden}, "carol": {bearer(carol), http.StatusOK}} {
		if r := w.request(t, http.MethodGet, "/orders/"+a.OrderID, "", c.h); r.Status != c.want {
			t.Errorf("GET an accepted order, %s: %d %s, want %d", name, r.Status, r.Body, c.want)
		}
	}
	// Started: read from the order record.
	o := ordersaga.Order{UserID: 3, TotalCents: 1250, Items: []ordersaga.Item{{SKU: "book", Qty: 1, PriceCents: 1250}}}
	w.start(t, a, w.broker.Events()[0], o)
	for name, c := range map[string]struct {
		h    map[string]string
		want int
	}{"no token": {nil, http.StatusUnauthorized}, "alice": {bearer(alice), http.StatusForbidden}, "carol": {bearer(carol), http.StatusOK}} {
		r := w.request(t, http.MethodGet, "/orders/"+a.OrderID, "", c.h)
		if r.Status != c.want || (c.want != http.StatusOK && strings.Contains(string(r.Body), "book")) {
			t.Errorf("GET a pending order, %s: %d %s, want %d", name, r.Status, r.Body, c.want)
		}
	}
	before := w.kit.Record(a.SagaID)
	for name, c := range map[string]struct {
		h    map[string]string
		want int
	}{"no token": {nil, http.StatusUnauthorized}, "alice": {bearer(alice), http.StatusForbidden}} {
		if r := w.request(t, http.MethodPost, "/orders/"+a.OrderID+"/cancel", "", c.h); r.Status != c.want {
			t.Errorf("cancel, %s: %d %s, want %d", name, r.Status, r.Body, c.want)
		}
	}
	if st := w.kit.Record(a.SagaID); st.Version != before.Version || len(w.broker.Received()) != 1 {
		t.Fatalf("refused cancels moved the saga (v%d → v%d) or sent %d events", before.Version, st.Version, len(w.broker.Received())-1)
	}
	if r := w.request(t, http.MethodPost, "/orders/"+a.OrderID+"/cancel", "", bearer(carol)); r.Status != http.StatusAccepted {
		t.Fatalf("carol cancels her order: %d %s", r.Status, r.Body)
	}
	if st := w.kit.Record(a.SagaID); st.Status != saga.StatusCompensating || st.Steps[len(st.Steps)-1].Actor != "user 3" {
		t.Errorf("after carol's cancel: %s, last %+v", st.Status, st.Steps[len(st.Steps)-1])
	}
	// The health routes stay open (the platform probes them), and each
	// refusal was a security log line without the token.
	if r, err := http.Get(w.fn.URL + "/readyz"); err != nil || r.StatusCode != http.StatusOK {
		t.Errorf("/readyz with authentication on: %v %v", r, err)
	}
	refused, started := 0, false
	for _, l := range w.fn.Out.Lines(t) {
		if l["msg"] == "security: request refused" {
			refused++
		}
		started = started || l["msg"] == "order API callers need a bearer token"
	}
	if refused < len(invalid)+3 || !started || strings.Contains(w.fn.Out.String(), carol) {
		t.Errorf("%d refusals logged, start-up line %v, token logged %v", refused, started, strings.Contains(w.fn.Out.String(), carol))
	}
}

// withIssuer changes the claims' issuer.
func withIssuer(c jwt.Claims, iss string) jwt.Claims { c.Issuer = iss; return c }

// TestUserClaim: with KSAGA_API_OIDC_USER_CLAIM the user is that claim's
// value (a JSON number or a string of digits), whatever the subject.
func TestUserClaim(t *testing.T) {
	is := oidctest.New(t)
	w := newWorld(t, map[string]string{"KSAGA_API_OIDC_ISSUER": is.URL, "KSAGA_API_OIDC_AUDIENCE": apiAudience, envUserClaim: "uid"})
	for name, c := range map[string]struct {
		extra any
		want  int
	}{
		"number":            {map[string]any{"uid": 3}, http.StatusAccepted},
		"string":            {map[string]any{"uid": "3"}, http.StatusAccepted},
		"another user":      {map[string]any{"uid": 1}, http.StatusForbidden},
		"no claim":          {map[string]any{"user": 3}, http.StatusForbidden},
		"not an id":         {map[string]any{"uid": "3 OR 1"}, http.StatusForbidden},
		"a fraction":        {map[string]any{"uid": 3.5}, http.StatusForbidden},
		"the subject names": {map[string]any{}, http.StatusForbidden}, // sub user:3 does not count
	} {
		r := w.request(t, http.MethodPost, "/orders", carolsBook, bearer(is.Token(t, "user:3", apiAudience, c.extra)))
		if r.Status != c.want {
			t.Errorf("%s: %d %s, want %d", name, r.Status, r.Body, c.want)
		}
	}
}

// TestAuthenticationOff: without KSAGA_API_OIDC_ISSUER the demo's API
// takes anyone, says so in one start-up line, and ignores a token; a user
// claim without an issuer is a configuration error.
func TestAuthenticationOff(t *testing.T) {
	w := newWorld(t, nil)
	if r := w.request(t, http.MethodPost, "/orders", carolsBook, bearer("not-even-a-jwt")); r.Status != http.StatusAccepted {
		t.Fatalf("POST /orders, authentication off: %d %s", r.Status, r.Body)
	}
	n := 0
	for _, l := range w.fn.Out.Lines(t) {
		if msg, _ := l["msg"].(string); strings.Contains(msg, "order API callers") {
			n++
			if !strings.Contains(msg, "are not authenticated") {
				t.Errorf("start-up line %q", msg)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d start-up lines about the API's callers, want 1", n)
	}

	env, err := knfunc.NewEnv(func(k string) string {
		return map[string]string{"K_SERVICE": "order-api", "REDIS_URL": "redis://127.0.0.1:1/0", "USERS_URL": "http://127.0.0.1:1", envUserClaim: "uid"}[k]
	}, sagatest.Miniredis(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup(context.Background(), env); err == nil || !strings.Contains(err.Error(), envUserClaim) {
		t.Errorf("a user claim without an issuer: %v", err)
	}
}
