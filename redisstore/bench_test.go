package redisstore_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// The order saga's effects, as its functions declare them (functions/*:
// package main, not importable).
var (
	benchWriteOrder = saga.Effect{Name: "order.write", Lua: `
if redis.call('EXISTS', keys.order) == 1 then return 'the order exists already' end
redis.call('HSET', keys.order, 'user_id', args.user, 'items', args.items, 'total_cents', args.total,
  'status', args.status, 'saga_id', args.saga, 'created_at', args.at)
if args.reason ~= '' then redis.call('HSET', keys.order, 'reason', args.reason) end
`}
	benchConfirm = saga.Effect{Name: "order.confirm", Lua: `
if redis.call('HGET', keys.order, 'status') ~= 'pending' then return end
redis.call('HSET', keys.order, 'status', 'confirmed', 'updated_at', args.at)
`}
	benchCharge = saga.Effect{Name: "payment.charge", Lua: `
local balance = tonumber(redis.call('GET', keys.balance) or '')
if balance == nil then return 'unknown account' end
if balance < tonumber(args.amount) then return 'insufficient funds' end
redis.call('DECRBY', keys.balance, args.amount)
`}
	benchTake = saga.Effect{Name: "inventory.take", Lua: `
for i, key in ipairs(keys.stock) do
  local stock = tonumber(redis.call('GET', key) or '')
  if stock == nil then return 'unknown sku ' .. args.sku[i] end
  if stock < tonumber(args.qty[i]) then return 'insufficient stock for ' .. args.sku[i] end
end
for i, key in ipairs(keys.stock) do redis.call('DECRBY', key, args.qty[i]) end
`}
	benchRecord = saga.Effect{Name: "notification.record", Lua: `
redis.call('XADD', keys.outbox, 'MAXLEN', '~', 1000, '*', 'saga_id', args.saga, 'order_id', args.order, 'user_id', args.user,
  'kind', args.kind, 'reason', args.reason)
`}
)

// orderSaga is the changes of one happy order saga, as the order saga's
// participants build them (saga.Participant.change): the start with the
// order's write, payment with its charge as output, inventory, the
// confirmation that completes it, and the final notification.
func orderSaga(id string, now time.Time) []saga.Change {
	const def = "order"
	orderID := "ord-" + id
	data := `{"order_id":"` + orderID + `","user_id":42,"items":[{"sku":"sku-1","qty":2,"price_cents":1250},` +
		`{"sku":"sku-7","qty":1,"price_cents":4999}],"total_cents":7499}`
	deadline := now.Add(5 * time.Minute)
	due := now.Add(saga.NudgeAfter)
	at := now.UTC().Format(time.RFC3339Nano)
	ev := func(typ, src, eid string) saga.EventRef { return saga.EventRef{Source: src, ID: eid, Type: typ} }
	emit := func(e saga.EventRef, typ, src string) *saga.Emit {
		return &saga.Emit{Type: typ, ID: saga.ReplyID(e.Source, e.ID, typ), Source: src}
	}
	var cs []saga.Change
	step := func(c saga.Change) { cs = append(cs, c) }

	e := ev(ordersaga.Create, ordersaga.SourceOrderAPI, "c0a8f3e2-"+id)
	step(saga.Change{SagaID: id, Saga: def, Key: orderID, Event: e, Step: ordersaga.StepOrder, Allow: []saga.Status{saga.StatusAccepted},
		Create: &saga.Create{Saga: def, Key: orderID, Data: []byte(data), Deadline: deadline, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		Effect: benchWriteOrder.Call().Key("order", ordersaga.OrderKey(orderID)).Arg("user", 42).
			Arg("items", `[{"sku":"sku-1","qty":2,"price_cents":1250},{"sku":"sku-7","qty":1,"price_cents":4999}]`).
			Arg("total", 7499).Arg("status", "pending").Arg("saga", id).Arg("at", at).Arg("reason", ""),
		Success: saga.Move{Outcome: "created", Status: saga.StatusRunning, Push: true, Emit: emit(e, ordersaga.Created, "/order"), Due: due},
		Failure: &saga.Move{Outcome: "rejected", Status: saga.StatusCompensated, Emit: emit(e, ordersaga.Rejected, "/order")}})

	forward := func(v int64, name, cmd, ok, failed string, eff *saga.Call, out []byte) {
		e := ev(cmd, "/orchestrator", saga.ReplyID("/x", id+strconv.FormatInt(v, 10), cmd))
		step(saga.Change{SagaID: id, Saga: def, Key: orderID, Event: e, Version: v, Step: name, Allow: []saga.Status{saga.StatusRunning}, Effect: eff,
			Success: saga.Move{Outcome: "done", Status: saga.StatusRunning, Push: true, Output: out, Emit: emit(e, ok, "/"+name), Due: due},
			Failure: &saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Emit: emit(e, failed, "/"+name), Due: due}})
	}
	forward(1, ordersaga.StepPayment, ordersaga.AuthorizePay, ordersaga.PayAuthorized, ordersaga.PayFailed,
		benchCharge.Call().Key("balance", ordersaga.BalanceKey(42)).Arg("amount", 7499), []byte(`{"user_id":42,"amount_cents":7499}`))
	forward(2, ordersaga.StepInventory, ordersaga.ReserveStock, ordersaga.StockReserved, ordersaga.StockFailed,
		benchTake.Call().KeyList("stock", ordersaga.StockKey("sku-1"), ordersaga.StockKey("sku-7")).ArgList("qty", 2, 1).ArgList("sku", "sku-1", "sku-7"), nil)

	e = ev(ordersaga.Confirm, "/orchestrator", saga.ReplyID("/x", id+"3", ordersaga.Confirm))
	step(saga.Change{SagaID: id, Saga: def, Key: orderID, Event: e, Version: 3, Step: ordersaga.StepOrder, Allow: []saga.Status{saga.StatusRunning},
		Effect:  benchConfirm.Call().Key("order", ordersaga.OrderKey(orderID)).Arg("at", at),
		Success: saga.Move{Outcome: "confirmed", Status: saga.StatusCompleted, ClearStack: true, Emit: emit(e, ordersaga.Confirmed, "/order")},
		Failure: &saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Emit: emit(e, ordersaga.ConfirmFailed, "/order"), Due: due}})

	e = ev(ordersaga.SendNotification, "/orchestrator", saga.ReplyID("/x", id+"4", ordersaga.SendNotification))
	step(saga.Change{SagaID: id, Saga: def, Key: orderID, Event: e, Version: 4, Step: ordersaga.StepNotification,
		Allow: []saga.Status{saga.StatusCompleted, saga.StatusCompensated},
		Effect: benchRecord.Call().Key("outbox", ordersaga.OutboxKey).Arg("saga", id).Arg("order", orderID).Arg("user", 42).
			Arg("kind", "order_confirmed").Arg("reason", ""),
		Success: saga.Move{Outcome: "sent", Emit: emit(e, ordersaga.SagaCompleted, "/notification")}})
	return cs
}

// redisCost is what Redis reports it did: INFO commandstats and stats.
type redisCost struct {
	calls, usec map[string]int64 // by command
	netIn       int64
	cpu         float64 // seconds, user and system
}

func readCost(b *testing.B, rdb *redis.Client) redisCost {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats", "stats", "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	c := redisCost{calls: map[string]int64{}, usec: map[string]int64{}}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_input_bytes:"); ok {
			c.netIn, _ = strconv.ParseInt(v, 10, 64)
		}
		for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, f); ok {
				sec, _ := strconv.ParseFloat(v, 64)
				c.cpu += sec
			}
		}
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				c.calls[name] = n
			case "usec":
				c.usec[name] = n
			}
		}
	}
	return c
}

// BenchmarkApply runs happy order sagas (five changes each) on a real
// redis-server and reports Redis's own cost per Apply: the time inside
// EVALSHA (INFO commandstats, the commands a script calls included), the
// CPU time of the whole server (INFO cpu: reading, parsing and answering
// too), the commands run (the script and those it calls) and the bytes
// received. Those are Redis's counters, little disturbed by a busy
// machine (the CPU time least: wall time inside EVALSHA includes time the
// server was preempted):
//
//	go test -run '^$' -bench BenchmarkApply -benchtime 2000x -count 5 ./redisstore/
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	rdb := testredis.Start(b, testredis.Option{"--save", "", "--appendonly", "no"}).Client(b)
	s, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Preload(ctx, &benchWriteOrder, &benchConfirm, &benchCharge, &benchTake, &benchRecord); err != nil {
		b.Fatal(err)
	}
	if err := rdb.MSet(ctx, ordersaga.BalanceKey(42), 1<<60, ordersaga.StockKey("sku-1"), 1<<60, ordersaga.StockKey("sku-7"), 1<<60).Err(); err != nil {
		b.Fatal(err)
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	before := readCost(b, rdb)
	applies := 0
	b.ResetTimer()
	for i := range b.N {
		for _, c := range orderSaga(fmt.Sprintf("bench-%d-%d", b.N, i), time.Now()) {
			r, err := s.Apply(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			if !r.Applied || r.Failed {
				b.Fatalf("%s at version %d: %+v", c.Step, c.Version, r)
			}
			applies++
		}
	}
	b.StopTimer()
	after := readCost(b, rdb)
	var cmds int64
	for name, n := range after.calls {
		if name != "info" && name != "config|resetstat" {
			cmds += n - before.calls[name]
		}
	}
	per := float64(applies)
	b.ReportMetric(float64(after.usec["evalsha"]-before.usec["evalsha"])/per, "redis-µs/apply")
	b.ReportMetric((after.cpu-before.cpu)*1e6/per, "redis-cpu-µs/apply")
	b.ReportMetric(float64(cmds)/per, "cmds/apply")
	b.ReportMetric(float64(after.netIn-before.netIn)/per, "B-in/apply")
}
