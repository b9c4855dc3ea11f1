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
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/ordersaga/orders"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/telemetry"
)

// maxIdempotencyKey is the longest Idempotency-Key header accepted.
const maxIdempotencyKey = 255

// maxOrderReads bounds getOrder's reads of an order that keeps changing.
const maxOrderReads = 4

// withdrawnReason is the reason of an order withdrawn because the broker
// did not take its Create command.
const withdrawnReason = "the broker did not accept the order"

// Order statuses answered by GET /orders/{id}: as the order step writes
// them, and "accepted" before its saga's start has run.
const (
	statusAccepted  = "accepted"
	statusCancelled = "cancelled"
)

// api is the order saga's REST API. Every answer is JSON; errors are
// apiError.
//
// POST /orders records the saga as accepted (ops.Operator.Accept) and
// answers 202 once its Create command is in the broker: from then on GET
// /orders/{id} answers the order — "accepted" until the saga's start has
// run, then the order as the order step wrote it — and the order always
// reaches a terminal status (confirmed, or cancelled with a reason), even
// if the command is lost (eventual consistency: poll, or follow the saga).
type api struct {
	orders  *orders.Orders
	op      *ops.Operator
	rdb     redis.UniversalClient
	sink    *knfunc.Sink // nil without K_SINK
	logger  *slog.Logger
	maxBody int64
	now     func() time.Time
	// authorize, when set, checks the caller of every route against the
	// user of the order (placed, read or cancelled): an error wrapping
	// knfunc.ErrUnauthenticated is a 401, any other a 403 (auth.go).
	authorize func(r *http.Request, userID int32) error
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
	Items      []ordersaga.Item `json:"items"` // priced once the saga has started
	TotalCents int64            `json:"total_cents"`
	Status     string           `json:"status"` // accepted, pending, confirmed or cancelled
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
	Compensate []string          `json:"compensate"` // left to undo
	Steps      []saga.StepRecord `json:"steps"`
}

// routes returns the API's handlers, for knfunc.Function.Routes.
func (a *api) routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /orders":             http.HandlerFunc(a.postOrder),
		"GET /orders/{id}":         http.HandlerFunc(a.getOrder),
		"POST /orders/{id}/cancel": http.HandlerFunc(a.cancelOrder),
	}
}

// postOrder starts an order saga. Body: an ordersaga.OrderRequest, strict.
// 400: not JSON, unknown fields, or invalid (with fields); 401/403: the
// caller is not the order's user (when authentication is on); 422: unknown
// user or SKU (with fields); 503: no K_SINK, or the users function, Redis
// or the broker unavailable (the order is withdrawn: retry); 202: accepted,
// the Create command is in the broker, with Location: /orders/<order_id>.
//
// With an Idempotency-Key header the saga id, and so the order id and the
// Create event's id, derive from the user and the key: a retried POST
// answers the same ids and starts no second saga (the first request's items
// win: a retry while the saga is accepted sends the command it was accepted
// with again). An order withdrawn when the broker did not take it cannot be
// placed again with its key: 409, place it with a new key. Without the
// header every POST starts a new saga.
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
	if !a.authorized(w, r, req.UserID) {
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
			"bind the order-api function to the broker with a SinkBinding (or set K_SINK to the broker's URL)"})
		return
	}

	sagaID := uuid.NewString()
	if key != "" {
		sagaID = orders.SagaIDForIdempotencyKey(req.UserID, key)
	}
	orderID := orders.OrderIDFor(sagaID)
	ctx := telemetry.WithAttrs(r.Context(), slog.String(telemetry.AttrCorrelationID, sagaID))
	r = r.WithContext(ctx)
	if key != "" {
		// A retry of a request whose saga exists answers as the first did
		// and sends nothing: once the saga has ended, its Create would be
		// refused anyway.
		st, err := a.op.Store.Get(ctx, sagaID)
		switch {
		case err == nil && st.Status == saga.StatusCompensated && st.Reason == withdrawnReason:
			writeJSON(w, http.StatusConflict, apiError{Error: "order " + strconv.Quote(orderID) + " was withdrawn (" + withdrawnReason +
				"): place it again with a new Idempotency-Key"})
			return
		case err == nil && st.Status != saga.StatusAccepted:
			a.acceptedAnswer(w, orderID, sagaID)
			return
		case err != nil && !errors.Is(err, saga.ErrNotFound):
			a.fail(w, r, err)
			return
		}
	}
	q, err := a.orders.Quote(ctx, orderID, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if q.Rejected() {
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: "order rejected: " + q.Reason(), Fields: q.Problems})
		return
	}

	e := event.New()
	e.SetID(orders.CreateEventID(sagaID))
	e.SetSource(a.op.Source)
	e.SetType(ordersaga.Create)
	e.SetTime(a.now())
	e.SetExtension(saga.ExtCorrelationID, sagaID)
	if err := e.SetData(event.ApplicationJSON, req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.op.Accept(ctx, ordersaga.Saga, sagaID, orderID, &e)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if res.Duplicate && res.Reply != nil {
		// a retry of an accepted order: send the command it was accepted
		// with, the only one its start runs
		e.DataEncoded = res.Reply.Data
	}
	if err := a.sink.Send(ctx, e); err != nil {
		// Not accepted after all, unless the broker had stored it and the
		// saga started meanwhile.
		withdrawn, werr := a.op.Withdraw(ctx, sagaID, withdrawnReason)
		switch {
		case werr != nil:
			a.logger.ErrorContext(ctx, "could not withdraw an order the broker did not accept: the deadline sweeper will send it again", "error", werr.Error())
		case !withdrawn:
			a.acceptedAnswer(w, orderID, sagaID)
			return
		}
		a.failSend(w, r, &e, err)
		return
	}
	a.logger.InfoContext(ctx, "order accepted", "order_id", orderID, "ce_id", e.ID())
	a.acceptedAnswer(w, orderID, sagaID)
}

func (a *api) acceptedAnswer(w http.ResponseWriter, orderID, sagaID string) {
	w.Header().Set("Location", "/orders/"+orderID)
	writeJSON(w, http.StatusAccepted, accepted{OrderID: orderID, SagaID: sagaID})
}

// authorized checks the caller against the order's user when
// authentication is on, answering 401 or 403 if it fails.
func (a *api) authorized(w http.ResponseWriter, r *http.Request, userID int32) bool {
	if a.authorize == nil {
		return true
	}
	err := a.authorize(r, userID)
	switch {
	case err == nil:
		return true
	case errors.Is(err, knfunc.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="orders"`)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: err.Error()})
	default:
		writeJSON(w, http.StatusForbidden, apiError{Error: err.Error()})
	}
	return false
}

// getOrder answers an order and its saga: 200 orderView, 404 unknown,
// 401/403 the caller is not the order's user (when authentication is on),
// 503 Redis unavailable.
//
// The two are read one after the other, and a step may land in between
// (the order record changes only in the same script as its saga: create,
// confirm, cancel). So the order is read again after the saga: when it is
// unchanged, no such step ran between the reads and the answer is one
// moment of both; when it changed, both are read again. An order whose
// saga has not started yet is answered from the saga's record.
func (a *api) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, err := a.rdb.HGetAll(r.Context(), ordersaga.OrderKey(id)).Result()
	if err != nil {
		a.fail(w, r, saga.Transient(err, "redis"))
		return
	}
	if len(m) == 0 {
		a.getAccepted(w, r, id)
		return
	}
	var st saga.State
	var sagaErr error
	for read := 1; ; read++ {
		st, sagaErr = a.op.Store.Get(r.Context(), m["saga_id"])
		again, err := a.rdb.HGetAll(r.Context(), ordersaga.OrderKey(id)).Result()
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
	if !a.authorized(w, r, v.UserID) {
		return
	}
	switch {
	case errors.Is(sagaErr, saga.ErrNotFound): // expired after its retention
	case sagaErr != nil:
		a.fail(w, r, sagaErr)
		return
	default:
		v.Saga = viewOf(st)
	}
	writeJSON(w, http.StatusOK, v)
}

// getAccepted answers an order whose saga has not written it: accepted
// and waiting for its start, or rejected before it ran.
func (a *api) getAccepted(w http.ResponseWriter, r *http.Request, id string) {
	sagaID, err := a.op.Store.ByKey(r.Context(), ordersaga.Saga.Name, id)
	var st saga.State
	if err == nil {
		st, err = a.op.Store.Get(r.Context(), sagaID)
	}
	if errors.Is(err, saga.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "order " + strconv.Quote(id) + " not found"})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	v := orderView{ID: id, Status: statusAccepted, Saga: viewOf(st), Items: []ordersaga.Item{}}
	if st.Status.Terminal() {
		v.Status, v.Reason = statusCancelled, st.Reason
	}
	var req ordersaga.OrderRequest
	if json.Unmarshal(st.Data, &req) == nil {
		v.UserID = req.UserID
		for _, it := range req.Items {
			v.Items = append(v.Items, ordersaga.Item{SKU: it.SKU, Qty: it.Qty})
		}
	}
	if !a.authorized(w, r, v.UserID) {
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func viewOf(st saga.State) *sagaView {
	return &sagaView{ID: st.ID, Status: st.Status, Version: st.Version, Step: st.Step, Reason: st.Reason,
		FailedStep: st.FailedStep, Deadline: st.Deadline, Compensate: st.Compensate, Steps: st.Steps}
}

// cancelOrder cancels an order whose saga has not ended: the saga is
// aborted at the step it waits on and compensates, which cancels the order
// (follow GET /orders/{id}); an order whose saga has not started is
// cancelled at once. 202 accepted, also for a repeated cancel; 409 when
// the saga is compensating or has ended for another reason (a confirmed
// order, an order already cancelled); 404 unknown order; 401/403 the caller
// is not the order's user (when authentication is on); 503 no K_SINK, Redis
// or the broker unavailable (retry: the cancel is not applied twice).
func (a *api) cancelOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sagaID, err := a.rdb.HGet(r.Context(), ordersaga.OrderKey(id), "saga_id").Result()
	if errors.Is(err, redis.Nil) {
		sagaID, err = a.op.Store.ByKey(r.Context(), ordersaga.Saga.Name, id)
	}
	if errors.Is(err, redis.Nil) || errors.Is(err, saga.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "order " + strconv.Quote(id) + " not found"})
		return
	}
	if err != nil {
		a.fail(w, r, saga.Transient(err, "redis"))
		return
	}
	r = r.WithContext(telemetry.WithAttrs(r.Context(), slog.String(telemetry.AttrCorrelationID, sagaID)))
	st, err := a.op.Store.Get(r.Context(), sagaID)
	if errors.Is(err, saga.ErrNotFound) {
		writeJSON(w, http.StatusConflict, apiError{Error: "order " + strconv.Quote(id) + " cannot be cancelled: its saga has ended and expired"})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var o struct {
		UserID int32 `json:"user_id"`
	}
	_ = json.Unmarshal(st.Data, &o)
	if !a.authorized(w, r, o.UserID) {
		return
	}
	actor := "user " + strconv.Itoa(int(o.UserID))
	_, err = a.op.Abort(r.Context(), sagaID, ops.CauseCancel, actor, func(step string) string {
		return "cancelled by request, waiting on the " + step + " step"
	})
	switch {
	case errors.Is(err, ops.ErrConflict):
		writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("order %q cannot be cancelled: %s", id,
			strings.TrimPrefix(err.Error(), ops.ErrConflict.Error()+": "))})
		return
	case err != nil:
		a.failSend(w, r, nil, err)
		return
	}
	w.Header().Set("Location", "/orders/"+id)
	writeJSON(w, http.StatusAccepted, accepted{OrderID: id, SagaID: sagaID})
}

// parseOrder reads an order hash as written by the order step's effects.
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

// failSend answers a failed publication of an event: the request was
// right, so never 400. A broker refusing the event is 502; anything else
// (503) is for the client to retry. The broker's address is only logged.
func (a *api) failSend(w http.ResponseWriter, r *http.Request, e *event.Event, err error) {
	if saga.Code(err) == saga.EInvalid {
		typ := "the"
		if e != nil {
			typ = "the " + e.Type()
		}
		a.logger.ErrorContext(r.Context(), "broker refused the event", "error", err.Error())
		writeJSON(w, http.StatusBadGateway, apiError{Error: "the broker refused " + typ + " event; retry once it accepts it"})
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
