package main

import (
	"errors"
	"net/http"
	"regexp"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
)

// Stock is the answer of GET /stock/{sku}.
type Stock struct {
	SKU   string `json:"sku"`
	Stock int64  `json:"stock"`
}

var skuPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// stock serves GET /stock/{sku}: what is left of a product as inventory
// keeps it (the console shows it with the order sagas that take it); 404
// for an unknown SKU.
func stock(rdb redis.UniversalClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sku := r.PathValue("sku")
		if !skuPattern.MatchString(sku) {
			ops.WriteJSON(w, http.StatusBadRequest, ops.Error{Error: "sku: want 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'"})
			return
		}
		n, err := rdb.Get(r.Context(), ordersaga.StockKey(sku)).Int64()
		switch {
		case errors.Is(err, redis.Nil):
			ops.WriteJSON(w, http.StatusNotFound, ops.Error{Error: "no such sku: " + sku})
		case err != nil:
			w.Header().Set("Retry-After", "1")
			ops.WriteJSON(w, http.StatusServiceUnavailable, ops.Error{Error: "stock is unavailable, retry later"})
		default:
			ops.WriteJSON(w, http.StatusOK, Stock{SKU: sku, Stock: n})
		}
	})
}
