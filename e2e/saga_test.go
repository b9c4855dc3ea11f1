package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// scenarios are the README's walk-through, run in order on one system.
// want* are absolute values after the scenario (fixture: alice 100000,
// bob 500, book 1000, lamp 1).
var scenarios = []struct {
	name        string
	user        int32
	items       []ordersaga.LineItem
	status      int // of POST /orders
	order       string
	saga        saga.Status
	steps       string
	alice, bob  int64
	book, lamp  int64
	reasonMatch string
}{
	{"alice buys a book", 1, []ordersaga.LineItem{item("book", 1)}, 202, "confirmed", saga.StatusCompleted,
		"order/created payment/authorized inventory/reserved order/confirmed notification/sent ", 98750, 500, 999, 1, ""},
	{"bob cannot pay for a lamp", 2, []ordersaga.LineItem{item("lamp", 1)}, 202, "cancelled", saga.StatusCompensated,
		"order/created payment/failed order/cancelled notification/sent ", 98750, 500, 999, 1, "insufficient funds"},
	{"alice buys two lamps: refund, then cancel", 1, []ordersaga.LineItem{item("lamp", 2)}, 202, "cancelled", saga.StatusCompensated,
		"order/created payment/authorized inventory/failed payment/refunded order/cancelled notification/sent ", 98750, 500, 999, 1, "insufficient stock for lamp"},
	{"unknown user 999", 999, []ordersaga.LineItem{item("book", 1)}, 422, "", "", "", 98750, 500, 999, 1, ""},
}

// TestOrderSagaScenarios runs the table in both modes, and again with the
// broker delivering every event twice: all four runs must end identically.
func TestOrderSagaScenarios(t *testing.T) {
	t.Parallel()
	got := map[string][]outcome{}
	var mu sync.Mutex
	var variants []string
	for _, mode := range modes {
		variants = append(variants, mode, mode+"/duplicate-deliveries")
	}
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			mode, dup, _ := strings.Cut(variant, "/")
			var args []string
			if dup != "" {
				args = append(args, "--duplicate-deliveries")
			}
			s := start(t, mode, nil, args...)
			outcomes := runScenarios(t, s)
			mu.Lock()
			got[variant] = outcomes
			mu.Unlock()
		})
	}
	t.Cleanup(func() {
		for _, v := range variants[1:] {
			if g, ok := got[v]; ok && !reflect.DeepEqual(g, got[variants[0]]) {
				t.Errorf("%s ends differently:\n%s: %+v\n%s: %+v", v, variants[0], got[variants[0]], v, g)
			}
		}
	})
}

// runScenarios places the scenarios' orders one after the other on s and
// checks each one's end, money and stock; it returns their outcomes.
func runScenarios(t *testing.T, s system) []outcome {
	t.Helper()
	var outcomes []outcome
	for _, sc := range scenarios {
		sagasBefore := s.sagaCount(t)
		a, code := s.order(t, sc.user, sc.items...)
		if code != sc.status {
			t.Fatalf("%s: POST /orders %d, want %d", sc.name, code, sc.status)
		}
		if code != http.StatusAccepted {
			if n := s.sagaCount(t); n != sagasBefore {
				t.Fatalf("%s: refused order started a saga (%d → %d)", sc.name, sagasBefore, n)
			}
			outcomes = append(outcomes, outcome{Order: "refused"})
			continue
		}
		v := s.settled(t, a.OrderID, 20*time.Second)
		o := v.outcome()
		outcomes = append(outcomes, o)
		if o.Order != sc.order || o.Saga != string(sc.saga) || o.Steps != sc.steps {
			t.Errorf("%s: %+v, want %s/%s %s", sc.name, o, sc.order, sc.saga, sc.steps)
		}
		if !strings.Contains(v.Reason, sc.reasonMatch) || !strings.Contains(v.Saga.Reason, sc.reasonMatch) {
			t.Errorf("%s: reasons %q / %q, want %q", sc.name, v.Reason, v.Saga.Reason, sc.reasonMatch)
		}
		if v.Saga.ID != a.SagaID {
			t.Errorf("%s: saga %s, want %s", sc.name, v.Saga.ID, a.SagaID)
		}
		if n := s.notifications(t)[a.OrderID]; n != 1 {
			t.Errorf("%s: %d notifications, want 1", sc.name, n)
		}
		if got := [4]int64{s.balance(t, 1), s.balance(t, 2), s.stock(t, "book"), s.stock(t, "lamp")}; got != [4]int64{sc.alice, sc.bob, sc.book, sc.lamp} {
			t.Errorf("%s: alice, bob, book, lamp = %v, want %v", sc.name, got, [4]int64{sc.alice, sc.bob, sc.book, sc.lamp})
		}
	}
	return outcomes
}

// TestRandomOrders: 500 random orders across users and SKUs, concurrently.
// Every saga ends terminal; money is conserved; stock never goes negative;
// each order agrees with its saga; one notification per order.
func TestRandomOrders(t *testing.T) {
	t.Parallel()
	const n = 500
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := start(t, mode, nil)
			randomOrders(t, s, n)
		})
	}
}

// randomOrders places n random orders across users and SKUs on s,
// concurrently, and checks that every saga ends terminal, money is
// conserved, stock never goes negative, each order agrees with its saga,
// and there is one notification per order.
func randomOrders(t *testing.T, s system, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(42, 7))
	type placed struct {
		accepted
		user int32
	}
	reqs := make([]ordersaga.OrderRequest, n)
	for i := range reqs {
		req := ordersaga.OrderRequest{UserID: int32(1 + rng.IntN(3))}
		for range 1 + rng.IntN(2) {
			req.Items = append(req.Items, item([]string{"book", "lamp"}[rng.IntN(2)], 1+rng.IntN(3)))
		}
		reqs[i] = req
	}
	var (
		mu     sync.Mutex
		orders []placed
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 16)
	)
	for _, req := range reqs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, code := s.order(t, req.UserID, req.Items...)
			if code != http.StatusAccepted {
				t.Errorf("POST /orders %d", code)
				return
			}
			mu.Lock()
			orders = append(orders, placed{a, req.UserID})
			mu.Unlock()
		}()
	}
	wg.Wait()

	spent := map[int32]int64{}
	sold := map[string]int64{}
	confirmed := 0
	for _, o := range orders {
		v := s.settled(t, o.OrderID, 60*time.Second)
		switch {
		case v.Status == "confirmed" && v.Saga.Status == saga.StatusCompleted:
			confirmed++
			spent[o.user] += v.TotalCents
			for _, it := range v.Items {
				sold[it.SKU] += int64(it.Qty)
			}
		case v.Status == "cancelled" && v.Saga.Status == saga.StatusCompensated:
		default:
			t.Errorf("order %s is %s but its saga is %s", o.OrderID, v.Status, v.Saga.Status)
		}
	}
	for _, u := range ordersaga.Fixture.Users {
		if got, want := s.balance(t, u.ID), u.BalanceCents-spent[u.ID]; got != want {
			t.Errorf("%s: balance %d, want %d (initial %d - confirmed %d): money not conserved", u.Username, got, want, u.BalanceCents, spent[u.ID])
		}
	}
	for _, p := range ordersaga.Fixture.Products {
		got := s.stock(t, p.SKU)
		if got < 0 || got != p.Stock-sold[p.SKU] {
			t.Errorf("%s: stock %d, want %d (initial %d - sold %d)", p.SKU, got, p.Stock-sold[p.SKU], p.Stock, sold[p.SKU])
		}
	}
	notes := s.notifications(t)
	for _, o := range orders {
		if notes[o.OrderID] != 1 {
			t.Errorf("order %s: %d notifications", o.OrderID, notes[o.OrderID])
		}
	}
	if in := s.inFlight(t); in != 0 {
		t.Errorf("%d sagas still in flight", in)
	}
	if len(orders) != n || confirmed == 0 || confirmed == n {
		t.Errorf("%d orders, %d confirmed: the mix must hold both outcomes", len(orders), confirmed)
	}
	t.Logf("%d orders, %d confirmed (%d cents), sold %v", len(orders), confirmed, sumSpent(spent), sold)
}

func sumSpent(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestCompensationFailures: a compensation that fails N times then succeeds
// ends compensated; one that always fails ends compensation_failed, with
// the step and the reason, visible via GET /orders/{id}, and compensates
// once redriven after the fault is gone.
func TestCompensationFailures(t *testing.T) {
	t.Parallel()
	// the event that makes payment refund, per mode
	refundOn := map[string]string{"choreography": ordersaga.StockFailed, "orchestration": ordersaga.RefundPay}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := start(t, mode, nil, "--fault-injection")
			key := knfunc.FaultKey("payment", refundOn[mode])
			ctx := context.Background()

			// fails 3 times (the trigger retries 5), then succeeds
			s.rdb.Set(ctx, key, 3, 0)
			a, _ := s.order(t, 1, item("lamp", 2))
			v := s.settled(t, a.OrderID, 20*time.Second)
			if v.Status != "cancelled" || v.Saga.Status != saga.StatusCompensated || s.balance(t, 1) != 100000 {
				t.Fatalf("after 3 failed refunds: %+v, balance %d", v.outcome(), s.balance(t, 1))
			}
			if left, _ := s.rdb.Get(ctx, key).Int(); left != 0 {
				t.Fatalf("fault counter %d: the refund was not retried 3 times", left)
			}

			// always fails: retries run out, the dead-letter sink marks it
			s.rdb.Set(ctx, key, -1, 0)
			a, _ = s.order(t, 1, item("lamp", 2))
			v = s.settled(t, a.OrderID, 30*time.Second)
			if v.Saga.Status != saga.StatusCompensationFailed || v.Saga.FailedStep != ordersaga.StepPayment ||
				!strings.Contains(v.Saga.Reason, "503") || !strings.Contains(v.Saga.Reason, "payment") {
				t.Fatalf("always-failing refund: saga %+v (reason %q, failed step %q)", v.outcome(), v.Saga.Reason, v.Saga.FailedStep)
			}
			if v.Status != "pending" || s.balance(t, 1) != 100000-2*4999 {
				t.Fatalf("order %s, balance %d: nothing must look compensated", v.Status, s.balance(t, 1))
			}
			sagatest.Eventually(t, 5*time.Second, func() error { // visible to operators too
				p, err := s.store.DeadLetters(ctx, saga.DeadLetterQuery{SagaID: v.Saga.ID})
				if err != nil || len(p.DeadLetters) == 0 || p.DeadLetters[0].Handling != "compensation_failed" {
					return fmt.Errorf("%w: %v %+v", errNoDeadLetter, err, p)
				}
				return nil
			})

			// payment is fixed; the operator redrives the saga: the refund
			// runs, then the order is cancelled, as if nothing had failed
			s.rdb.Set(ctx, key, 0, 0)
			if code, body := s.console(t, http.MethodPost, "/api/v1/sagas/"+v.Saga.ID+"/redrive"); code != http.StatusAccepted {
				t.Fatalf("redrive: %d %s", code, body)
			}
			v = s.settled(t, a.OrderID, 20*time.Second)
			if v.Status != "cancelled" || v.Saga.Status != saga.StatusCompensated || s.balance(t, 1) != 100000 ||
				!strings.Contains(v.outcome().Steps, "payment/compensation_failed payment/redriven payment/refunded order/cancelled notification/sent") {
				t.Fatalf("after the redrive: %+v, balance %d", v.outcome(), s.balance(t, 1))
			}
		})
	}
}

// TestStuckConfirmCompensates: the order's confirm (the last forward step)
// keeps failing. When its retries run out (about 6 s), the dead-letter sink
// fails the saga; when the saga's deadline (1 s) comes first, the deadline
// sweeper does (woken here by the test rather than waiting up to 15 s for
// its PingSource). Either way every completed step is undone in
// reverse: the stock released, the payment refunded, the order cancelled,
// the customer told.
func TestStuckConfirmCompensates(t *testing.T) {
	t.Parallel()
	confirmOn := map[string]string{"choreography": ordersaga.StockReserved, "orchestration": ordersaga.Confirm}
	for _, tc := range []struct {
		name    string
		args    []string
		outcome string // of the confirm step, in the history
		reason  string
	}{
		{"dead-lettered", nil, "failed", "the order step could not be reached"}, // the customer's reason: no URL
		{"past-deadline", []string{"--env", "KSAGA_SAGA_TIMEOUT=1s"}, "timed_out", "deadline"},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				s := start(t, mode, nil, append([]string{"--fault-injection"}, tc.args...)...)
				s.rdb.Set(context.Background(), knfunc.FaultKey("order", confirmOn[mode]), -1, 0)
				a, code := s.order(t, 1, item("book", 2))
				if code != http.StatusAccepted {
					t.Fatalf("POST /orders %d", code)
				}
				if tc.outcome == "timed_out" {
					sagatest.Eventually(t, 10*time.Second, func() error { // past its deadline, waiting on the confirm
						st := s.record(t, a.SagaID)
						if !st.Overdue(time.Now()) {
							return fmt.Errorf("saga %s is %s, not overdue yet", a.SagaID, st.Status)
						}
						if h := sagatest.Outcomes(st); len(h) == 0 || h[len(h)-1] != "inventory/reserved" {
							return fmt.Errorf("saga %s is overdue at %v, before the confirm: slower than its deadline", a.SagaID, h)
						}
						return nil
					})
					s.sweep(t)
				}
				v := s.settled(t, a.OrderID, 30*time.Second)
				// past the deadline, the confirm's dead letter may follow: recorded only
				want := "order/created payment/authorized inventory/reserved order/" + tc.outcome +
					" inventory/released payment/refunded order/cancelled notification/sent "
				if o := v.outcome(); o.Order != "cancelled" || o.Saga != string(saga.StatusCompensated) || !strings.HasPrefix(o.Steps, want) {
					t.Fatalf("saga %+v, want cancelled/compensated %s", o, want)
				}
				if v.Saga.FailedStep != ordersaga.StepOrder || !strings.Contains(v.Saga.Reason, tc.reason) {
					t.Errorf("failed step %q, reason %q", v.Saga.FailedStep, v.Saga.Reason)
				}
				if b, st := s.balance(t, 1), s.stock(t, "book"); b != 100000 || st != 1000 {
					t.Errorf("balance %d, book stock %d: want both restored (100000, 1000)", b, st)
				}
				if n := s.notifications(t)[a.OrderID]; n != 1 {
					t.Errorf("%d notifications", n)
				}
			})
		}
	}
}

// TestCancelRunningOrder: POST /orders/{id}/cancel while the saga waits on
// payment (failing, retried) aborts it; the order is cancelled, the
// customer notified, and payment's late success changes nothing.
func TestCancelRunningOrder(t *testing.T) {
	t.Parallel()
	payOn := map[string]string{"choreography": ordersaga.Created, "orchestration": ordersaga.AuthorizePay}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := start(t, mode, nil, "--fault-injection")
			ctx := context.Background()
			// fails 3 times, then succeeds: 0.2 + 0.4 + 0.8 s of retries
			s.rdb.Set(ctx, knfunc.FaultKey("payment", payOn[mode]), 3, 0)
			a, code := s.order(t, 1, item("book", 2))
			if code != http.StatusAccepted {
				t.Fatalf("POST /orders %d", code)
			}
			fault := knfunc.FaultKey("payment", payOn[mode])
			sagatest.Eventually(t, 5*time.Second, func() error { // payment failed once: the saga waits on it
				if left, _ := s.rdb.Get(ctx, fault).Int(); left == 3 {
					return fmt.Errorf("payment not tried yet")
				}
				return nil
			})
			if code, body := s.dev.Do(t, "order-api", http.MethodPost, "/orders/"+a.OrderID+"/cancel", nil); code != http.StatusAccepted {
				t.Fatalf("cancel: %d %s", code, body)
			}
			v := s.settled(t, a.OrderID, 20*time.Second)
			const want = "order/created payment/cancel_requested order/cancelled notification/sent "
			if o := v.outcome(); o.Order != "cancelled" || o.Saga != string(saga.StatusCompensated) || o.Steps != want {
				t.Fatalf("saga %+v, want cancelled/compensated %s", o, want)
			}
			sagatest.Eventually(t, 10*time.Second, func() error { // payment's late retry arrives, and changes nothing
				for _, l := range s.dev.Lines(t, "payment") {
					if l["correlationid"] == a.SagaID && l["skipped"] == "version" {
						return nil
					}
				}
				return fmt.Errorf("payment has not seen its late retry of saga %s yet", a.SagaID)
			})
			if b := s.balance(t, 1); b != 100000 {
				t.Errorf("balance %d: payment charged a cancelled order", b)
			}
			if o := s.settled(t, a.OrderID, time.Second).outcome(); o.Steps != want {
				t.Errorf("after payment's late delivery: %s", o.Steps)
			}
		})
	}
}

var errNoDeadLetter = errors.New("no dead letter recorded")

// TestIdenticalOutcomesAcrossModes: the same 500 random orders, placed one
// after another (so that who gets the last lamp does not depend on timing),
// end in exactly the same terminal state, history included, in
// choreography and in orchestration.
func TestIdenticalOutcomesAcrossModes(t *testing.T) {
	t.Parallel()
	const n = 500
	rng := rand.New(rand.NewPCG(7, 42))
	reqs := make([]ordersaga.OrderRequest, n)
	for i := range reqs {
		reqs[i] = ordersaga.OrderRequest{UserID: int32(1 + rng.IntN(3))}
		for range 1 + rng.IntN(2) {
			reqs[i].Items = append(reqs[i].Items, item([]string{"book", "lamp"}[rng.IntN(2)], 1+rng.IntN(3)))
		}
	}
	var mu sync.Mutex
	got := map[string][]outcome{}
	t.Run("modes", func(t *testing.T) {
		for _, mode := range modes {
			t.Run(mode, func(t *testing.T) {
				t.Parallel()
				s := start(t, mode, nil)
				outs := make([]outcome, 0, n)
				for _, req := range reqs {
					a, code := s.order(t, req.UserID, req.Items...)
					if code != http.StatusAccepted {
						t.Fatalf("POST /orders %d", code)
					}
					outs = append(outs, s.settled(t, a.OrderID, 20*time.Second).outcome())
				}
				mu.Lock()
				got[mode] = outs
				mu.Unlock()
			})
		}
	})
	a, b := got[modes[0]], got[modes[1]]
	if len(a) != n || len(b) != n {
		t.Fatalf("%d and %d outcomes", len(a), len(b))
	}
	kinds := map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("order %d (%+v): %s %+v, %s %+v", i, reqs[i], modes[0], a[i], modes[1], b[i])
		}
		kinds[a[i].Steps]++
	}
	if len(kinds) < 3 {
		t.Errorf("only %d kinds of outcome: the inputs must exercise success and both compensations", len(kinds))
	}
}
