package console_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ksaga/ksaga/internal/browsertest"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// BenchmarkFirstPaint measures the console's first meaningful paint with
// many sagas stored (100,000; KSAGA_BENCH_SAGAS to change): a real
// redis-server seeded through the store, the console served on a loopback
// port, and headless Chromium loading the overview page — the overview of
// every definition and the newest sagas — with its HTTP cache cleared
// before each load. The paint is the browser's own Element Timing of the
// first saga row and the overview's first card (the page's meaningful
// content; whichever paints last), from navigation start. Reported:
// median and worst paint, first contentful paint, and the bytes the page
// loaded.
//
//	make bench-console
//	go test -run '^$' -bench FirstPaint -benchtime 20x ./console
func BenchmarkFirstPaint(b *testing.B) {
	n := 100_000
	if v := os.Getenv("KSAGA_BENCH_SAGAS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	rdb := sagatest.Redis(b)
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	seed(b, store, n)
	b.Logf("seeded %d sagas in %v", n, time.Since(start).Round(time.Millisecond))
	f := serve(b, rdb, nil)
	tab := browsertest.Start(b).Tab(b)

	measure := `new Promise(resolve => {
		const got = {};
		const done = () => { if (got.list !== undefined && got.overview !== undefined && got.fcp !== undefined) resolve(finish()) };
		const finish = () => {
			const res = performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'));
			got.bytes = res.reduce((n, r) => n + (r.transferSize || 0), 0);
			got.requests = res.length;
			return got;
		};
		new PerformanceObserver(l => { for (const e of l.getEntries()) { if (e.identifier === 'saga-list') got.list = e.renderTime; if (e.identifier === 'overview') got.overview = e.renderTime } done() }).observe({type: 'element', buffered: true});
		new PerformanceObserver(l => { for (const e of l.getEntries()) if (e.name === 'first-contentful-paint') got.fcp = e.startTime; done() }).observe({type: 'paint', buffered: true});
		setTimeout(() => resolve(finish()), 8000);
	})`
	type timing struct {
		List, Overview, FCP float64
		Bytes, Requests     int
	}
	var paints, fcps []float64
	var last timing
	clear := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.ClearBrowserCache, cdp.Empty{})
		return err
	})
	var overviews, lists []float64
	api := func(path string) float64 {
		t0 := time.Now()
		resp := f.get(b, path, nil)
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return float64(time.Since(t0).Microseconds()) / 1000
	}
	for b.Loop() {
		if err := tab.Do(30*time.Second, chromedp.Navigate("about:blank"), clear, chromedp.Navigate(f.URL+"/")); err != nil {
			b.Fatal(err)
		}
		tm, err := browsertest.Eval[timing](tab, measure)
		if err != nil {
			b.Fatal(err)
		}
		if tm.List == 0 || tm.Overview == 0 {
			b.Fatalf("the page did not paint its content: %+v", tm)
		}
		paints = append(paints, max(tm.List, tm.Overview))
		overviews = append(overviews, api("/api/v1/overview"))
		lists = append(lists, api("/api/v1/sagas?summary=true&limit=15"))
		fcps = append(fcps, tm.FCP)
		last = tm
	}
	b.StopTimer()
	for _, s := range [][]float64{paints, fcps, overviews, lists} {
		slices.Sort(s)
	}
	b.ReportMetric(paints[len(paints)/2], "ms-paint-p50")
	b.ReportMetric(paints[len(paints)-1], "ms-paint-max")
	b.ReportMetric(fcps[len(fcps)/2], "ms-fcp-p50")
	b.ReportMetric(float64(last.Bytes)/1024, "KiB-loaded")
	b.ReportMetric(float64(last.Requests), "requests")
	b.ReportMetric(overviews[len(overviews)/2], "ms-api-overview")
	b.ReportMetric(lists[len(lists)/2], "ms-api-list")
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("%d sagas: first meaningful paint p50 %.1f ms, max %.1f ms over %d loads; FCP p50 %.1f ms; %d requests, %.1f KiB; "+
		"the API alone: overview %.1f ms, first page %.1f ms (p50); load average %s",
		n, paints[len(paints)/2], paints[len(paints)-1], len(paints), fcps[len(fcps)/2], last.Requests, float64(last.Bytes)/1024,
		overviews[len(overviews)/2], lists[len(lists)/2], strings.TrimSpace(string(load)))
}

// seed stores n sagas of the trip definition through the store, in the
// mix a busy system has: most completed, some compensated, a few running,
// failed to compensate or accepted.
func seed(b *testing.B, store *redisstore.Store, n int) {
	b.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := seedOne(ctx, store, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func seedOne(ctx context.Context, store *redisstore.Store, i int) error {
	id := fmt.Sprintf("bench-%07d", i)
	now := time.Now()
	ev := func(v int) saga.EventRef {
		return saga.EventRef{Source: "/bench", ID: fmt.Sprintf("%s-%d", id, v), Type: "test.bench"}
	}
	emit := func(typ string, v int) *saga.Emit {
		return &saga.Emit{Type: typ, ID: fmt.Sprintf("%s-r%d", id, v), Source: "/bench"}
	}
	data := fmt.Appendf(nil, `{"traveller":%d,"city":"c%d","nights":%d}`, i%5000, i%97, 1+i%7)
	key := fmt.Sprintf("trip-%07d", i)
	apply := func(c saga.Change) error {
		c.SagaID, c.Saga, c.Key = id, trip.Name, key
		r, err := store.Apply(ctx, c)
		if err == nil && r.Skipped != "" {
			err = fmt.Errorf("seed %s: skipped (%s)", id, r.Skipped)
		}
		return err
	}
	accepted := i%50 == 0
	first := saga.Move{Outcome: "booked", Status: saga.StatusRunning, Push: true, Emit: emit("test.flight.booked", 1), Due: now.Add(time.Hour)}
	if accepted {
		first = saga.Move{Outcome: "accepted", Status: saga.StatusAccepted, Emit: emit("test.flight.book", 1), Due: now.Add(time.Hour)}
	}
	if err := apply(saga.Change{Event: ev(0), Step: "flight", Create: &saga.Create{Saga: trip.Name, Key: key, Data: data, Deadline: now.Add(time.Hour), Accept: accepted},
		Success: first}); err != nil || accepted {
		return err
	}
	switch fate := i % 100; {
	case fate < 80: // completed
		if err := apply(saga.Change{Event: ev(1), Version: 1, Allow: []saga.Status{saga.StatusRunning}, Step: "hotel",
			Success: saga.Move{Outcome: "booked", Push: true, Emit: emit("test.hotel.booked", 2)}}); err != nil {
			return err
		}
		return apply(saga.Change{Event: ev(2), Version: 2, Allow: []saga.Status{saga.StatusRunning}, Step: "car",
			Success: saga.Move{Outcome: "booked", Status: saga.StatusCompleted, ClearStack: true, Emit: emit("test.car.booked", 3)}})
	case fate < 95: // compensated, or its compensation failed
		if err := apply(saga.Change{Event: ev(1), Version: 1, Allow: []saga.Status{saga.StatusRunning}, Step: "hotel",
			Success: saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Reason: "no rooms", Emit: emit("test.hotel.failed", 2), Due: now.Add(time.Minute)}}); err != nil {
			return err
		}
		if fate >= 92 {
			return apply(saga.Change{Event: ev(2), Version: 2, Allow: []saga.Status{saga.StatusCompensating}, Step: "flight",
				Success: saga.Move{Outcome: "compensation_failed", Status: saga.StatusCompensationFailed, Reason: "flight service down"}})
		}
		return apply(saga.Change{Event: ev(2), Version: 2, Allow: []saga.Status{saga.StatusCompensating}, Step: "flight",
			Success: saga.Move{Outcome: "compensated", Status: saga.StatusCompensated, Pop: "flight", Emit: emit("test.flight.cancelled", 3)}})
	}
	return nil // running, waiting on the hotel
}
