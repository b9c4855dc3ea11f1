package console_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestPagesAndHeaders: every page path serves the one document, assets
// have their types, every answer (pages, assets, the API) carries the
// policy, and an asset is revalidated with its ETag.
func TestPagesAndHeaders(t *testing.T) {
	f := newFixture(t, nil)
	for _, p := range []string{"/", "/sagas", "/sagas/x-1", "/deadletters", "/assets/app.js", "/assets/app.css", "/api/v1/definitions", "/console/v1/config"} {
		resp := f.get(t, p, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
		h := resp.Header
		if h.Get("Content-Security-Policy") != console.ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", p, h)
		}
	}
	for p, typ := range map[string]string{"/": "text/html", "/assets/app.js": "text/javascript", "/assets/app.css": "text/css", "/assets/favicon.svg": "image/svg+xml"} {
		if got := f.get(t, p, nil).Header.Get("Content-Type"); !strings.HasPrefix(got, typ) {
			t.Errorf("GET %s: Content-Type %q, want %s", p, got, typ)
		}
	}
	for _, d := range []string{"script-src 'self'", "style-src 'self'", "require-trusted-types-for 'script'", "frame-ancestors 'none'"} {
		if !strings.Contains(console.ContentSecurityPolicy, d) || strings.Contains(console.ContentSecurityPolicy, "unsafe") {
			t.Errorf("policy %q: want %q and nothing unsafe", console.ContentSecurityPolicy, d)
		}
	}
	etag := f.get(t, "/assets/app.js", nil).Header.Get("ETag")
	req, _ := http.NewRequest(http.MethodGet, f.URL+"/assets/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: ETag %q, %d", etag, resp.StatusCode)
	}
	if resp := f.get(t, "/assets/nope.js", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown asset: %d", resp.StatusCode)
	}
}

// TestAssetsHaveNoInlineCode: the pages never build markup from strings
// and carry no inline script or style (the policy would refuse them; this
// says where).
func TestAssetsHaveNoInlineCode(t *testing.T) {
	f := newFixture(t, nil)
	index := readBody(t, f.URL+"/")
	for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<script>`), regexp.MustCompile(`style=`), regexp.MustCompile(`\son[a-z]+=`), regexp.MustCompile(`javascript:`)} {
		if bad.MatchString(strings.ToLower(index)) {
			t.Errorf("index.html has %s", bad)
		}
	}
	for _, js := range []string{"app.js", "ui.js", "saga.js", "timeline.js", "graph.js", "dom.js", "api.js"} {
		src := readBody(t, f.URL+"/assets/"+js)
		for _, bad := range []string{"innerHTML", "outerHTML =", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "localStorage"} {
			if strings.Contains(src, bad) {
				t.Errorf("%s uses %s", js, bad)
			}
		}
	}
}

func readBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestTokenAuth: the token, compared whole; the actor is the named
// operator, printable and short; AnyOf tries each way in turn.
func TestTokenAuth(t *testing.T) {
	auth := console.TokenAuth("tok")
	req := func(authz, actor string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if actor != "" {
			r.Header.Set(console.ActorHeader, actor)
		}
		return r
	}
	for _, a := range []string{"", "Bearer", "Bearer tok2", "Bearer to", "Basic tok", "bearer tok"} {
		if _, err := auth(req(a, "x")); !errors.Is(err, ops.ErrUnauthenticated) {
			t.Errorf("%q: %v", a, err)
		}
	}
	for actor, want := range map[string]string{"": "token", "Ada": "Ada (token)", " Ada\x00\n<b> ": "Ada<b> (token)", strings.Repeat("x", 100): strings.Repeat("x", 64) + " (token)"} {
		if got, err := auth(req("Bearer tok", actor)); err != nil || got != want {
			t.Errorf("actor %q: %q %v, want %q", actor, got, err, want)
		}
	}
	forbid := func(*http.Request) (string, error) { return "", errors.New("not an operator") }
	oidc := func(r *http.Request) (string, error) {
		if r.Header.Get("Authorization") == "Bearer id-token" {
			return "alice@example.com", nil
		}
		return "", ops.ErrUnauthenticated
	}
	any := console.AnyOf(nil, oidc, auth)
	if got, err := any(req("Bearer id-token", "")); got != "alice@example.com" || err != nil {
		t.Errorf("oidc: %q %v", got, err)
	}
	if got, err := any(req("Bearer tok", "Bo")); got != "Bo (token)" || err != nil {
		t.Errorf("token: %q %v", got, err)
	}
	if _, err := any(req("Bearer nope", "")); !errors.Is(err, ops.ErrUnauthenticated) {
		t.Errorf("neither: %v", err)
	}
	if _, err := console.AnyOf(forbid, auth)(req("Bearer tok", "")); err == nil || errors.Is(err, ops.ErrUnauthenticated) {
		t.Errorf("a refusal ends the search: %v", err)
	}
	if console.AnyOf(nil, nil) != nil {
		t.Error("AnyOf of nothing must turn actions off")
	}
}

// TestActionsNeedTheToken: reads are open, actions are 401 without the
// token and 202 with it, recorded with the actor.
func TestActionsNeedTheToken(t *testing.T) {
	f := newFixture(t, nil)
	waits := f.Kit.Run("cf", map[string]any{"a": 1}, "test.car.failed", sagatest.Fail("car", "no cars"))
	deadLetter(t, f, sagatest.Received{Event: waits}, "down")
	post := func(authz string) int {
		req, _ := http.NewRequest(http.MethodPost, f.URL+"/api/v1/sagas/cf/redrive", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		req.Header.Set(console.ActorHeader, "Ada")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code := post("Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if st := f.record(t, "cf"); st.Status != saga.StatusCompensationFailed {
		t.Fatalf("refused actions moved the saga: %s", st.Status)
	}
	if code := post("Bearer " + token); code != http.StatusAccepted {
		t.Fatalf("with the token: %d", code)
	}
	st := f.record(t, "cf")
	last := st.Steps[len(st.Steps)-1]
	if st.Status != saga.StatusCompensating || last.Outcome != ops.OutcomeRedriven || last.Actor != "Ada (token)" {
		t.Fatalf("after the redrive: %s %+v", st.Status, last)
	}
}

// TestSummaryAndCauses: a list can leave out what it does not show; one
// saga's view says what each entry ran and which event caused it.
func TestSummaryAndCauses(t *testing.T) {
	f := newFixture(t, nil)
	f.Kit.Run("s1", map[string]any{"big": strings.Repeat("x", 1000)}, "test.mail.sent", sagatest.Fail("hotel", "full"))
	var page ops.SagaPage
	f.get(t, "/api/v1/sagas?summary=true", &page)
	if len(page.Sagas) != 1 || page.Sagas[0].Steps != nil || page.Sagas[0].Data != nil || page.Sagas[0].Status != saga.StatusCompensated {
		t.Fatalf("summary: %+v", page.Sagas)
	}
	f.get(t, "/api/v1/sagas?summary=true&q=s1", &page)
	if len(page.Sagas) != 1 || page.Sagas[0].Steps != nil {
		t.Fatalf("search summary: %+v", page.Sagas)
	}
	if resp := f.get(t, "/api/v1/sagas?summary=maybe", nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("summary=maybe: %d", resp.StatusCode)
	}
	var v ops.SagaView
	f.get(t, "/api/v1/sagas/s1", &v)
	if got := strings.Join(v.Kinds, " "); got != "forward forward compensate final" {
		t.Fatalf("kinds %q", got)
	}
	if v.Causes[0] != "" {
		t.Fatalf("the start command was sent by a client: cause %q", v.Causes[0])
	}
	for i := 1; i < len(v.Steps); i++ {
		if v.Causes[i] != v.Steps[i-1].EventID || saga.ReplyID(v.Steps[i-1].EventSource, v.Causes[i], v.Steps[i].EventType) != v.Steps[i].EventID {
			t.Fatalf("entry %d (%s) caused by %q, want the event of entry %d (%s)", i, v.Steps[i].EventType, v.Causes[i], i-1, v.Steps[i-1].EventID)
		}
	}
}

// domain is a stand-in for a saga's own functions' read endpoints: it
// records the paths asked.
type domain struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newDomain(t *testing.T, h http.HandlerFunc) *domain {
	d := &domain{}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.paths = append(d.paths, r.URL.RawPath+"|"+r.URL.Path+"?"+r.URL.RawQuery)
		d.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *domain) asked() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.paths...)
}

// TestOIDCAuth: with OIDC on, a request without a bearer token is
// unauthenticated, one with the console token still acts (compared first),
// and an ID token is refused as not checkable now while its issuer is down.
func TestOIDCAuth(t *testing.T) {
	if console.OIDCAuth(nil) != nil {
		t.Fatal("OIDC off must add no way to act")
	}
	v, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: "http://127.0.0.1:1/issuer", Audience: "console"})
	if err != nil {
		t.Fatal(err)
	}
	auth := console.AnyOf(console.TokenAuth("tok"), console.OIDCAuth(v))
	req := func(authz string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		return r
	}
	if _, err := auth(req("")); !errors.Is(err, ops.ErrUnauthenticated) {
		t.Fatalf("no credentials: %v", err)
	}
	if actor, err := auth(req("Bearer tok")); err != nil || actor != "token" {
		t.Fatalf("the token with OIDC on: %q %v", actor, err)
	}
	// the issuer is unreachable: the token cannot be checked now (503, retry)
	if actor, err := auth(req("Bearer not.a.jwt")); !errors.Is(err, ops.ErrAuthUnavailable) {
		t.Fatalf("an ID token with its issuer down: %q %v, want ErrAuthUnavailable", actor, err)
	}
}
