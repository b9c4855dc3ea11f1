package main

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestStockEndpoint: GET /stock/{sku} answers what inventory keeps, 404
// for an unknown SKU, 400 for what cannot be one.
func TestStockEndpoint(t *testing.T) {
	url, rdb := sagatest.RedisURL(t)
	rdb.Set(context.Background(), ordersaga.StockKey("lamp"), 1, 0)
	fn := sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "inventory"})
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/stock/lamp":      {200, `{"sku":"lamp","stock":1}`},
		"/stock/book":      {404, `{"error":"no such sku: book"}`},
		"/stock/a%20b":     {400, `{"error":"sku: want 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'"}`},
		"/stock/x%2Fstock": {400, `{"error":"sku: want 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'"}`},
	} {
		resp, err := http.Get(fn.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want.code || string(b) != want.body+"\n" {
			t.Errorf("GET %s: %d %s, want %d %s", path, resp.StatusCode, b, want.code, want.body)
		}
	}
}
