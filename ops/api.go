package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ksaga/ksaga/saga"
)

// API is the admin HTTP API of the sagas an Operator serves, under
// /api/v1 (every answer JSON, errors {"error": "..."}):
//
//	GET  /api/v1/definitions                 the definitions served
//	GET  /api/v1/overview                    per definition: counts by status, overdue, dead letters, throughput, p50/p99 duration
//	GET  /api/v1/sagas                       a page of sagas: saga, status, overdue, from, to (RFC 3339), q (a saga id or business key), limit, cursor; summary=true leaves out each saga's history, data, outputs and awaited event
//	GET  /api/v1/sagas/{id}                  one saga's record, with its dead letters and what each history entry ran and was caused by
//	GET  /api/v1/sagas/{id}/watch            the record again on every change (server-sent events)
//	POST /api/v1/sagas/{id}/abort            fail a running saga into compensation (actions)
//	POST /api/v1/sagas/{id}/redrive          resume a failed compensation (actions)
//	GET  /api/v1/deadletters                 a page of dead letters: saga, type, destination, limit, cursor
//	GET  /api/v1/deadletters/{id}            one dead letter
//	POST /api/v1/deadletters/{id}/replay     publish it again (actions)
//	POST /api/v1/deadletters/replay          publish again every one matching saga, type, destination (actions)
//
// Reads need no credentials. Actions need Authorize to name the actor
// (a token, an OIDC subject); without Authorize they are refused (403).
// Every action is recorded in the saga's history with its actor.
type API struct {
	Op *Operator
	// Authorize returns who makes an action request, or an error: 401 for
	// ErrUnauthenticated, 503 for ErrAuthUnavailable (the identity could
	// not be checked now, e.g. the OIDC issuer is unreachable), 403 for any
	// other. Every refusal is logged as a security event.
	Authorize func(r *http.Request) (actor string, err error)
	// TraceURL is a trace viewer's URL with "{trace_id}" in it (Jaeger,
	// Tempo), shown with each traced saga.
	TraceURL string
	// Watch is how often a watched saga is read (default 250ms).
	Watch time.Duration
}

// ErrUnauthenticated: an action without valid credentials (401).
var ErrUnauthenticated = errors.New("credentials required")

// ErrAuthUnavailable: an action's credentials could not be checked now
// (503, retry later).
var ErrAuthUnavailable = errors.New("credentials cannot be checked now")

// Routes returns the API's handlers by pattern.
func (a *API) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /api/v1/definitions":              http.HandlerFunc(a.definitions),
		"GET /api/v1/overview":                 http.HandlerFunc(a.overview),
		"GET /api/v1/sagas":                    http.HandlerFunc(a.list),
		"GET /api/v1/sagas/{id}":               http.HandlerFunc(a.get),
		"GET /api/v1/sagas/{id}/watch":         http.HandlerFunc(a.watch),
		"POST /api/v1/sagas/{id}/abort":        a.action(a.abort),
		"POST /api/v1/sagas/{id}/redrive":      a.action(a.redrive),
		"GET /api/v1/deadletters":              http.HandlerFunc(a.deadLetters),
		"GET /api/v1/deadletters/{id}":         http.HandlerFunc(a.deadLetter),
		"POST /api/v1/deadletters/{id}/replay": a.action(a.replay),
		"POST /api/v1/deadletters/replay":      a.action(a.replayAll),
	}
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client has gone if this fails
}

// fail answers err with its status: 404 unknown, 409 conflict, 400
// invalid, 503 transient (Retry-After), 500 anything else (details only
// logged).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var se *saga.Error
	switch {
	case errors.Is(err, saga.ErrNotFound):
		status, msg = http.StatusNotFound, "not found"
	case errors.Is(err, ErrConflict):
		status, msg = http.StatusConflict, err.Error()
	case errors.As(err, &se):
		status, msg = saga.StatusCode(err), se.Message
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
			msg += " unavailable, retry later"
		}
	}
	level := slog.LevelWarn
	if status >= 500 {
		level = slog.LevelError
	}
	a.Op.logger().Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err.Error())
	WriteJSON(w, status, Error{msg})
}

// action wraps an action handler: the request must be authorized.
func (a *API) action(h func(w http.ResponseWriter, r *http.Request, actor string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Authorize == nil {
			WriteJSON(w, http.StatusForbidden, Error{"actions are turned off: no credentials are configured (KSAGA_CONSOLE_TOKEN, or OIDC)"})
			return
		}
		actor, err := a.Authorize(r)
		if err != nil {
			status := http.StatusForbidden
			switch {
			case errors.Is(err, ErrUnauthenticated):
				status = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Bearer realm="ksaga"`)
			case errors.Is(err, ErrAuthUnavailable):
				status = http.StatusServiceUnavailable
				w.Header().Set("Retry-After", "1")
			}
			a.Op.logger().WarnContext(r.Context(), "security: action refused", "method", r.Method, "path", r.URL.Path,
				"status", status, "error", err.Error(), "remote", r.RemoteAddr)
			WriteJSON(w, status, Error{err.Error()})
			return
		}
		h(w, r, actor)
	})
}

func (a *API) definitions(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]any{"definitions": a.Op.Sagas.Definitions()})
}

// SagaView is one saga as the API answers it.
type SagaView struct {
	saga.State
	Overdue     bool              `json:"overdue"`
	TraceURL    string            `json:"trace_url,omitempty"`
	DeadLetters []saga.DeadLetter `json:"dead_letters,omitempty"`
	// Kinds and Causes go with Steps, entry by entry (one saga's view
	// only): what the entry's event ran in the saga's definition
	// ("forward", "compensate", "final"; "" for an operator action or a
	// note), and the id of the event that caused the entry's event, where
	// the record tells ("" for a command a client sent).
	Kinds  []string `json:"kinds,omitempty"`
	Causes []string `json:"causes,omitempty"`
}

// annotate fills v's Kinds and Causes from its history and definition.
// An event a transition emits has the id saga.ReplyID derives from the
// event it handled, its cause: the cause of an entry's event is the
// earlier entry whose handled event that id derives from.
func annotate(v *SagaView, d *saga.Definition) {
	v.Kinds, v.Causes = make([]string, len(v.Steps)), make([]string, len(v.Steps))
	for i, e := range v.Steps {
		if r, ok := d.Route(e.EventType); ok && !e.Note {
			v.Kinds[i] = r.Kind.String()
		}
		for j := i - 1; j >= 0; j-- {
			p := v.Steps[j]
			if !p.Note && p.Emitted == e.EventType && p.EventID != "" && saga.ReplyID(p.EventSource, p.EventID, p.Emitted) == e.EventID {
				v.Causes[i] = p.EventID
				break
			}
		}
	}
}

func (a *API) view(st saga.State, now time.Time) SagaView {
	v := SagaView{State: st, Overdue: st.Overdue(now)}
	if a.TraceURL != "" && st.TraceID != "" {
		v.TraceURL = strings.ReplaceAll(a.TraceURL, "{trace_id}", st.TraceID)
	}
	return v
}

// SagaPage is the body of GET /api/v1/sagas.
type SagaPage struct {
	Sagas []SagaView `json:"sagas"`
	Next  string     `json:"next,omitempty"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := a.Op.now()
	summary, err := boolParam(q.Get("summary"))
	if err != nil {
		WriteJSON(w, http.StatusBadRequest, Error{"summary: " + err.Error()})
		return
	}
	if term := strings.TrimSpace(q.Get("q")); term != "" {
		a.search(w, r, term, q.Get("saga"), summary, now)
		return
	}
	query := saga.Query{Saga: q.Get("saga"), Cursor: q.Get("cursor"), Now: now}
	if query.Saga != "" {
		if _, ok := a.Op.Sagas.Get(query.Saga); !ok {
			WriteJSON(w, http.StatusBadRequest, Error{"saga " + strconv.Quote(query.Saga) + ": not one of " + strings.Join(a.Op.Sagas.Names(), ", ")})
			return
		}
	}
	if v := q.Get("status"); v != "" {
		if !saga.Status(v).Valid() {
			WriteJSON(w, http.StatusBadRequest, Error{fmt.Sprintf("status %q: want one of %v", v, saga.Statuses)})
			return
		}
		query.Status = []saga.Status{saga.Status(v)}
	}
	if query.Limit, err = intParam(q.Get("limit"), 50, 1, 1000); err != nil {
		WriteJSON(w, http.StatusBadRequest, Error{"limit: " + err.Error()})
		return
	}
	if query.Overdue, err = boolParam(q.Get("overdue")); err != nil {
		WriteJSON(w, http.StatusBadRequest, Error{"overdue: " + err.Error()})
		return
	}
	for name, dst := range map[string]*time.Time{"from": &query.From, "to": &query.To} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				WriteJSON(w, http.StatusBadRequest, Error{name + ": want an RFC 3339 time like 2026-12-06T10:00:00Z"})
				return
			}
		}
	}
	page, err := a.Op.Store.List(r.Context(), query)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := SagaPage{Sagas: make([]SagaView, 0, len(page.Sagas)), Next: page.Next}
	for _, st := range page.Sagas {
		if _, ok := a.Op.Sagas.Get(st.Saga); ok {
			out.Sagas = append(out.Sagas, a.listed(st, now, summary))
		}
	}
	WriteJSON(w, http.StatusOK, out)
}

// listed is a saga as a list shows it: with summary, without its history,
// data, outputs and awaited event.
func (a *API) listed(st saga.State, now time.Time, summary bool) SagaView {
	if summary {
		st.Steps, st.Data, st.Outputs, st.Next = nil, nil, nil, nil
	}
	return a.view(st, now)
}

// search finds sagas by id or business key.
func (a *API) search(w http.ResponseWriter, r *http.Request, term, def string, summary bool, now time.Time) {
	out := SagaPage{Sagas: []SagaView{}}
	seen := map[string]bool{}
	add := func(id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		st, err := a.Op.Store.Get(r.Context(), id)
		if errors.Is(err, saga.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, ok := a.Op.Sagas.Get(st.Saga); ok && (def == "" || st.Saga == def) {
			out.Sagas = append(out.Sagas, a.listed(st, now, summary))
		}
		return nil
	}
	if err := add(term); err != nil {
		a.fail(w, r, err)
		return
	}
	for _, n := range a.Op.Sagas.Names() {
		if def != "" && n != def {
			continue
		}
		id, err := a.Op.Store.ByKey(r.Context(), n, term)
		if errors.Is(err, saga.ErrNotFound) {
			continue
		}
		if err == nil {
			err = add(id)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
	}
	WriteJSON(w, http.StatusOK, out)
}

func (a *API) load(w http.ResponseWriter, r *http.Request) (SagaView, bool) {
	st, err := a.Op.Store.Get(r.Context(), r.PathValue("id"))
	var d *saga.Definition
	if err == nil {
		var ok bool
		if d, ok = a.Op.Sagas.Get(st.Saga); !ok {
			err = saga.ErrNotFound // another definition's: not this API's to show
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return SagaView{}, false
	}
	v := a.view(st, a.Op.now())
	annotate(&v, d)
	dls, err := a.Op.Store.DeadLetters(r.Context(), saga.DeadLetterQuery{SagaID: st.ID, Limit: 100})
	if err != nil {
		a.fail(w, r, err)
		return SagaView{}, false
	}
	v.DeadLetters = dls.DeadLetters
	return v, true
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	if v, ok := a.load(w, r); ok {
		WriteJSON(w, http.StatusOK, v)
	}
}

// watch streams the saga as server-sent events: an event "saga" with the
// record (as GET /api/v1/sagas/{id}) now and after every change, a comment
// every 15s to keep proxies from closing the stream, until the client
// leaves or the saga's record is gone (expired). An ended saga is still
// watched: an operator may redrive it or note a replayed dead letter.
func (a *API) watch(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	v, ok := a.load(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(v SagaView) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: saga\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if send(v) != nil {
		return
	}
	every := a.Watch
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastSent, lastBeat := v, time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		st, err := a.Op.Store.Get(ctx, lastSent.ID)
		cancel()
		if err != nil {
			if errors.Is(err, saga.ErrNotFound) {
				return
			}
			continue
		}
		if st.Version != lastSent.Version || len(st.Steps) != len(lastSent.Steps) || st.Overdue(a.Op.now()) != lastSent.Overdue {
			nv, ok := a.load(discard{}, r)
			if !ok {
				continue
			}
			if send(nv) != nil {
				return
			}
			lastSent, lastBeat = nv, time.Now()
			continue
		}
		if time.Since(lastBeat) > 15*time.Second {
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			lastBeat = time.Now()
		}
	}
}

// discard is a ResponseWriter for reads whose errors are only logged.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func (a *API) abort(w http.ResponseWriter, r *http.Request, actor string) {
	id := r.PathValue("id")
	if _, ok := a.load(w, r); !ok {
		return
	}
	ab, err := a.Op.Abort(r.Context(), id, CauseAbort, actor, func(step string) string {
		return "aborted by " + actor + " waiting on the " + step + " step"
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := map[string]any{"saga_id": id, "step": ab.Step, "applied": ab.Applied}
	if ab.Event != nil {
		out["event_type"] = ab.Event.Type
	}
	WriteJSON(w, http.StatusAccepted, out)
}

func (a *API) redrive(w http.ResponseWriter, r *http.Request, actor string) {
	id := r.PathValue("id")
	if _, ok := a.load(w, r); !ok {
		return
	}
	e, err := a.Op.Redrive(r.Context(), id, actor)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, map[string]any{"saga_id": id, "event_type": e.Type})
}

// DeadLetterPage is the body of GET /api/v1/deadletters.
type DeadLetterPage = saga.DeadLetterPage

func (a *API) dlQuery(r *http.Request) (saga.DeadLetterQuery, error) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 50, 1, 1000)
	if err != nil {
		return saga.DeadLetterQuery{}, saga.Invalid("limit: %v", err)
	}
	return saga.DeadLetterQuery{SagaID: q.Get("saga"), Type: q.Get("type"), Destination: q.Get("destination"), Limit: limit, Cursor: q.Get("cursor")}, nil
}

func (a *API) deadLetters(w http.ResponseWriter, r *http.Request) {
	q, err := a.dlQuery(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	page, err := a.Op.Store.DeadLetters(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, page)
}

func (a *API) deadLetter(w http.ResponseWriter, r *http.Request) {
	dl, err := a.Op.Store.DeadLetter(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, dl)
}

func (a *API) replay(w http.ResponseWriter, r *http.Request, actor string) {
	dl, err := a.Op.Replay(r.Context(), r.PathValue("id"), actor)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, dl)
}

// maxReplayAll bounds one replay-all request.
const maxReplayAll = 1000

func (a *API) replayAll(w http.ResponseWriter, r *http.Request, actor string) {
	q, err := a.dlQuery(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if q.SagaID == "" && q.Type == "" && q.Destination == "" {
		WriteJSON(w, http.StatusBadRequest, Error{"replay all needs a filter: saga, type or destination"})
		return
	}
	q.Limit, q.Cursor = maxReplayAll, ""
	page, err := a.Op.Store.DeadLetters(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var replayed []string
	for _, dl := range page.DeadLetters {
		if _, err := a.Op.Replay(r.Context(), dl.ID, actor); err != nil {
			a.fail(w, r, fmt.Errorf("after %d replayed: %w", len(replayed), err))
			return
		}
		replayed = append(replayed, dl.ID)
	}
	WriteJSON(w, http.StatusAccepted, map[string]any{"replayed": replayed})
}

// Overview is one definition's summary in GET /api/v1/overview.
type Overview struct {
	Saga     string              `json:"saga"`
	ByStatus map[saga.Status]int `json:"by_status"`
	InFlight int                 `json:"in_flight"`
	Overdue  int                 `json:"overdue"`
	// DeadLetters counts the kept dead letters of this saga's event types.
	DeadLetters int `json:"dead_letters"`
	// PerSecond is the sagas finished per second over the last minute.
	PerSecond float64 `json:"per_second"`
	// P50 and P99 are the durations (ms) of the last 1,000 finished sagas.
	P50Millis int64 `json:"p50_ms"`
	P99Millis int64 `json:"p99_ms"`
	Finished  int   `json:"finished_sampled"`
}

func (a *API) overview(w http.ResponseWriter, r *http.Request) {
	now := a.Op.now()
	out := []Overview{}
	dls, err := a.Op.Store.DeadLetters(r.Context(), saga.DeadLetterQuery{Limit: 1000})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	for _, d := range a.Op.Sagas.Definitions() {
		st, err := a.Op.Store.Stats(r.Context(), d.Name, now)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		o := Overview{Saga: d.Name, ByStatus: st.ByStatus, Overdue: st.Overdue,
			InFlight: st.ByStatus[saga.StatusAccepted] + st.ByStatus[saga.StatusRunning] + st.ByStatus[saga.StatusCompensating]}
		types := d.Types()
		for _, dl := range dls.DeadLetters {
			if slices.Contains(types, dl.EventType) {
				o.DeadLetters++
			}
		}
		var durs []time.Duration
		recent := 0
		for _, f := range st.Recent {
			durs = append(durs, f.Duration)
			if now.Sub(f.At) <= time.Minute {
				recent++
			}
		}
		o.PerSecond = float64(recent) / 60
		o.Finished = len(durs)
		if len(durs) > 0 {
			slices.Sort(durs)
			o.P50Millis = durs[(len(durs)-1)*50/100].Milliseconds()
			o.P99Millis = durs[(len(durs)-1)*99/100].Milliseconds()
		}
		out = append(out, o)
	}
	WriteJSON(w, http.StatusOK, map[string]any{"sagas": out, "at": now})
}

func intParam(v string, def, lo, hi int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q: want %d to %d", v, lo, hi)
	}
	return n, nil
}

func boolParam(v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%q: want true or false", v)
	}
	return b, nil
}
