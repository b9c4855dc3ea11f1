package ordersaga

import (
	"encoding/json"
	"fmt"
	"strings"
)

// LineItem is one line of an order request: prices are never the client's.
type LineItem struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Item is one line of a priced order.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	PriceCents int64  `json:"price_cents,omitempty"` // set when the order is priced
}

// OrderRequest is the body of POST /orders and the data of a Create command.
type OrderRequest struct {
	UserID int32      `json:"user_id"`
	Items  []LineItem `json:"items"`
}

// Validate reports what is wrong with a request as field → message.
func (r OrderRequest) Validate() map[string]string {
	problems := map[string]string{}
	if r.UserID <= 0 {
		problems["user_id"] = "must be a positive integer"
	}
	if len(r.Items) == 0 {
		problems["items"] = "must list at least one item"
	}
	if len(r.Items) > 100 {
		problems["items"] = "at most 100 items"
	}
	for i, it := range r.Items {
		if strings.TrimSpace(it.SKU) == "" {
			problems[fmt.Sprintf("items[%d].sku", i)] = "must not be empty"
		}
		if it.Qty <= 0 || it.Qty > 1000 {
			problems[fmt.Sprintf("items[%d].qty", i)] = "must be between 1 and 1000"
		}
	}
	return problems
}

// DecodeOrderRequest decodes strict JSON (unknown fields are errors).
func DecodeOrderRequest(b []byte) (OrderRequest, error) {
	var r OrderRequest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return OrderRequest{}, err
	}
	if dec.More() {
		return OrderRequest{}, fmt.Errorf("trailing data after the JSON object")
	}
	return r, nil
}

// Order is the saga's data, recorded when the saga starts: what every
// step acts on. Every event of the saga carries it as a notification
// (failure events add "reason"); steps read it from the saga's record.
type Order struct {
	OrderID    string `json:"order_id"`
	UserID     int32  `json:"user_id"`
	Items      []Item `json:"items"`
	TotalCents int64  `json:"total_cents"`
	Reason     string `json:"reason,omitempty"`
}

// Marshal encodes the order as the saga's data.
func (o Order) Marshal() []byte {
	b, _ := json.Marshal(o) // cannot fail: plain fields only
	return b
}

// Charge is what the payment step records when it charges an order: its
// refund gives back exactly this, to this user.
type Charge struct {
	UserID      int32 `json:"user_id"`
	AmountCents int64 `json:"amount_cents"`
}
