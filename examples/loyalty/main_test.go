package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/fntest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

func TestAwardsPointsOnce(t *testing.T) {
	srv := testredis.Start(t)
	rdb := srv.Client(t)
	store, _ := redisstore.New(rdb, redisstore.Options{})
	o := ordersaga.Order{OrderID: "o1", UserID: 1, TotalCents: 4999}
	ctx := context.Background()
	for i, st := range []saga.Status{saga.StatusRunning, saga.StatusCompleted} {
		if _, err := store.Apply(ctx, saga.Transition{SagaID: "s1", EventSource: "/t", EventID: string(rune('a' + i)), Create: i == 0,
			Data: o.Marshal(), Deadline: time.Now().Add(time.Minute), Step: "order", OnSuccess: saga.Outcome{Status: st}}); err != nil {
			t.Fatal(err)
		}
	}
	fn := fntest.Start(t, run, map[string]string{"REDIS_URL": srv.URL(), "K_SERVICE": "loyalty"})
	e := fntest.Event("c1", ordersaga.Confirmed, o, saga.ExtCorrelationID, "s1")
	r1, r2 := fntest.Post(t, fn.URL, e, false), fntest.Post(t, fn.URL, e, true)
	if r1.Reply == nil || r1.Reply.Type() != "io.ksaga.loyalty.awarded" || r2.Reply == nil || r2.Reply.ID() != r1.Reply.ID() {
		t.Fatalf("%d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	if pts, _ := rdb.Get(ctx, "loyalty:points:1").Int(); pts != 49 {
		t.Fatalf("%d points, want 49 once", pts)
	}
}

// The README shows this step; it must be this file, verbatim.
func TestREADMEShowsThisStep(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile("main.go")
	_, block, ok := strings.Cut(string(readme), "```go\n// examples/loyalty/main.go (imports and main omitted)\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README has no examples/loyalty code block")
	}
	if !strings.Contains(string(src), block) {
		t.Fatalf("the README's step is not an excerpt of examples/loyalty/main.go:\n%s", block)
	}
	if n := strings.Count(block, "\n"); n >= 30 {
		t.Fatalf("the README's step is %d lines; keep it under 30", n)
	}
}
