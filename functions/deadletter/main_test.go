package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var order = ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}}

type world struct {
	fn     *sagatest.Func
	broker *sagatest.Broker
	kit    *sagatest.Kit
}

func start(t *testing.T) world {
	t.Helper()
	url, rdb := sagatest.RedisURL(t)
	defs, err := json.Marshal([]*saga.Definition{ordersaga.Saga})
	if err != nil {
		t.Fatal(err)
	}
	b := sagatest.NewBroker(t)
	fn := sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "deadletter", "K_SINK": b.URL, "KSAGA_SAGAS": string(defs)})
	return world{fn, b, sagatest.New(t, ordersaga.Saga, rdb)}
}

// deadLettered is e as a Broker sends it to its dead-letter sink.
func deadLettered(e event.Event, dest, code, body string) event.Event {
	c := e.Clone()
	c.SetExtension(ops.ExtErrorDest, dest)
	c.SetExtension(ops.ExtErrorCode, code)
	c.SetExtension(ops.ExtErrorData, base64.StdEncoding.EncodeToString([]byte(body)))
	return c
}

func (w world) deadLetters(t *testing.T) []saga.DeadLetter {
	t.Helper()
	p, err := w.kit.Store.DeadLetters(context.Background(), saga.DeadLetterQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return p.DeadLetters
}

// TestCompensationDeadLettered: a refund the Broker could not deliver
// stops the saga at compensation_failed, with Knative's reason; kept once
// when redelivered; nothing published.
func TestCompensationDeadLettered(t *testing.T) {
	w := start(t)
	sent := w.kit.Run("s1", order, ordersaga.StockFailed, sagatest.Fail(ordersaga.StepInventory, "out of stock"))
	dl := deadLettered(sent, "http://payment.saga.svc.cluster.local", "503", "injected fault")
	for range 2 {
		if r := sagatest.Post(t, w.fn.URL, dl, false); r.Status != http.StatusOK || r.Reply != nil {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	st := w.kit.Record("s1")
	if st.Status != saga.StatusCompensationFailed || st.FailedStep != ordersaga.StepPayment ||
		!strings.Contains(st.Reason, "(HTTP 503): injected fault") || !strings.Contains(st.Reason, "payment.saga") {
		t.Fatalf("saga %+v", st)
	}
	if dls := w.deadLetters(t); len(dls) != 1 || dls[0].Handling != ops.HandlingCompensationFailed {
		t.Fatalf("dead letters %+v", dls)
	}
	if got := w.broker.Events(); len(got) != 0 {
		t.Fatalf("published %v", got)
	}
}

// TestForwardDeadLettered: a payment.authorized that could not reach
// inventory fails the inventory step: its failure event reaches the
// Broker (K_SINK, binary mode), and the saga compensates.
func TestForwardDeadLettered(t *testing.T) {
	w := start(t)
	sent := w.kit.Run("s1", order, ordersaga.PayAuthorized)
	dl := deadLettered(sent, "http://inventory.saga.svc.cluster.local", "500", "boom")
	if r := sagatest.Post(t, w.fn.URL, dl, true); r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	got := w.broker.Received()
	if len(got) != 1 || got[0].Event.Type() != ordersaga.StockFailed || got[0].Encoding != binding.EncodingBinary ||
		saga.SagaIDOf(got[0].Event) != "s1" || got[0].Event.Source() != "/ksaga/deadletter" {
		t.Fatalf("published %+v", got)
	}
	if st := w.kit.Record("s1"); st.Status != saga.StatusCompensating || st.FailedStep != ordersaga.StepInventory {
		t.Fatalf("saga %+v", st)
	}
	// the Broker down: 503, so Knative retries the dead letter
	w.broker.Down.Store(true)
	other := w.kit.Run("s2", order, ordersaga.PayAuthorized)
	if r := sagatest.Post(t, w.fn.URL, deadLettered(other, "http://inventory", "500", ""), false); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("broker down: %d %s", r.Status, r.Body)
	}
}

// TestForeignDeadLetterKept: an event of no saga the sink serves is kept
// for operators and labels no metric series of its own.
func TestForeignDeadLetterKept(t *testing.T) {
	w := start(t)
	ev := sagatest.Event("x", "com.example.other", map[string]int{"a": 1})
	if r := sagatest.Post(t, w.fn.URL, deadLettered(ev, "http://x", "400", ""), false); r.Status != http.StatusOK {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if dls := w.deadLetters(t); len(dls) != 1 || dls[0].Handling != ops.HandlingKept || dls[0].EventType != "com.example.other" {
		t.Fatalf("dead letters %+v", dls)
	}
	resp, err := http.Get(w.fn.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(b), "com.example.other") || !strings.Contains(string(b), `type="other"`) {
		t.Fatalf("metrics:\n%s", b)
	}
}
