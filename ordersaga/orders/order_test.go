package orders

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestQuote: a request is priced from the catalogue, never by the client;
// an unknown user or SKU and a total of nothing are problems named by the
// request's field and told in one sentence, user first then items in
// order; a users function that is down is a transient error.
func TestQuote(t *testing.T) {
	rdb := sagatest.Redis(t)
	if err := ordersaga.LoadFixture(context.Background(), rdb, true); err != nil {
		t.Fatal(err)
	}
	rdb.Set(context.Background(), ordersaga.CatalogKey("sample"), 0, 0)
	users := &countingUsers{known: map[int32]bool{1: true}}
	o := &Orders{users: users, catalogue: newCatalogue(rdb, 0)}
	line := func(sku string, qty int) ordersaga.LineItem { return ordersaga.LineItem{SKU: sku, Qty: qty} }

	q, err := o.Quote(t.Context(), "o1", ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{line("book", 2), line("lamp", 1)}})
	if err != nil || q.Rejected() || q.Reason() != "" {
		t.Fatalf("quote: %+v %v", q, err)
	}
	want := ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 2*1250 + 4999,
		Items: []ordersaga.Item{{SKU: "book", Qty: 2, PriceCents: 1250}, {SKU: "lamp", Qty: 1, PriceCents: 4999}}}
	if q.Order.OrderID != want.OrderID || q.Order.UserID != 1 || q.Order.TotalCents != want.TotalCents || !slices.Equal(q.Order.Items, want.Items) {
		t.Fatalf("order %+v, want %+v", q.Order, want)
	}

	for name, tt := range map[string]struct {
		req      ordersaga.OrderRequest
		problems map[string]string
		reason   string
	}{
		"unknown user and SKUs": {ordersaga.OrderRequest{UserID: 9, Items: []ordersaga.LineItem{line("nope", 1), line("book", 1), line("gone", 2)}},
			map[string]string{"user_id": "unknown user", "items[0].sku": "unknown SKU", "items[2].sku": "unknown SKU"},
			`unknown user 9; unknown SKU "nope"; unknown SKU "gone"`},
		"nothing to pay": {ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{line("sample", 3)}},
			map[string]string{"items": "the order total must be positive"}, "the order total is 0"},
	} {
		q, err := o.Quote(t.Context(), "o2", tt.req)
		if err != nil || !q.Rejected() || !maps.Equal(q.Problems, tt.problems) || q.Reason() != tt.reason {
			t.Errorf("%s: problems %v, reason %q (%v); want %v, %q", name, q.Problems, q.Reason(), err, tt.problems, tt.reason)
		}
	}

	users.err = errors.New("unavailable")
	if _, err := o.Quote(t.Context(), "o3", ordersaga.OrderRequest{UserID: 2, Items: []ordersaga.LineItem{line("book", 1)}}); err == nil {
		t.Fatal("a quote without the users function")
	}
	o.users = newUsers(t, downURL(t), 200*time.Millisecond)
	if _, err := o.Quote(t.Context(), "o3", ordersaga.OrderRequest{UserID: 2, Items: []ordersaga.LineItem{line("book", 1)}}); saga.Code(err) != saga.ETransient {
		t.Fatalf("users down: %v, want a transient error", err)
	}
}

// TestDerivedIDsAreStable: the ids derived from a saga (its order, its
// Create event) and from an Idempotency-Key are part of the saga protocol:
// a redelivery or a retried POST after an upgrade must name the same saga.
// These values must never change.
func TestDerivedIDsAreStable(t *testing.T) {
	for got, want := range map[string]string{
		OrderIDFor("saga-1"):                "53d3aa06-00da-5556-9c56-19b8fea8b0ef",
		SagaIDForIdempotencyKey(1, "key-1"): "709dea97-b1a3-56a4-8cbd-dcf95e2489bd",
		CreateEventID("saga-1"):             "03c2dfec-6995-5b4d-89d5-a9c03c203716",
	} {
		if got != want {
			t.Errorf("derived id %s, want %s", got, want)
		}
	}
	if SagaIDForIdempotencyKey(1, "k") == SagaIDForIdempotencyKey(2, "k") {
		t.Error("two users' same Idempotency-Key name one saga")
	}
}
