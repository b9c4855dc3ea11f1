package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var order = ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}}

type console struct {
	fn     *sagatest.Func
	broker *sagatest.Broker
	kit    *sagatest.Kit
}

func start(t *testing.T, token string) console {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	defs, err := json.Marshal([]*saga.Definition{ordersaga.Saga})
	if err != nil {
		t.Fatal(err)
	}
	b := sagatest.NewBroker(t)
	env := map[string]string{"REDIS_URL": url, "K_SERVICE": "console", "K_SINK": b.URL, "KSAGA_SAGAS": string(defs),
		"KSAGA_TRACE_URL": "https://tempo.example/{trace_id}"}
	if token != "" {
		env["KSAGA_CONSOLE_TOKEN"] = token
	}
	return console{sagatest.Start(t, setup, env), b, sagatest.New(t, ordersaga.Saga, rdb)}
}

// call answers method path with header pairs; every answer is JSON.
func (c console) call(t *testing.T, method, path string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.fn.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
		t.Fatalf("%s %s: %d %q %s is not JSON", method, path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return resp.StatusCode, resp.Header, body
}

// TestConsole: reads need no credentials, actions need the token and
// record who acted (its Ksaga-Actor), unknown paths are JSON 404s, and
// /metrics has the fleet's saga gauges.
func TestConsole(t *testing.T) {
	c := start(t, "s3cret")
	c.kit.Run("s1", order, ordersaga.PayAuthorized)

	status, _, body := c.call(t, http.MethodGet, "/api/v1/sagas?saga=order&status=running")
	var page struct {
		Sagas []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"sagas"`
	}
	if err := json.Unmarshal(body, &page); err != nil || status != http.StatusOK || len(page.Sagas) != 1 || page.Sagas[0].ID != "s1" {
		t.Fatalf("%d %s", status, body)
	}
	if status, _, _ := c.call(t, http.MethodGet, "/api/v1/sagas/nope"); status != http.StatusNotFound {
		t.Fatalf("unknown saga: %d", status)
	}
	if status, _, _ := c.call(t, http.MethodGet, "/api/v1/nothing-here"); status != http.StatusNotFound {
		t.Fatalf("unknown path: %d", status)
	}

	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
		if status, hdr, _ := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", h...); status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" {
			t.Fatalf("%v: %d", h, status)
		}
	}
	if st := c.kit.Record("s1"); st.Status != saga.StatusRunning || len(c.broker.Events()) != 0 {
		t.Fatalf("an unauthorized abort acted: %s %v", st.Status, c.broker.Events())
	}
	status, _, body = c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer s3cret", "Ksaga-Actor", " alice ")
	if status != http.StatusAccepted || !strings.Contains(string(body), `"event_type":"`+ordersaga.StockFailed+`"`) {
		t.Fatalf("abort: %d %s", status, body)
	}
	st := c.kit.Record("s1")
	if last := st.Steps[len(st.Steps)-1]; st.Status != saga.StatusCompensating || last.Actor != "alice (token)" {
		t.Fatalf("saga %s, last %+v", st.Status, last)
	}
	if got := c.broker.Events(); len(got) != 1 || got[0].Type() != ordersaga.StockFailed || got[0].Source() != "/ksaga/console" {
		t.Fatalf("published %v", got)
	}

	resp, err := http.Get(c.fn.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`ksaga_sagas_in_flight{saga="order"} 1`, `ksaga_sagas{saga="order",status="compensating"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("metrics miss %s:\n%s", want, m)
		}
	}
}

// TestConsoleWithoutToken: without KSAGA_CONSOLE_TOKEN reads work and
// actions are off (403).
func TestConsoleWithoutToken(t *testing.T) {
	c := start(t, "")
	c.kit.Run("s1", order, ordersaga.Created)
	if status, _, _ := c.call(t, http.MethodGet, "/api/v1/sagas/s1"); status != http.StatusOK {
		t.Fatalf("read: %d", status)
	}
	if status, _, body := c.call(t, http.MethodPost, "/api/v1/sagas/s1/abort", "Authorization", "Bearer anything"); status != http.StatusForbidden {
		t.Fatalf("abort: %d %s", status, body)
	}
	if st := c.kit.Record("s1"); st.Status != saga.StatusRunning {
		t.Fatalf("saga %s", st.Status)
	}
	if !strings.Contains(c.fn.Out.String(), "KSAGA_CONSOLE_TOKEN is not set") {
		t.Fatalf("no warning:\n%s", c.fn.Out.String())
	}
}
