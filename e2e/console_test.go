package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ksaga/ksaga/internal/browsertest"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

var consoleScreenshot = flag.String("console-screenshot", "", "write a PNG of a saga's timeline in the console to this `file` (docs/console-timeline.png)")

// TestConsoleInTheBrowser drives the console of a real `ksaga dev` in
// Chromium: the list, a compensated saga's steps in order on its timeline
// with the order saga's views (balance, stock), then a compensation_failed
// saga: its dead letter replayed and the saga redriven, each seen live
// (the page is never reloaded). The browser reports no error throughout.
func TestConsoleInTheBrowser(t *testing.T) {
	t.Parallel()
	s := start(t, "choreography", nil, "--fault-injection")
	base := fmt.Sprintf("http://console.saga.localhost:%d", s.dev.Port)
	if !strings.Contains(s.dev.Log(), "Console: "+base+"/") {
		t.Errorf("the banner does not show the console at %s/", base)
	}
	ctx := context.Background()

	// bob's lamp: payment fails, the saga compensates
	comp, _ := s.order(t, 2, item("lamp", 1))
	if v := s.settled(t, comp.OrderID, 20*time.Second); v.Saga.Status != saga.StatusCompensated {
		t.Fatalf("bob's order: %+v", v.outcome())
	}
	// alice's two lamps: inventory fails and the refund never gets through
	refund := knfunc.FaultKey("payment", ordersaga.StockFailed)
	s.rdb.Set(ctx, refund, -1, 0)
	cf, _ := s.order(t, 1, item("lamp", 2))
	if v := s.settled(t, cf.OrderID, 30*time.Second); v.Saga.Status != saga.StatusCompensationFailed {
		t.Fatalf("alice's order: %+v", v.outcome())
	}

	tab := browsertest.Start(t).Tab(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	js := func(format string, args ...any) string { return fmt.Sprintf(format, args...) }

	// the list, then the compensated saga, opened from it
	must(tab.Do(30*time.Second, chromedp.Navigate(base+"/sagas")))
	must(tab.Poll(10*time.Second, js(`!!document.querySelector('tr[data-id=%q]') && !!document.querySelector('tr[data-id=%q]')`, comp.SagaID, cf.SagaID)))
	must(tab.Click(10*time.Second, js(`tr[data-id=%q] td.id a`, comp.SagaID)))
	must(tab.Poll(10*time.Second, js(`document.querySelector('.sagaid')?.textContent === %q && document.querySelectorAll('svg.timeline g.row').length > 0`, comp.SagaID)))
	rows, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('svg.timeline g.row')].map(g => g.dataset.kind + ':' + g.dataset.step + '/' + g.dataset.outcome)`)
	must(err)
	want := "forward:order/accepted forward:order/created forward:payment/failed compensate:order/cancelled final:notification/sent"
	if got := strings.Join(rows, " "); got != want {
		t.Fatalf("the compensated saga's timeline\n got %s\nwant %s", got, want)
	}
	// its domain views, from payment and inventory through the console
	must(tab.Poll(10*time.Second, `(() => { const b = document.querySelector('[data-view="balance"]'), s = document.querySelector('[data-view="stock"]');
		return !!b && !!s && b.textContent.includes('Balance of user 2') && b.textContent.includes('500') && s.textContent.includes('Stock of lamp') && s.textContent.includes('stock1') })()`))

	// the compensation_failed saga: sign in, replay its dead letter
	must(tab.Do(10*time.Second, chromedp.Click(chromedp.CSS(`header nav a[data-nav="sagas"]`))))
	must(tab.Poll(10*time.Second, js(`!!document.querySelector('tr[data-id=%q] td.id a')`, cf.SagaID)))
	must(tab.Click(10*time.Second, js(`tr[data-id=%q] td.id a`, cf.SagaID)))
	must(tab.Poll(10*time.Second, `document.querySelector('.sagahead .badge')?.textContent === 'compensation_failed' && !!document.querySelector('.live.on') && !!document.querySelector('#saga-deadletters button[data-action="replay"]')`))
	_, err = browsertest.Eval[bool](tab, `window.__sameDocument = true`)
	must(err)
	must(tab.Do(10*time.Second,
		chromedp.Click(chromedp.CSS(`#who`)),
		chromedp.SendKeys(chromedp.CSS(`#identity input[name="actor"]`), "Ada"),
		chromedp.SendKeys(chromedp.CSS(`#identity input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#identity button[value="save"]`))))
	// the saga's sections are re-rendered live: click in the page
	must(tab.Click(10*time.Second, `#saga-deadletters button[data-action="replay"]`))
	must(tab.Do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm button[value="yes"]`))))
	must(tab.Poll(15*time.Second, `[...document.querySelectorAll('svg.timeline g.row')].some(g => g.dataset.outcome === 'dead_letter_replayed' && g.textContent.includes('Ada (token)'))`))

	// payment is fixed; redrive: the status changes live to compensated
	s.rdb.Set(ctx, refund, 0, 0)
	must(tab.Click(10*time.Second, `button[data-action="redrive"]`))
	must(tab.Do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm button[value="yes"]`))))
	// compensated comes with order/cancelled; the notification (Finally) follows
	must(tab.Poll(30*time.Second, `document.querySelector('.sagahead .badge')?.textContent === 'compensated' && window.__sameDocument === true &&
		[...document.querySelectorAll('svg.timeline g.row')].some(g => g.dataset.step === 'notification' && g.dataset.outcome === 'sent')`))
	hist, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('svg.timeline g.row')].map(g => g.dataset.step + '/' + g.dataset.outcome)`)
	must(err)
	if got := strings.Join(hist, " "); !strings.Contains(got, "payment/compensation_failed /dead_letter_replayed payment/redriven payment/refunded order/cancelled notification/sent") {
		t.Fatalf("the redriven saga's timeline: %s", got)
	}
	if st := s.record(t, cf.SagaID); st.Status != saga.StatusCompensated || s.balance(t, 1) != 100000 {
		t.Fatalf("after the redrive: %s, alice's balance %d", st.Status, s.balance(t, 1))
	}

	if *consoleScreenshot != "" {
		must(tab.Do(10*time.Second, chromedp.EmulateViewport(1280, 1040), chromedp.Evaluate[chromedp.Void](`document.getElementById('toasts').replaceChildren(); window.scrollTo(0, 0)`)))
		png, err := chromedp.Run(tab.Ctx, chromedp.CaptureScreenshot())
		must(err)
		must(os.WriteFile(*consoleScreenshot, png, 0o644))
	}
}
