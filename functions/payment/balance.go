package main

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
)

// Balance is the answer of GET /balances/{user}.
type Balance struct {
	UserID       int32 `json:"user_id"`
	BalanceCents int64 `json:"balance_cents"`
}

// balances serves GET /balances/{user}: a user's balance as payment keeps
// it (the console shows it with the order sagas of that user); 404 for a
// user without an account.
func balances(rdb redis.UniversalClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("user"), 10, 32)
		if err != nil || id <= 0 {
			ops.WriteJSON(w, http.StatusBadRequest, ops.Error{Error: "user: want a positive integer"})
			return
		}
		n, err := rdb.Get(r.Context(), ordersaga.BalanceKey(int32(id))).Int64()
		switch {
		case errors.Is(err, redis.Nil):
			ops.WriteJSON(w, http.StatusNotFound, ops.Error{Error: "no account for user " + strconv.FormatInt(id, 10)})
		case err != nil:
			w.Header().Set("Retry-After", "1")
			ops.WriteJSON(w, http.StatusServiceUnavailable, ops.Error{Error: "balances are unavailable, retry later"})
		default:
			ops.WriteJSON(w, http.StatusOK, Balance{UserID: int32(id), BalanceCents: n})
		}
	})
}
