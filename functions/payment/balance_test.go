package main

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestBalances: GET /balances/{user} answers the balance payment keeps,
// 404 for a user without an account, 400 for what is not a user id.
func TestBalances(t *testing.T) {
	url, rdb := sagatest.RedisURL(t)
	rdb.Set(context.Background(), ordersaga.BalanceKey(1), 98750, 0)
	fn := sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "payment"})
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/balances/1":    {200, `{"user_id":1,"balance_cents":98750}`},
		"/balances/2":    {404, `{"error":"no account for user 2"}`},
		"/balances/x":    {400, `{"error":"user: want a positive integer"}`},
		"/balances/-1":   {400, `{"error":"user: want a positive integer"}`},
		"/balances/9e99": {400, `{"error":"user: want a positive integer"}`},
	} {
		resp, err := http.Get(fn.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want.code || string(b) != want.body+"\n" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s, want %d %s", path, resp.StatusCode, b, want.code, want.body)
		}
	}
}
