package ops_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ksaga/ksaga/ops"
	o "github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

const token = "s3cret"

// tokenAuth authorizes "Bearer s3cret" as the Ksaga-Actor header's name
// (or "token"), refuses "Bearer forbidden" (403), cannot check "Bearer
// unverifiable" now (503), and asks anyone else for credentials (401).
func tokenAuth(r *http.Request) (string, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer " + token:
		if a := r.Header.Get("Ksaga-Actor"); a != "" {
			return a, nil
		}
		return "token", nil
	case "Bearer forbidden":
		return "", errors.New("this token may only read")
	case "Bearer unverifiable":
		return "", fmt.Errorf("%w: issuer down", ops.ErrAuthUnavailable)
	}
	return "", ops.ErrUnauthenticated
}

// apiEnv serves the env's operator's API over real HTTP.
type apiEnv struct {
	*env
	api *ops.API
	srv *httptest.Server
	// watchers counts the watch requests still being served.
	mu       sync.Mutex
	watching int
}

func newAPI(t *testing.T, e *env, authorize func(*http.Request) (string, error)) *apiEnv {
	t.Helper()
	a := &apiEnv{env: e, api: &ops.API{Op: e.op, Authorize: authorize, TraceURL: "https://jaeger.example/trace/{trace_id}", Watch: 20 * time.Millisecond}}
	mux := http.NewServeMux()
	for pattern, h := range a.api.Routes() {
		if strings.HasSuffix(pattern, "/watch") {
			inner := h
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				a.mu.Lock()
				a.watching++
				a.mu.Unlock()
				defer func() {
					a.mu.Lock()
					a.watching--
					a.mu.Unlock()
				}()
				inner.ServeHTTP(w, r)
			})
		}
		mux.Handle(pattern, h)
	}
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request and checks that the answer is JSON.
func (a *apiEnv) do(method, path string, header ...string) response {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" || !json.Valid(body) {
		a.t.Fatalf("%s %s: %d %q is not JSON: %s", method, path, res.StatusCode, ct, body)
	}
	return response{res.StatusCode, res.Header, body}
}

// get GETs path, wants status, and decodes the answer into v.
func (a *apiEnv) get(path string, status int, v any) {
	a.t.Helper()
	r := a.do(http.MethodGet, path)
	if r.status != status {
		a.t.Fatalf("GET %s: %d %s, want %d", path, r.status, r.body, status)
	}
	if v != nil {
		reflect.ValueOf(v).Elem().SetZero() // nothing left from an earlier answer
		if err := json.Unmarshal(r.body, v); err != nil {
			a.t.Fatalf("GET %s: %v", path, err)
		}
	}
}

// act POSTs an action with the token, as actor.
func (a *apiEnv) act(path, actor string) response {
	a.t.Helper()
	return a.do(http.MethodPost, path, "Authorization", "Bearer "+token, "Ksaga-Actor", actor)
}

// list answers GET /api/v1/sagas?query as ids.
func (a *apiEnv) list(query string) ([]string, string) {
	a.t.Helper()
	var p ops.SagaPage
	a.get("/api/v1/sagas?"+query, http.StatusOK, &p)
	ids := []string{}
	for _, s := range p.Sagas {
		ids = append(ids, s.ID)
	}
	return ids, p.Next
}

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestAPIList: sagas listed by definition, status, due time and creation
// time, newest first.
func TestAPIList(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, nil)
	// one saga created a second after the other
	at := time.Now().Truncate(time.Millisecond)
	store, set := e.clockStore(at)
	e.useStore(store)
	for i, seed := range []func(){
		func() { e.abc.Run("r1", order, "t.a.done") },
		func() { e.order.Run("o1", order, o.PayAuthorized) },
		func() { e.abc.Run("c1", order, "t.f.done") },
		func() { e.abc.Run("x1", order, "t.a.failed", sagatest.Fail("a", "no")) },
		func() { e.accept(abc, "acc") },
		func() { e.abc.Run("r2", order, "t.b.done") },
		func() { e.order.Run("o2", order, o.StockFailed, sagatest.Fail(o.StepInventory, "out of stock")) },
	} {
		set(at.Add(time.Duration(i) * time.Second))
		seed()
	}
	all := []string{"r1", "o1", "c1", "x1", "acc", "r2", "o2"}
	created := map[string]time.Time{}
	for _, id := range all {
		created[id] = e.get(id).CreatedAt
	}

	ids, next := a.list("")
	if !slices.Equal(sorted(ids), sorted(all)) || next != "" {
		t.Fatalf("all: %v next %q", ids, next)
	}
	if !slices.IsSortedFunc(ids, func(x, y string) int { return created[y].Compare(created[x]) }) {
		t.Fatalf("not newest first: %v", ids)
	}
	for query, want := range map[string][]string{
		"saga=abc":                          {"r1", "c1", "x1", "acc", "r2"},
		"saga=order":                        {"o1", "o2"},
		"status=running":                    {"r1", "o1", "r2"},
		"status=running&saga=abc":           {"r1", "r2"},
		"status=compensating":               {"o2"},
		"status=completed":                  {"c1"},
		"status=compensated":                {"x1"},
		"status=accepted":                   {"acc"},
		"status=compensation_failed":        {},
		"overdue=true":                      {},
		"q=r2":                              {"r2"},
		"q=nobody":                          {},
		"saga=order&q=r2":                   {},
		"overdue=false&status=compensating": {"o2"},
	} {
		if ids, _ := a.list(query); !slices.Equal(sorted(ids), sorted(want)) {
			t.Errorf("%s: %v, want %v", query, ids, want)
		}
	}

	// from (inclusive) and to (exclusive), in RFC 3339 with fractions
	from, to := created["c1"], created["r2"]
	var want []string
	for _, id := range all {
		if !created[id].Before(from) && created[id].Before(to) {
			want = append(want, id)
		}
	}
	q := url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}
	if ids, _ := a.list(q.Encode()); !slices.Equal(sorted(ids), sorted(want)) || len(want) != 3 {
		t.Fatalf("from %v to %v: %v, want %v", from, to, ids, want)
	}

	// overdue: unfinished sagas past their due time, earliest due first
	e.later(time.Hour)
	var p ops.SagaPage
	a.get("/api/v1/sagas?overdue=true", http.StatusOK, &p)
	ids = nil
	for _, s := range p.Sagas {
		ids = append(ids, s.ID)
		if !s.Overdue {
			t.Errorf("%s listed overdue, shown not overdue", s.ID)
		}
	}
	if !slices.Equal(sorted(ids), sorted([]string{"r1", "o1", "acc", "r2", "o2"})) ||
		!slices.IsSortedFunc(p.Sagas, func(x, y ops.SagaView) int { return x.Due.Compare(y.Due) }) {
		t.Fatalf("overdue: %v", ids)
	}
	if ids, _ := a.list("overdue=true&saga=order"); !slices.Equal(sorted(ids), []string{"o1", "o2"}) {
		t.Fatalf("overdue orders: %v", ids)
	}

	var defs struct {
		Definitions []*saga.Definition `json:"definitions"`
	}
	a.get("/api/v1/definitions", http.StatusOK, &defs)
	if len(defs.Definitions) != 3 || defs.Definitions[0].Name != "abc" || len(defs.Definitions[1].Steps) != len(o.Saga.Steps) {
		t.Fatalf("definitions %+v", defs)
	}
}

// TestAPIPaging: a cursor walks every saga once, across creation times
// shared by several sagas, whatever the filter.
func TestAPIPaging(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, nil)
	var all, running []string
	for i := range 57 {
		id := fmt.Sprintf("s%02d", i)
		if i%3 == 0 {
			e.abc.Run(id, order, "t.c.done")
		} else {
			e.abc.Run(id, order, "t.a.done")
			running = append(running, id)
		}
		all = append(all, id)
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"limit=10", all},
		{"limit=7&saga=abc&status=running", running},
		{"limit=1&status=completed", func() []string {
			var out []string
			for i := 0; i < 57; i += 3 {
				out = append(out, fmt.Sprintf("s%02d", i))
			}
			return out
		}()},
	} {
		t.Run(tt.query, func(t *testing.T) {
			var got []string
			pages := 0
			query := tt.query
			for {
				ids, next := a.list(query)
				pages++
				got = append(got, ids...)
				if next == "" {
					break
				}
				if pages > 100 {
					t.Fatal("the cursor never ends")
				}
				query = tt.query + "&cursor=" + url.QueryEscape(next)
			}
			if !slices.Equal(sorted(got), sorted(tt.want)) {
				t.Fatalf("%d sagas in %d pages, want %d: %v", len(got), pages, len(tt.want), got)
			}
		})
	}
	e.later(time.Hour)
	var got []string
	query := "overdue=true&limit=4"
	for range 100 {
		ids, next := a.list(query)
		got = append(got, ids...)
		if next == "" {
			break
		}
		query = "overdue=true&limit=4&cursor=" + url.QueryEscape(next)
	}
	if !slices.Equal(sorted(got), sorted(running)) {
		t.Fatalf("overdue pages: %d sagas, want %d", len(got), len(running))
	}
}

// TestAPIPagingAcrossDefinitions: sagas of two definitions created in the
// same millisecond are each listed once when a page ends among them.
func TestAPIPagingAcrossDefinitions(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, nil)
	store, _ := e.clockStore(time.Now())
	e.useStore(store)
	var all []string
	for i := range 5 {
		e.abc.Run(fmt.Sprintf("a%d", i), order, "t.a.done")
		e.order.Run(fmt.Sprintf("o%d", i), order, o.Created)
		all = append(all, fmt.Sprintf("a%d", i), fmt.Sprintf("o%d", i))
	}
	for _, limit := range []int{1, 2, 3, 4, 6, 9} {
		var got []string
		query := fmt.Sprintf("limit=%d", limit)
		for range 20 {
			ids, next := a.list(query)
			got = append(got, ids...)
			if next == "" {
				break
			}
			query = fmt.Sprintf("limit=%d&cursor=%s", limit, url.QueryEscape(next))
		}
		if !slices.Equal(sorted(got), sorted(all)) {
			t.Errorf("limit %d: %v, want each of %v once", limit, got, all)
		}
	}
}

// TestAPISaga: one saga's record, with its dead letters and its trace's
// URL; search by id and business key; 404 for a saga the API does not
// serve or that does not exist.
func TestAPISaga(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, nil)
	ctx := context.Background()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	traced := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	done, err := e.steps(abc, nil).Handle(traced, start(abc, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.deadLetterSink().Handle(ctx, deadLettered(*done, "http://b", "503", "b is down")); err != nil {
		t.Fatal(err)
	}
	var v ops.SagaView
	a.get("/api/v1/sagas/s1", http.StatusOK, &v)
	if v.ID != "s1" || v.Saga != "abc" || v.Key != "key-s1" || v.Status != saga.StatusCompensating || v.TraceID != tid.String() ||
		v.TraceURL != "https://jaeger.example/trace/"+tid.String() || len(v.Steps) != 2 || v.Overdue {
		t.Fatalf("saga %+v", v)
	}
	if len(v.DeadLetters) != 1 || v.DeadLetters[0].EventID != done.ID() || v.DeadLetters[0].Body != "b is down" || v.DeadLetters[0].Handling != ops.HandlingFailed {
		t.Fatalf("dead letters %+v", v.DeadLetters)
	}
	// accepted first, its start then run in the trace
	cmd := e.accept(abc, "s3")
	if _, err := e.steps(abc, nil).Handle(traced, cmd); err != nil {
		t.Fatal(err)
	}
	v = ops.SagaView{}
	a.get("/api/v1/sagas/s3", http.StatusOK, &v)
	if v.Status != saga.StatusRunning || v.TraceID != tid.String() || v.TraceURL == "" || v.Key != "key-s3" {
		t.Fatalf("an accepted saga started in a trace: %+v", v)
	}
	// untraced: no URL
	e.abc.Run("s2", order, "t.a.done")
	v = ops.SagaView{}
	a.get("/api/v1/sagas/s2", http.StatusOK, &v)
	if v.TraceURL != "" || v.TraceID != "" || len(v.DeadLetters) != 0 || v.Next == nil || v.Next.Type != "t.a.done" {
		t.Fatalf("saga %+v", v)
	}
	for query, want := range map[string][]string{
		"q=s1": {"s1"}, "q=key-s1": {"s1"}, "q=+key-s1+": {"s1"}, "q=key-s1&saga=abc": {"s1"}, "q=key-s1&saga=order": {}, "q=key-s9": {},
	} {
		if ids, _ := a.list(query); !slices.Equal(ids, want) {
			t.Errorf("%s: %v, want %v", query, ids, want)
		}
	}
	var fail ops.Error
	a.get("/api/v1/sagas/nope", http.StatusNotFound, &fail)
	if fail.Error != "not found" {
		t.Fatalf("404 body %+v", fail)
	}
	// an API serving only orders does not show other sagas
	ordersOnly, err := ops.NewRegistry(o.Saga)
	if err != nil {
		t.Fatal(err)
	}
	op := *e.op
	op.Sagas = ordersOnly
	b := newAPI(t, &env{t: t, op: &op}, nil)
	b.get("/api/v1/sagas/s1", http.StatusNotFound, nil)
	if ids, _ := b.list("q=s1"); len(ids) != 0 {
		t.Fatalf("search shows another definition's saga: %v", ids)
	}
	if ids, _ := b.list(""); len(ids) != 0 {
		t.Fatalf("the list shows another definition's sagas: %v", ids)
	}
}

// sse reads server-sent events.
type sse struct{ r *bufio.Reader }

// next returns the next event's name and data, skipping comments.
func (s sse) next() (string, string, error) {
	var name, data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && name != "":
			return name, data, nil
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// TestAPIWatch: the watch stream sends the saga at once and again after
// it changes, and ends when the client leaves.
func TestAPIWatch(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, nil)
	e.abc.Run("s1", order, "t.a.done")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.srv.URL+"/api/v1/sagas/s1/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := sse{bufio.NewReader(res.Body)}
	read := func() ops.SagaView {
		t.Helper()
		name, data, err := s.next()
		if err != nil || name != "saga" {
			t.Fatalf("event %q: %v", name, err)
		}
		var v ops.SagaView
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	first := read()
	if first.ID != "s1" || first.Status != saga.StatusRunning {
		t.Fatalf("first %+v", first)
	}
	if _, err := e.op.Abort(context.Background(), "s1", ops.CauseAbort, "alice", because("stop")); err != nil {
		t.Fatal(err)
	}
	second := read()
	if second.Version != first.Version+1 || second.Status != saga.StatusCompensating || second.Reason != "stop at b" {
		t.Fatalf("after the abort %+v", second)
	}
	cancel()
	sagatest.Eventually(t, 10*time.Second, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.watching != 0 {
			return errors.New("the watch goes on after its client left")
		}
		return nil
	})
	a.get("/api/v1/sagas/nope/watch", http.StatusNotFound, nil)
}

// TestAPIActions: actions need credentials (403 when none are
// configured or the caller may not act, 401 without valid ones) and
// record their actor in the saga's history.
func TestAPIActions(t *testing.T) {
	e := newEnv(t)
	e.abc.Run("s1", order, "t.a.done")
	e.abc.Run("done", order, "t.c.done")
	e.failCompensation(e.abc, "cf", "t.c.failed", "c", "no room")
	off := newAPI(t, e, nil)
	before := e.get("s1")
	if r := off.act("/api/v1/sagas/s1/abort", "alice"); r.status != http.StatusForbidden {
		t.Fatalf("actions off: %d %s", r.status, r.body)
	}
	a := newAPI(t, e, tokenAuth)
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", token}} {
		r := a.do(http.MethodPost, "/api/v1/sagas/s1/abort", h...)
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%v: %d %s", h, r.status, r.body)
		}
	}
	if r := a.do(http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer forbidden"); r.status != http.StatusForbidden {
		t.Fatalf("forbidden: %d %s", r.status, r.body)
	}
	if r := a.do(http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer unverifiable"); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("credentials that cannot be checked now: %d %s", r.status, r.body)
	}
	if n := strings.Count(e.logs.String(), `"msg":"security: action refused"`); n != 5 {
		t.Fatalf("%d refusals logged as security events, want 5 (3 unauthenticated, 1 forbidden, 1 unverifiable):\n%s", n, e.logs.String())
	}
	e.unchanged("s1", before)
	if n := len(e.sink.Events()); n != 0 {
		t.Fatalf("published %v", e.sink.Types())
	}

	var ab struct {
		SagaID    string `json:"saga_id"`
		Step      string `json:"step"`
		Applied   bool   `json:"applied"`
		EventType string `json:"event_type"`
	}
	r := a.act("/api/v1/sagas/s1/abort", "alice")
	if err := json.Unmarshal(r.body, &ab); err != nil || r.status != http.StatusAccepted || ab != (struct {
		SagaID    string `json:"saga_id"`
		Step      string `json:"step"`
		Applied   bool   `json:"applied"`
		EventType string `json:"event_type"`
	}{"s1", "b", true, "t.b.failed"}) {
		t.Fatalf("abort: %d %s", r.status, r.body)
	}
	st := e.get("s1")
	if last := st.Steps[len(st.Steps)-1]; last.Actor != "alice" || last.Outcome != ops.CauseAbort.Outcome || st.Reason != "aborted by alice waiting on the b step" {
		t.Fatalf("history %+v reason %q", last, st.Reason)
	}
	if r := a.act("/api/v1/sagas/s1/abort", "alice"); r.status != http.StatusAccepted || !strings.Contains(string(r.body), `"applied":false`) {
		t.Fatalf("again: %d %s", r.status, r.body)
	}
	if r := a.act("/api/v1/sagas/done/abort", "alice"); r.status != http.StatusConflict {
		t.Fatalf("completed: %d %s", r.status, r.body)
	}
	if r := a.act("/api/v1/sagas/nope/abort", "alice"); r.status != http.StatusNotFound {
		t.Fatalf("unknown: %d %s", r.status, r.body)
	}

	if r := a.act("/api/v1/sagas/cf/redrive", "bob"); r.status != http.StatusAccepted || !strings.Contains(string(r.body), `"event_type":"t.c.failed"`) {
		t.Fatalf("redrive: %d %s", r.status, r.body)
	}
	cf := e.get("cf")
	if last := cf.Steps[len(cf.Steps)-1]; last.Actor != "bob" || last.Outcome != ops.OutcomeRedriven || cf.Status != saga.StatusCompensating {
		t.Fatalf("redriven %+v", last)
	}
	if r := a.act("/api/v1/sagas/done/redrive", "bob"); r.status != http.StatusConflict {
		t.Fatalf("redrive completed: %d %s", r.status, r.body)
	}
	if r := a.do(http.MethodPost, "/api/v1/sagas/cf/redrive", "Authorization", "Bearer "+token); r.status != http.StatusAccepted {
		t.Fatalf("redrive again: %d %s", r.status, r.body)
	}
}

// TestAPIDeadLetters: dead letters listed with filters and pages, one by
// id, replayed one by one or all those matching a filter (never all of
// them unfiltered).
func TestAPIDeadLetters(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, tokenAuth)
	ctx := context.Background()
	sink := e.deadLetterSink()
	for i := range 5 {
		ev := sagatest.Event(fmt.Sprintf("x%d", i), "com.example.other", map[string]int{"i": i})
		if _, err := sink.Handle(ctx, deadLettered(ev, "http://x.example", "400", "")); err != nil {
			t.Fatal(err)
		}
	}
	e.failCompensation(e.abc, "s1", "t.c.failed", "c", "no room")

	var page ops.DeadLetterPage
	a.get("/api/v1/deadletters", http.StatusOK, &page)
	if len(page.DeadLetters) != 6 || page.DeadLetters[0].SagaID != "s1" || page.Next != "" {
		t.Fatalf("dead letters %+v", page)
	}
	a.get("/api/v1/deadletters?saga=s1", http.StatusOK, &page)
	if len(page.DeadLetters) != 1 || page.DeadLetters[0].Handling != ops.HandlingCompensationFailed {
		t.Fatalf("of s1: %+v", page)
	}
	a.get("/api/v1/deadletters?destination=x.example&type=com.example.other", http.StatusOK, &page)
	if len(page.DeadLetters) != 5 {
		t.Fatalf("by destination: %d", len(page.DeadLetters))
	}
	var seen []string
	path := "/api/v1/deadletters?limit=2"
	for range 10 {
		var page ops.DeadLetterPage
		a.get(path, http.StatusOK, &page)
		for _, d := range page.DeadLetters {
			seen = append(seen, d.ID)
		}
		if page.Next == "" {
			break
		}
		path = "/api/v1/deadletters?limit=2&cursor=" + url.QueryEscape(page.Next)
	}
	if len(seen) != 6 || len(slices.Compact(sorted(seen))) != 6 {
		t.Fatalf("pages: %v", seen)
	}
	id := seen[0]
	var one saga.DeadLetter
	a.get("/api/v1/deadletters/"+id, http.StatusOK, &one)
	if one.ID != id || one.SagaID != "s1" {
		t.Fatalf("one: %+v", one)
	}
	a.get("/api/v1/deadletters/0-1", http.StatusNotFound, nil)
	a.get("/api/v1/deadletters/garbage", http.StatusNotFound, nil)

	if r := a.do(http.MethodPost, "/api/v1/deadletters/"+id+"/replay"); r.status != http.StatusUnauthorized {
		t.Fatalf("replay without credentials: %d", r.status)
	}
	r := a.act("/api/v1/deadletters/"+id+"/replay", "carol")
	if err := json.Unmarshal(r.body, &one); err != nil || r.status != http.StatusAccepted || one.ReplayedBy != "carol" {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
	if pub := e.sink.Events(); len(pub) != 1 || pub[0].Type() != "t.c.failed" {
		t.Fatalf("published %v", e.sink.Types())
	}
	if st := e.get("s1"); st.Steps[len(st.Steps)-1].Actor != "carol" || !st.Steps[len(st.Steps)-1].Note {
		t.Fatalf("history %+v", st.Steps[len(st.Steps)-1])
	}
	if r := a.act("/api/v1/deadletters/0-1/replay", "carol"); r.status != http.StatusNotFound {
		t.Fatalf("replay unknown: %d", r.status)
	}

	if r := a.act("/api/v1/deadletters/replay", "carol"); r.status != http.StatusBadRequest {
		t.Fatalf("replay all unfiltered: %d %s", r.status, r.body)
	}
	var all struct {
		Replayed []string `json:"replayed"`
	}
	r = a.act("/api/v1/deadletters/replay?type=com.example.other", "carol")
	if err := json.Unmarshal(r.body, &all); err != nil || r.status != http.StatusAccepted || len(all.Replayed) != 5 {
		t.Fatalf("replay all: %d %s", r.status, r.body)
	}
	if pub := e.sink.Events(); len(pub) != 6 || pub[5].Type() != "com.example.other" {
		t.Fatalf("published %v", e.sink.Types())
	}
	a.get("/api/v1/deadletters?type=com.example.other", http.StatusOK, &page)
	for _, d := range page.DeadLetters {
		if d.ReplayedBy != "carol" {
			t.Fatalf("not marked: %+v", d)
		}
	}
}

// TestAPIOverview: per definition, counts by status, in flight, overdue,
// dead letters, throughput, and the p50/p99 durations of finished sagas.
func TestAPIOverview(t *testing.T) {
	e := newEnv(t)
	end := time.Now().Truncate(time.Millisecond)
	store, set := e.clockStore(end)
	e.useStore(store)
	ctx := context.Background()
	// 100 sagas, taking 1s to 100s, all ended at end
	for i := 1; i <= 100; i++ {
		p := steps(t, abc, store, nil, 0)
		set(end.Add(-time.Duration(i) * time.Second))
		ev, err := p.Handle(ctx, start(abc, fmt.Sprintf("s%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		set(end)
		for ev != nil && ev.Type() != "t.c.done" {
			if ev, err = p.Handle(ctx, *ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.order.Run("o1", order, o.PayAuthorized)
	e.order.Run("o2", order, o.Created)
	e.accept(abc, "acc")
	if _, err := e.deadLetterSink().Handle(ctx, deadLettered(start(o.Saga, "ghost"), "http://order", "503", "")); err != nil {
		t.Fatal(err)
	}
	e.op.Now = func() time.Time { return end.Add(time.Second) }
	a := newAPI(t, e, nil)
	var ov struct {
		Sagas []ops.Overview `json:"sagas"`
	}
	a.get("/api/v1/overview", http.StatusOK, &ov)
	by := map[string]ops.Overview{}
	for _, s := range ov.Sagas {
		by[s.Saga] = s
	}
	if len(ov.Sagas) != 3 {
		t.Fatalf("overview %+v", ov)
	}
	ab := by["abc"]
	if ab.ByStatus[saga.StatusCompleted] != 100 || ab.ByStatus[saga.StatusAccepted] != 1 || ab.InFlight != 1 || ab.Overdue != 0 ||
		ab.Finished != 100 || ab.P50Millis != 50_000 || ab.P99Millis != 99_000 || ab.PerSecond != 100.0/60 || ab.DeadLetters != 0 {
		t.Fatalf("abc %+v", ab)
	}
	or := by["order"]
	if or.ByStatus[saga.StatusRunning] != 2 || or.InFlight != 2 || or.DeadLetters != 1 || or.Finished != 0 || or.P99Millis != 0 {
		t.Fatalf("order %+v", or)
	}
	// an hour later: nothing finished in the last minute; every saga in
	// flight is overdue
	e.op.Now = func() time.Time { return end.Add(time.Hour) }
	a.get("/api/v1/overview", http.StatusOK, &ov)
	for _, s := range ov.Sagas {
		by[s.Saga] = s
	}
	if by["abc"].PerSecond != 0 || by["abc"].Overdue != 1 || by["order"].Overdue != 2 || by["abc"].P50Millis != 50_000 {
		t.Fatalf("an hour later %+v", ov.Sagas)
	}
}

// TestAPIBadRequests: malformed parameters are 400, with a message, in
// JSON.
func TestAPIBadRequests(t *testing.T) {
	e := newEnv(t)
	a := newAPI(t, e, tokenAuth)
	for _, path := range []string{
		"/api/v1/sagas?status=bogus",
		"/api/v1/sagas?limit=0",
		"/api/v1/sagas?limit=1001",
		"/api/v1/sagas?limit=ten",
		"/api/v1/sagas?overdue=maybe",
		"/api/v1/sagas?from=yesterday",
		"/api/v1/sagas?to=2026-13-01T00:00:00Z",
		"/api/v1/sagas?saga=nosuchsaga",
		"/api/v1/sagas?cursor=garbage",
		"/api/v1/deadletters?limit=0",
		"/api/v1/deadletters?cursor=garbage",
	} {
		var body ops.Error
		a.get(path, http.StatusBadRequest, &body)
		if body.Error == "" {
			t.Errorf("%s: no message", path)
		}
	}
	if r := a.act("/api/v1/deadletters/replay?limit=0&type=x", "carol"); r.status != http.StatusBadRequest {
		t.Errorf("replay all with a bad limit: %d", r.status)
	}
}
