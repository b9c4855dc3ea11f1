package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// maxIdempotencyKey is the longest Idempotency-Key header accepted.
const maxIdempotencyKey = 255

// maxOrderReads bounds getOrder's reads of an order that keeps changing.
const maxOrderReads = 4

// api is the order function's REST API. Every answer is JSON; errors are
// apiError.
//
// POST /orders answers 202 once the Create command is in the broker; the
// order record is written when the broker delivers it to the Create step, so
// GET /orders/{id} may answer 404 for a few milliseconds after the 202
// (eventual consistency: poll, or follow the saga's events).
type api struct {
	orders  *orders
	store   saga.Store
	sink    *knfunc.Sink // nil without K_SINK
	aborter *aborter
	logger  *slog.Logger
	maxBody int64
}

// apiError is the body of every error answer.
type apiError struct {
	Error  string            `json:"error"`
	Fields map[string]string `json:"fields,omitempty"` // request field → problem
}

// accepted is the body of 202 Accepted from POST /orders.
type accepted struct {
	OrderID string `json:"order_id"`
	SagaID  string `json:"saga_id"`
}

// orderView is the body of GET /orders/{id}.
type orderView struct {
	ID         string           `json:"id"`
	UserID     int32            `json:"user_id"`
	Items      []ordersaga.Item `json:"items"` // priced
	TotalCents int64            `json:"total_cents"`
	Status     string           `json:"status"` // pending, confirmed or cancelled
	Reason     string           `json:"reason,omitempty"`
	Saga       *sagaView        `json:"saga"` // null once the saga has expired
}

// sagaView is an order's saga in GET /orders/{id}.
type sagaView struct {
	ID         string            `json:"id"`
	Status     saga.Status       `json:"status"`
	Version    int64             `json:"version"`
	Step       string            `json:"step"`
	Reason     string            `json:"reason"`
	FailedStep string            `json:"failed_step"`
	Deadline   time.Time         `json:"deadline"`
	Compensate []string          `json:"compensate"`
	Steps      []saga.StepRecord `json:"steps"`
}

// sagaSummary is one saga in GET /sagas.
type sagaSummary struct {
	ID         string      `json:"id"`
	Status     saga.Status `json:"status"`
	Step       string      `json:"step"`
	Version    int64       `json:"version"`
	Deadline   time.Time   `json:"deadline"`
	Overdue    bool        `json:"overdue"`
	UpdatedAt  time.Time   `json:"updated_at"`
	Reason     string      `json:"reason,omitempty"`
	FailedStep string      `json:"failed_step,omitempty"`
}

// sagaList is the body of GET /sagas.
type sagaList struct {
	Sagas []sagaSummary `json:"sagas"`
	More  bool          `json:"more"` // more sagas match than limit
}

// Bounds of GET /sagas?limit=.
const (
	defaultSagaList = 100
	maxSagaList     = 1000
)

// routes returns the API's handlers, for knfunc.Function.Routes.
func (a *api) routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /orders":     http.HandlerFunc(a.postOrder),
		"GET /orders/{id}": http.HandlerFunc(a.getOrder),
		"GET /sagas/{id}":  http.HandlerFunc(a.getSaga),
		"GET /sagas":       http.HandlerFunc(a.listSagas),

		"POST /orders/{id}/cancel": http.HandlerFunc(a.cancelOrder),
		"POST /sagas/{id}/redrive": http.HandlerFunc(a.redrive),
	}
}

// postOrder starts an order saga. Body: an ordersaga.OrderRequest, strict.
// 400: not JSON, unknown fields, or invalid (with fields); 422: unknown user
// or SKU (with fields); 503: no K_SINK, or the users function, Redis or the
// broker unavailable; 202: the Create command is in the broker, answer
// accepted with Location: /orders/<order_id>.
//
// With an Idempotency-Key header the saga id, and so the order id and the
// Create event's id, derive from the user and the key: a retried POST
// answers the same ids and starts no second saga (the first request's items
// win). Before the order is written its command is deduplicated by the
// Create step; once it exists, no command is sent. Without the header every
// POST starts a new saga.
func (a *api) postOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "request body larger than " + strconv.FormatInt(tooBig.Limit, 10) + " bytes"})
			return
		}
		writeJSON(w, http.StatusBadRequest, apiError{Error: "read body: " + err.Error()})
		return
	}
	req, err := ordersaga.DecodeOrderRequest(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid JSON: " + err.Error()})
		return
	}
	if p := req.Validate(); len(p) > 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid order", Fields: p})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "Idempotency-Key longer than " + strconv.Itoa(maxIdempotencyKey) + " bytes"})
		return
	}
	if a.sink == nil {
		a.logger.ErrorContext(r.Context(), "POST /orders without K_SINK")
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "cannot start sagas: K_SINK is not set; " +
			"bind the order function to the broker with a SinkBinding (or set K_SINK to the broker's URL)"})
		return
	}

	sagaID := uuid.NewString()
	if key != "" {
		sagaID = sagaIDForIdempotencyKey(req.UserID, key)
	}
	orderID := orderIDFor(sagaID)
	ctx := telemetry.WithAttrs(r.Context(), slog.String(telemetry.AttrCorrelationID, sagaID))
	if key != "" {
		// A retry of a request whose order exists answers as the first
		// did and sends nothing: once the saga has expired (retention),
		// its Create would no longer be deduplicated and would run the
		// order's saga again.
		n, err := a.orders.rdb.Exists(ctx, ordersaga.OrderKey(orderID)).Result()
		if err != nil {
			a.fail(w, r.WithContext(ctx), saga.Transient(err, "redis"))
			return
		}
		if n == 1 {
			w.Header().Set("Location", "/orders/"+orderID)
			writeJSON(w, http.StatusAccepted, accepted{OrderID: orderID, SagaID: sagaID})
			return
		}
	}
	q, err := a.orders.quote(ctx, orderID, req)
	if err != nil {
		a.fail(w, r.WithContext(ctx), err)
		return
	}
	if q.Rejected() {
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: "order rejected: " + q.Reason(), Fields: q.Problems})
		return
	}

	e := event.New()
	e.SetID(createEventID(sagaID))
	e.SetSource(ordersaga.SourceOrderAPI)
	e.SetType(ordersaga.Create)
	e.SetTime(a.orders.now())
	e.SetExtension(saga.ExtCorrelationID, sagaID)
	if err := e.SetData(event.ApplicationJSON, req); err != nil {
		a.fail(w, r.WithContext(ctx), err)
		return
	}
	if err := a.sink.Send(ctx, e); err != nil {
		a.failSend(w, r.WithContext(ctx), &e, err)
		return
	}
	a.logger.InfoContext(ctx, "order accepted", "order_id", orderID, "ce_id", e.ID())
	w.Header().Set("Location", "/orders/"+orderID)
	writeJSON(w, http.StatusAccepted, accepted{OrderID: orderID, SagaID: sagaID})
}

// getOrder answers an order and its saga: 200 orderView, 404 unknown (or
// not written yet), 503 Redis unavailable.
//
// The two are read one after the other, and a step may land in between
// (the order record changes only in the same script as its saga: create,
// confirm, cancel). So the order is read again after the saga: when it is
// unchanged, no such step ran between the reads and the answer is one
// moment of both; when it changed, both are read again.
func (a *api) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, err := a.orders.rdb.HGetAll(r.Context(), ordersaga.OrderKey(id)).Result()
	if err != nil {
		a.fail(w, r, saga.Transient(err, "redis"))
		return
	}
	if len(m) == 0 {
		writeJSON(w, http.StatusNotFound, apiError{Error: "order " + strconv.Quote(id) + " not found"})
		return
	}
	var st saga.State
	var sagaErr error
	for read := 1; ; read++ {
		st, sagaErr = a.store.Get(r.Context(), m["saga_id"])
		again, err := a.orders.rdb.HGetAll(r.Context(), ordersaga.OrderKey(id)).Result()
		if err != nil {
			a.fail(w, r, saga.Transient(err, "redis"))
			return
		}
		if len(again) == 0 { // deleted meanwhile (orders do not expire: by hand)
			writeJSON(w, http.StatusNotFound, apiError{Error: "order " + strconv.Quote(id) + " not found"})
			return
		}
		if maps.Equal(again, m) {
			break
		}
		// An order changes at most twice (written, then confirmed or
		// cancelled), so this ends; the bound is a guard.
		if read == maxOrderReads {
			a.fail(w, r, saga.Transient(errors.New("order "+id+" kept changing while read"), "redis"))
			return
		}
		m = again
	}
	v, err := parseOrder(id, m)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	switch {
	case errors.Is(sagaErr, saga.ErrNotFound): // expired after its retention
	case sagaErr != nil:
		a.fail(w, r, sagaErr)
		return
	default:
		v.Saga = &sagaView{
			ID: st.ID, Status: st.Status, Version: st.Version, Step: st.Step, Reason: st.Reason,
			FailedStep: st.FailedStep, Deadline: st.Deadline, Compensate: st.Compensate, Steps: st.Steps,
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// cancelOrder cancels an order whose saga is still running: the saga is
// aborted (abort.go) and compensates, which cancels the order (follow GET
// /orders/{id}). 202 accepted, also for a repeated cancel; 409 when the saga
// has completed (the order is confirmed), is compensating or has
// compensated for another reason, or has expired; 404 unknown order; 503
// no K_SINK, Redis or the broker unavailable (retry: the cancel is not
// applied twice).
func (a *api) cancelOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sagaID, err := a.orders.rdb.HGet(r.Context(), ordersaga.OrderKey(id), "saga_id").Result()
	if errors.Is(err, redis.Nil) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "order " + strconv.Quote(id) + " not found"})
		return
	}
	if err != nil {
		a.fail(w, r, saga.Transient(err, "redis"))
		return
	}
	r = r.WithContext(telemetry.WithAttrs(r.Context(), slog.String(telemetry.AttrCorrelationID, sagaID)))
	if a.sink == nil {
		a.fail(w, r, saga.Transient(errors.New("K_SINK is not set"), "the broker"))
		return
	}
	for read := 1; read <= maxOrderReads; read++ {
		st, err := a.store.Get(r.Context(), sagaID)
		if errors.Is(err, saga.ErrNotFound) {
			writeJSON(w, http.StatusConflict, apiError{Error: "order " + strconv.Quote(id) + " cannot be cancelled: its saga has ended and expired"})
			return
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		again := abortedBy(st, cancelCause)
		if !again && st.Status != saga.StatusRunning {
			writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("order %q cannot be cancelled: its saga is %s", id, st.Status)})
			return
		}
		failure, applied, err := a.aborter.abort(r.Context(), st, cancelCause, func(waiting string) string {
			return "cancelled by request, waiting on the " + waiting + " step"
		}, a.orders.now())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if failure == nil {
			continue // a step moved the saga between the read and the cancel
		}
		if applied || waitsOn(st, failure) {
			if err := a.sink.Send(r.Context(), *failure); err != nil {
				a.failSend(w, r, failure, err)
				return
			}
		}
		w.Header().Set("Location", "/orders/"+id)
		writeJSON(w, http.StatusAccepted, accepted{OrderID: id, SagaID: sagaID})
		return
	}
	a.fail(w, r, saga.Transient(errors.New("saga "+sagaID+" kept moving"), "the saga"))
}

// parseOrder reads an order hash as written by the step's effects.
func parseOrder(id string, m map[string]string) (orderView, error) {
	v := orderView{ID: id, Status: m["status"], Reason: m["reason"]}
	user, err := strconv.ParseInt(m["user_id"], 10, 32)
	if err != nil {
		return orderView{}, fmt.Errorf("order %s: user_id: %w", id, err)
	}
	v.UserID = int32(user)
	if v.TotalCents, err = strconv.ParseInt(m["total_cents"], 10, 64); err != nil {
		return orderView{}, fmt.Errorf("order %s: total_cents: %w", id, err)
	}
	if err := json.Unmarshal([]byte(m["items"]), &v.Items); err != nil {
		return orderView{}, fmt.Errorf("order %s: items: %w", id, err)
	}
	return v, nil
}

// getSaga answers any saga's state (saga.State as JSON): 404 unknown or
// expired, 503 Redis unavailable.
func (a *api) getSaga(w http.ResponseWriter, r *http.Request) {
	if st, ok := a.sagaOr404(w, r, r.PathValue("id")); ok {
		writeJSON(w, http.StatusOK, st)
	}
}

// sagaOr404 reads saga id, or answers 404 (unknown or expired) or the
// error, and reports whether it read it.
func (a *api) sagaOr404(w http.ResponseWriter, r *http.Request, id string) (saga.State, bool) {
	st, err := a.store.Get(r.Context(), id)
	if errors.Is(err, saga.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "saga " + strconv.Quote(id) + " not found"})
		return st, false
	}
	if err != nil {
		a.fail(w, r, err)
		return st, false
	}
	return st, true
}

// listSagas answers the unfinished sagas (running or compensating), the
// earliest deadline first, from the index the in-flight and overdue gauges
// read: GET /sagas?overdue=true lists only those past their deadline, what
// the KsagaSagasStuckPastDeadline alert counts; limit (default 100, at
// most 1000) bounds the list, and more says whether it cut some off. 400 bad
// query, 503 Redis unavailable. Finished sagas are not listed (GET
// /sagas/{id} answers them until they expire).
func (a *api) listSagas(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultSagaList
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSagaList {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "limit " + strconv.Quote(v) + ": want 1 to " + strconv.Itoa(maxSagaList)})
			return
		}
		limit = n
	}
	overdue := false
	if v := q.Get("overdue"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "overdue " + strconv.Quote(v) + ": want true or false"})
			return
		}
		overdue = b
	}
	now := a.orders.now()
	upTo := "+inf"
	if overdue {
		upTo = "(" + strconv.FormatInt(now.UnixMilli(), 10)
	}
	ids, err := a.orders.rdb.ZRangeByScore(r.Context(), redisstore.ActiveKey, &redis.ZRangeBy{Min: "-inf", Max: upTo, Count: int64(limit + 1)}).Result()
	if err != nil {
		a.fail(w, r, saga.Transient(err, "redis"))
		return
	}
	out := sagaList{Sagas: []sagaSummary{}, More: len(ids) > limit}
	for _, id := range ids[:min(len(ids), limit)] {
		st, err := a.store.Get(r.Context(), id)
		if errors.Is(err, saga.ErrNotFound) {
			continue // expired since it was indexed
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if st.Status.Terminal() {
			continue // finished since it was read from the index
		}
		out.Sagas = append(out.Sagas, sagaSummary{ID: st.ID, Status: st.Status, Step: st.Step, Version: st.Version,
			Deadline: st.Deadline, Overdue: st.Overdue(now), UpdatedAt: st.UpdatedAt, Reason: st.Reason, FailedStep: st.FailedStep})
	}
	writeJSON(w, http.StatusOK, out)
}

// failSend answers a failed publication of an event (a command, or one
// whose transition is applied already): the request was right, so never
// 400. A broker refusing the event is 502; anything else (503) is for the
// client to retry, which sends the same event again. The broker's address
// is only logged.
func (a *api) failSend(w http.ResponseWriter, r *http.Request, e *event.Event, err error) {
	if saga.Code(err) == saga.EInvalid {
		a.logger.ErrorContext(r.Context(), "broker refused the event", "type", e.Type(), "error", err.Error())
		writeJSON(w, http.StatusBadGateway, apiError{Error: "the broker refused the " + e.Type() + " event; retry once it accepts it"})
		return
	}
	a.fail(w, r, saga.Transient(err, "the broker"))
}

// fail answers an error by its saga code: 503 (with Retry-After) for a
// transient one, 400 for an invalid one, 500 for anything else, whose
// details are only logged.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := saga.StatusCode(err)
	msg := "internal error"
	var se *saga.Error
	if errors.As(err, &se) {
		msg = se.Message
	}
	level := slog.LevelWarn
	if status >= 500 {
		level = slog.LevelError
	}
	a.logger.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err.Error())
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
		msg += " unavailable, retry later"
	}
	writeJSON(w, status, apiError{Error: msg})
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client has gone if this fails
}
