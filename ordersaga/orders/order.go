// Package orders is the order domain shared by the order saga's order step
// (functions/order) and its REST API (functions/order-api): checking an
// order request's user with the users function (gRPC) and pricing its items
// from the catalogue, and the ids both derive from a saga.
package orders

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
)

// Orders checks and prices order requests. Both entry points use it: POST
// /orders checks a request before accepting it, and the order step checks
// it again, authoritatively, when the saga starts.
type Orders struct {
	users     userChecker
	catalogue *catalogue
	close     func() error
}

// New returns Orders for cfg, pricing from rdb's catalogue. It does not
// connect to the users function until the first check.
func New(cfg Config, rdb redis.UniversalClient) (*Orders, error) {
	users, err := dialUsers(cfg.Users, cfg.UsersTimeout)
	if err != nil {
		return nil, err
	}
	var checker userChecker = users
	if cfg.UsersCacheTTL > 0 {
		checker = newUserCache(users, cfg.UsersCacheTTL)
	}
	return &Orders{users: checker, catalogue: newCatalogue(rdb, cfg.CatalogueCacheTTL), close: users.Close}, nil
}

// Close releases the users function's connections.
func (o *Orders) Close() error { return o.close() }

// Quote is an order request checked and priced.
type Quote struct {
	Order ordersaga.Order // items priced where the SKU is known; total of those
	// Problems rejects the order when not empty: field → message, with the
	// field named as in the request ("user_id", "items[1].sku").
	Problems map[string]string
	reasons  []string // the same problems as one sentence each, user first, then items in order
}

// Rejected reports whether the order cannot be placed.
func (q Quote) Rejected() bool { return len(q.Problems) > 0 }

// Reason is why the order is rejected, e.g. `unknown user 999; unknown SKU "nope"`.
func (q Quote) Reason() string { return strings.Join(q.reasons, "; ") }

// Quote checks req's user with the users function and prices its items from
// the catalogue. An unknown user or SKU is a rejection in the
// quote, not an error; errors are saga.Transient when the users function or
// Redis is unavailable.
func (o *Orders) Quote(ctx context.Context, orderID string, req ordersaga.OrderRequest) (Quote, error) {
	q := Quote{
		Order:    ordersaga.Order{OrderID: orderID, UserID: req.UserID, Items: make([]ordersaga.Item, len(req.Items))},
		Problems: map[string]string{},
	}
	ok, err := o.users.Exists(ctx, req.UserID)
	if err != nil {
		return Quote{}, err
	}
	if !ok {
		q.Problems["user_id"] = "unknown user"
		q.reasons = append(q.reasons, fmt.Sprintf("unknown user %d", req.UserID))
	}
	skus := make([]string, len(req.Items))
	for i, it := range req.Items {
		skus[i] = it.SKU
	}
	prices, known, err := o.catalogue.lookup(ctx, skus)
	if err != nil {
		return Quote{}, err
	}
	for i, it := range req.Items {
		q.Order.Items[i] = ordersaga.Item{SKU: it.SKU, Qty: it.Qty}
		if !known[i] {
			q.Problems[fmt.Sprintf("items[%d].sku", i)] = "unknown SKU"
			q.reasons = append(q.reasons, fmt.Sprintf("unknown SKU %q", it.SKU))
			continue
		}
		q.Order.Items[i].PriceCents = prices[i]
		q.Order.TotalCents += prices[i] * int64(it.Qty)
	}
	if len(q.Problems) == 0 && q.Order.TotalCents <= 0 {
		// payment refuses to charge nothing (400), which would dead-letter
		// the saga's first step: refuse the order here instead
		q.Problems["items"] = "the order total must be positive"
		q.reasons = append(q.reasons, "the order total is 0")
	}
	return q, nil
}

// Ids. Every id this function derives is a UUIDv5 in a namespace of its own
// kind; the namespaces are themselves UUIDv5s of idNamespaceBase+kind in the
// URL namespace. They are part of the saga protocol: changing one changes
// every derived id, so a redelivery after an upgrade would start a new saga.
const idNamespaceBase = "https://github.com/ksaga/ksaga/functions/order#"

func deriveID(kind, name string) string {
	ns := uuid.NewSHA1(uuid.NameSpaceURL, []byte(idNamespaceBase+kind))
	return uuid.NewSHA1(ns, []byte(name)).String()
}

// OrderIDFor is the id of the order a saga creates: a UUIDv5 of the saga id.
// POST /orders knows it before the saga exists, and the same saga always
// creates the same order.
func OrderIDFor(sagaID string) string { return deriveID("order", sagaID) }

// SagaIDForIdempotencyKey is the saga id of POST /orders with an
// Idempotency-Key header: a UUIDv5 of the user id and the key, so a retried
// POST (same user, same key) names the same saga and sends the same Create
// event. Keys are scoped by user: two users may use the same key.
func SagaIDForIdempotencyKey(userID int32, key string) string {
	return deriveID("saga-from-idempotency-key", strconv.Itoa(int(userID))+"\n"+key)
}

// CreateEventID is the id of the Create command POST /orders sends for a
// saga: the broker and the Create step dedupe on it.
func CreateEventID(sagaID string) string { return deriveID("create-event", sagaID) }
