package dev

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/pkg/ptr"

	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/sagatest"
)

// pingSink is a PingSource's sink over real HTTP: it verifies the
// request's token with knfunc's verifier when one is given (as the sweeper
// does with sender identity on) and records what it accepted.
type pingSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*http.Request // accepted pings (headers)
	sub []string        // their subjects
}

func newPingSink(t *testing.T, v *knfunc.Verifier) *pingSink {
	t.Helper()
	s := &pingSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub := ""
		if v != nil {
			c, err := v.Verify(r)
			if err != nil {
				knfunc.WriteAuthError(w, err)
				return
			}
			sub = c.Subject
		}
		if r.Header.Get("Ce-Type") != sourcesv1.PingSourceEventType {
			http.Error(w, "not a ping", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got, s.sub = append(s.got, r), append(s.sub, sub)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *pingSink) pings() ([]*http.Request, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.got...), append([]string(nil), s.sub...)
}

func pingSource(schedule, audience string) *sourcesv1.PingSource {
	src := &sourcesv1.PingSource{ObjectMeta: metav1.ObjectMeta{Namespace: "saga", Name: "sweeper-ping"}}
	src.Spec.Schedule = schedule
	src.Spec.Sink = duckv1.Destination{Ref: &duckv1.KReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "sweeper"}}
	if audience != "" {
		src.Spec.Sink.Audience = ptr.String(audience)
	}
	return src
}

// to resolves every sink to url.
func to(url string) devbroker.Resolver {
	return func(context.Context, duckv1.Destination, string) (*apis.URL, error) { return apis.ParseURL(url) }
}

// fire posts to the pinger's endpoint and returns the status and body.
func fire(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

// TestPingSourceSenderIdentity: with sender identity on, a ping carries a
// token of the PingSource's identity, named as Knative names it, for the
// sink's audience, which the sink (knfunc's verifier, against the dev
// issuer's discovery over HTTP) accepts; the fire endpoint answers 202 once
// the sink took it, 404 for an unknown PingSource, and 502 when the sink
// refuses, as it does a token for another audience.
func TestPingSourceSenderIdentity(t *testing.T) {
	var h http.Handler
	is := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	defer is.Close()
	issuer, err := devoidc.NewIssuer(is.URL)
	if err != nil {
		t.Fatal(err)
	}
	h = issuer.Handler()
	audience := devoidc.ServiceAudience("saga", "sweeper")
	v, err := knfunc.NewVerifier(knfunc.OIDCConfig{Issuer: is.URL, Audience: audience, ClockSkew: time.Second,
		Subjects: []string{"system:serviceaccount:saga:sweeper-ping-oidc-sources.knative.dev-pingsource"}})
	if err != nil {
		t.Fatal(err)
	}
	sink := newPingSink(t, v)
	token := func(sub, aud string) (string, error) {
		tok, _, err := issuer.Token(sub, aud)
		return tok, err
	}
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	// A schedule that never fires here: only the endpoint sends.
	p, err := newPinger(ctx, []*sourcesv1.PingSource{pingSource("0 0 1 1 *", audience)}, to(sink.srv.URL), token, log)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := fire(t, p, http.MethodPost, PingSourcesPath+"saga/sweeper-ping"); code != http.StatusAccepted {
		t.Fatalf("fire: %d %s", code, body)
	}
	got, subs := sink.pings()
	if len(got) != 1 || subs[0] != "system:serviceaccount:saga:sweeper-ping-oidc-sources.knative.dev-pingsource" ||
		got[0].Header.Get("Ce-Source") != "/apis/v1/namespaces/saga/pingsources/sweeper-ping" {
		t.Fatalf("the sink accepted %d pings, subjects %q", len(got), subs)
	}
	for path, want := range map[string]int{
		PingSourcesPath + "saga/nobody":  http.StatusNotFound,
		PingSourcesPath + "sweeper-ping": http.StatusNotFound,
		PingSourcesPath:                  http.StatusNotFound,
	} {
		if code, body := fire(t, p, http.MethodPost, path); code != want || (want == http.StatusNotFound && !strings.Contains(body, "saga/sweeper-ping")) {
			t.Errorf("POST %s: %d %q, want %d naming the PingSources", path, code, body, want)
		}
	}
	if code, _ := fire(t, p, http.MethodGet, PingSourcesPath+"saga/sweeper-ping"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET fires: %d", code)
	}

	// A PingSource whose sink names another audience: its token is
	// refused (401, not retried) and the endpoint says so.
	other, err := newPinger(ctx, []*sourcesv1.PingSource{pingSource("0 0 1 1 *", devoidc.ServiceAudience("saga", "payment"))}, to(sink.srv.URL), token, log)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := fire(t, other, http.MethodPost, PingSourcesPath+"saga/sweeper-ping"); code != http.StatusBadGateway || !strings.Contains(body, "HTTP 401") {
		t.Errorf("a token for another audience: %d %q, want 502 naming the sink's 401", code, body)
	}
	// Without an audience no token is sent, as in Knative: 401 too.
	none, err := newPinger(ctx, []*sourcesv1.PingSource{pingSource("0 0 1 1 *", "")}, to(sink.srv.URL), token, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := none.send(ctx, none.jobs[types.NamespacedName{Namespace: "saga", Name: "sweeper-ping"}]); !errors.Is(err, errRefused) {
		t.Errorf("a ping without an audience: %v, want refused", err)
	}
	if got, _ := sink.pings(); len(got) != 1 {
		t.Errorf("the sink accepted %d pings, want only the first", len(got))
	}
}

// TestPingSourceSchedule: the schedule sends pings on its own, without a
// token when sender identity is off.
func TestPingSourceSchedule(t *testing.T) {
	sink := newPingSink(t, nil)
	p, err := newPinger(context.Background(), []*sourcesv1.PingSource{pingSource("* * * * * *", devoidc.ServiceAudience("saga", "sweeper"))},
		to(sink.srv.URL), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p.start()
	defer p.stop()
	sagatest.Eventually(t, 10*time.Second, func() error {
		got, _ := sink.pings()
		if len(got) == 0 {
			return errors.New("no ping yet")
		}
		if a := got[0].Header.Get("Authorization"); a != "" {
			t.Fatalf("a ping with sender identity off carries %q", a)
		}
		return nil
	})
}

// TestIngressFiresPingSources: the ingress routes POST
// /.ksaga/pingsources/... to the pinger (503 until the PingSources run),
// never to the broker, and not while draining.
func TestIngressFiresPingSources(t *testing.T) {
	brokerHit := false
	in := newIngress(slog.New(slog.DiscardHandler), nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { brokerHit = true }), nil)
	path := PingSourcesPath + "saga/sweeper-ping"
	if code, _ := fire(t, in, http.MethodPost, path); code != http.StatusServiceUnavailable {
		t.Errorf("before the PingSources run: %d, want 503", code)
	}
	sink := newPingSink(t, nil)
	p, err := newPinger(context.Background(), []*sourcesv1.PingSource{pingSource("0 0 1 1 *", "")}, to(sink.srv.URL), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	in.pings.Store(p)
	if code, body := fire(t, in, http.MethodPost, path); code != http.StatusAccepted {
		t.Errorf("fire through the ingress: %d %s", code, body)
	}
	if got, _ := sink.pings(); len(got) != 1 {
		t.Errorf("the sink got %d pings, want 1", len(got))
	}
	in.draining.Store(true)
	if code, _ := fire(t, in, http.MethodPost, path); code != http.StatusServiceUnavailable {
		t.Errorf("while draining: %d, want 503", code)
	}
	if brokerHit {
		t.Error("a PingSource request reached the broker")
	}
}
