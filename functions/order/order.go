package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
)

// orders is the order domain both entry points share: POST /orders checks
// a request with it before sending the Create command, and the Create step
// checks it again, authoritatively, when the broker delivers the command.
type orders struct {
	users       userChecker
	catalogue   *catalogue
	rdb         redis.UniversalClient
	sagaTimeout time.Duration    // a new saga's deadline (KSAGA_SAGA_TIMEOUT)
	now         func() time.Time // time.Now
}

// quote is an order request checked and priced.
type quote struct {
	Order ordersaga.Order // items priced where the SKU is known; total of those
	// Problems rejects the order when not empty: field → message, with the
	// field named as in the request ("user_id", "items[1].sku").
	Problems map[string]string
	reasons  []string // the same problems as one sentence each, user first, then items in order
}

// Rejected reports whether the order cannot be placed.
func (q quote) Rejected() bool { return len(q.Problems) > 0 }

// Reason is why the order is rejected, e.g. `unknown user 999; unknown SKU "nope"`.
func (q quote) Reason() string { return strings.Join(q.reasons, "; ") }

// quote checks req's user with the users function and prices its items from
// the catalogue. An unknown user or SKU is a rejection in the
// quote, not an error; errors are saga.Transient when the users function or
// Redis is unavailable.
func (o *orders) quote(ctx context.Context, orderID string, req ordersaga.OrderRequest) (quote, error) {
	q := quote{
		Order:    ordersaga.Order{OrderID: orderID, UserID: req.UserID, Items: make([]ordersaga.Item, len(req.Items))},
		Problems: map[string]string{},
	}
	ok, err := o.users.Exists(ctx, req.UserID)
	if err != nil {
		return quote{}, err
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
		return quote{}, err
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

// sagaIDForEvent is the saga id of a Create command without correlationid:
// a UUIDv5 of its source+"\n"+id, so that a redelivery of the command (same
// source and id) reaches the same saga and is deduplicated.
func sagaIDForEvent(source, id string) string { return deriveID("saga-from-event", source+"\n"+id) }

// orderIDFor is the id of the order a saga creates: a UUIDv5 of the saga id.
// POST /orders knows it before the saga exists, and the same saga always
// creates the same order.
func orderIDFor(sagaID string) string { return deriveID("order", sagaID) }

// sagaIDForIdempotencyKey is the saga id of POST /orders with an
// Idempotency-Key header: a UUIDv5 of the user id and the key, so a retried
// POST (same user, same key) names the same saga and sends the same Create
// event. Keys are scoped by user: two users may use the same key.
func sagaIDForIdempotencyKey(userID int32, key string) string {
	return deriveID("saga-from-idempotency-key", strconv.Itoa(int(userID))+"\n"+key)
}

// createEventID is the id of the Create command POST /orders sends for a
// saga: the broker and the Create step dedupe on it.
func createEventID(sagaID string) string { return deriveID("create-event", sagaID) }
