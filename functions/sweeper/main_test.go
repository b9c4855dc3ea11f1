package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var order = ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}}

// TestSweeperFunction: a PingSource's event runs a pass: an accepted
// order past its deadline is rejected (its failure event reaches the
// Broker, the abort is counted on /metrics), one past its due time only
// gets its start command again.
func TestSweeperFunction(t *testing.T) {
	url, rdb := sagatest.RedisURL(t)
	defs, err := json.Marshal([]*saga.Definition{ordersaga.Saga})
	if err != nil {
		t.Fatal(err)
	}
	b := sagatest.NewBroker(t)
	fn := sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "sweeper", "K_SINK": b.URL, "KSAGA_SAGAS": string(defs)})
	k := sagatest.New(t, ordersaga.Saga, rdb)
	sagas, err := ops.NewRegistry(ordersaga.Saga)
	if err != nil {
		t.Fatal(err)
	}
	// accepted in the past: one 10 minutes ago (past its 5 minute
	// deadline), one a minute ago (past its due time)
	accept := func(id string, ago time.Duration) {
		op := &ops.Operator{Sagas: sagas, Store: k.Store, Source: ordersaga.SourceOrderAPI, Now: func() time.Time { return time.Now().Add(-ago) }}
		cmd := sagatest.Event(id+"-create", ordersaga.Create, order, saga.ExtCorrelationID, id)
		cmd.SetSource(ordersaga.SourceOrderAPI)
		if _, err := op.Accept(context.Background(), ordersaga.Saga, id, "order-"+id, &cmd); err != nil {
			t.Fatal(err)
		}
	}
	accept("late", 10*time.Minute)
	accept("due", time.Minute)

	ping := sagatest.Event("ping-1", "dev.knative.sources.ping", map[string]string{"ping": "sweeper"})
	if r := sagatest.Post(t, fn.URL, ping, false); r.Status != http.StatusOK || r.Reply != nil {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	got := map[string]string{}
	for _, e := range b.Events() {
		got[saga.SagaIDOf(e)] = e.Type()
	}
	if len(got) != 2 || got["late"] != ordersaga.Rejected || got["due"] != ordersaga.Create {
		t.Fatalf("published %v", got)
	}
	if st := k.Record("late"); st.Status != saga.StatusCompensated || !strings.HasPrefix(st.Reason, "deadline ") {
		t.Fatalf("late: %+v", st)
	}
	if st := k.Record("due"); st.Status != saga.StatusAccepted || !st.Due.After(time.Now()) {
		t.Fatalf("due: %+v", st)
	}
	resp, err := http.Get(fn.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `ksaga_sagas_aborted_total{cause="deadline",saga="order"} 1`) {
		t.Fatalf("metrics:\n%s", m)
	}
}

// TestSweeperNeedsASink: the sweeper publishes; without K_SINK it does
// not start.
func TestSweeperNeedsASink(t *testing.T) {
	url, _ := sagatest.RedisURL(t)
	defs, _ := json.Marshal([]*saga.Definition{ordersaga.Saga})
	env := map[string]string{"REDIS_URL": url, "LISTEN_ADDRESS": "127.0.0.1:0", "KSAGA_SAGAS": string(defs)}
	err := knfunc.Run(context.Background(), func(k string) string { return env[k] }, &sagatest.Buffer{}, setup)
	if err == nil || !strings.Contains(err.Error(), "K_SINK") {
		t.Fatalf("%v", err)
	}
}
