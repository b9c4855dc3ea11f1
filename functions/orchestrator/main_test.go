package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

var order = ordersaga.OrderRequest{UserID: 1, Items: []ordersaga.LineItem{{SKU: "book", Qty: 1}}}

func sagas(t *testing.T) string {
	t.Helper()
	b, err := json.Marshal([]*saga.Definition{ordersaga.Saga})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOrchestratorFunction: the function answers a step's result with
// the saga's next command, over HTTP, the same command again to a
// redelivery (in structured mode), and refuses a result the saga does not
// await.
func TestOrchestratorFunction(t *testing.T) {
	url, rdb := sagatest.RedisURL(t)
	fn := sagatest.Start(t, setup, map[string]string{"REDIS_URL": url, "K_SERVICE": "orchestrator", "KSAGA_SAGAS": sagas(t)})
	k := sagatest.New(t, ordersaga.Saga, rdb)
	created := k.Run("s1", order, ordersaga.Created)
	before := k.Record("s1")

	r1 := sagatest.Post(t, fn.URL, created, false)
	r2 := sagatest.Post(t, fn.URL, created, true)
	if r1.Status != http.StatusOK || r1.Reply == nil || r1.Reply.Type() != ordersaga.AuthorizePay || r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() {
		t.Fatalf("%d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	if r1.Reply.Source() != "/ksaga/orchestrator" || r1.Reply.Extensions()[saga.ExtSagaVersion] != "2" || saga.SagaIDOf(*r1.Reply) != "s1" {
		t.Fatalf("command %v", r1.Reply)
	}
	if st := k.Record("s1"); st.Version != before.Version+1 || len(st.Steps) != len(before.Steps) || st.Next == nil || st.Next.ID != r1.Reply.ID() {
		t.Fatalf("saga %+v", st)
	}

	forged := created.Clone()
	forged.SetID("forged")
	forged.SetExtension(saga.ExtSagaVersion, "2")
	if r := sagatest.Post(t, fn.URL, forged, false); r.Status != http.StatusBadRequest || r.Reply != nil {
		t.Fatalf("forged: %d %s", r.Status, r.Body)
	}
	if !strings.Contains(fn.Out.String(), `"security_event":"refused"`) {
		t.Fatalf("no security log line:\n%s", fn.Out.String())
	}
}

// TestOrchestratorNeedsDefinitions: without KSAGA_SAGAS the function does
// not start, and says why.
func TestOrchestratorNeedsDefinitions(t *testing.T) {
	url, _ := sagatest.RedisURL(t)
	env := map[string]string{"REDIS_URL": url, "LISTEN_ADDRESS": "127.0.0.1:0"}
	err := knfunc.Run(context.Background(), func(k string) string { return env[k] }, &sagatest.Buffer{}, setup)
	if err == nil || !strings.Contains(err.Error(), "KSAGA_SAGAS") {
		t.Fatalf("%v", err)
	}
}
