package console_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	tripsaga "github.com/ksaga/ksaga/examples/trip"
	"github.com/ksaga/ksaga/internal/browsertest"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// xss is what an attacker puts wherever the outside world reaches a saga
// (start data, a failure reason, a dead letter's body): the page must
// show it as text and run none of it.
const xss = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"'><svg onload="window.__xss=3">`

// Timeouts of the browser tests.
const (
	navTimeout  = 20 * time.Second
	pollTimeout = 10 * time.Second
)

// startTab starts a browser for the test and opens a tab.
func startTab(t *testing.T) *browsertest.Tab {
	t.Helper()
	return browsertest.Start(t).Tab(t)
}

// deadLetter hands the event a saga waits on to the dead-letter sink, as
// a Broker does once its retries ran out.
func deadLetter(t *testing.T, f *fixture, e sagatest.Received, body string) {
	t.Helper()
	dls, err := ops.NewDeadLetters(f.Op)
	if err != nil {
		t.Fatal(err)
	}
	ev := e.Event.Clone()
	ev.SetExtension(ops.ExtErrorDest, "http://hotel.trip.svc.cluster.local")
	ev.SetExtension(ops.ExtErrorCode, "503")
	ev.SetExtension(ops.ExtErrorData, base64.StdEncoding.EncodeToString([]byte(body)))
	if _, err := dls.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserSagaPages drives the console in Chromium: the list, a
// compensated saga's timeline read in order, hostile data shown as text,
// then a compensation_failed saga's dead letter replayed and the saga
// redriven, each seen live, with no browser error.
func TestBrowserSagaPages(t *testing.T) {
	f := newFixture(t, nil)
	k := f.Kit
	// created in distinct milliseconds, so that "newest first" is one order
	nextMilli := func() {
		for ms := time.Now().UnixMilli(); time.Now().UnixMilli() == ms; {
			runtime.Gosched()
		}
	}
	k.Run("done-1", map[string]any{"who": "alice"}, "test.mail.sent")
	nextMilli()
	k.Run("comp-1", map[string]any{"who": xss}, "test.mail.sent", sagatest.Fail("hotel", xss))
	nextMilli()
	waits := k.Run("cf-1", map[string]any{"who": "bob"}, "test.car.failed", sagatest.Fail("car", "no cars"))
	deadLetter(t, f, sagatest.Received{Event: waits}, xss)
	if st := f.record(t, "cf-1"); st.Status != saga.StatusCompensationFailed {
		t.Fatalf("cf-1 is %s", st.Status)
	}

	b := browsertest.Start(t)
	tab := b.Tab(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// the list shows the three sagas, newest first
	must(tab.Do(20*time.Second, chromedp.Navigate(f.URL+"/sagas")))
	must(tab.Poll(10*time.Second, `document.querySelectorAll('table.sagas tbody tr').length === 3`))
	ids, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('table.sagas tbody tr')].map(r => r.dataset.id)`)
	must(err)
	if strings.Join(ids, " ") != "cf-1 comp-1 done-1" {
		t.Fatalf("list %v", ids)
	}

	// the compensated saga: its steps in order on the timeline
	must(tab.Click(10*time.Second, `tr[data-id="comp-1"] td.id a`))
	must(tab.Poll(10*time.Second, `document.querySelectorAll('svg.timeline g.row').length > 0 && document.querySelector('.sagaid').textContent === 'comp-1'`))
	rows, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('svg.timeline g.row')].map(g => g.dataset.kind + ':' + g.dataset.step + '/' + g.dataset.outcome)`)
	must(err)
	want := "forward:flight/succeeded forward:hotel/failed compensate:flight/compensated final:mail/succeeded"
	if strings.Join(rows, " ") != want {
		t.Fatalf("timeline rows\n got %s\nwant %s", strings.Join(rows, " "), want)
	}
	// hostile text is shown as text, and ran nowhere
	shown, err := browsertest.Eval[bool](tab, fmt.Sprintf(`document.body.textContent.includes(%q) && window.__xss === undefined && document.querySelectorAll('main img, main script, main svg[onload]').length === 0`, xss))
	must(err)
	if !shown {
		t.Fatal("the hostile reason is not shown as text, or it ran")
	}

	// a compensation_failed saga: sign in, replay its dead letter, redrive
	must(tab.Do(10*time.Second, chromedp.Navigate(f.URL+"/sagas/cf-1")))
	must(tab.Poll(10*time.Second, `!!document.querySelector('button[data-action="redrive"]') && document.querySelector('.live.on') !== null`))
	must(tab.Do(10*time.Second,
		chromedp.Click(chromedp.CSS(`#who`)),
		chromedp.SendKeys(chromedp.CSS(`#identity input[name="actor"]`), "Ada"),
		chromedp.SendKeys(chromedp.CSS(`#identity input[name="token"]`), token),
		chromedp.Click(chromedp.CSS(`#identity button[value="save"]`))))
	inPage, err := browsertest.Eval[bool](tab, fmt.Sprintf(`document.documentElement.outerHTML.includes(%q)`, token))
	must(err)
	if inPage {
		t.Fatal("the token is in the page")
	}
	// the saga's sections are re-rendered live: click in the page
	must(tab.Click(10*time.Second, `#saga-deadletters button[data-action="replay"]`))
	must(tab.Do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm button[value="yes"]`))))
	must(tab.Poll(10*time.Second, `[...document.querySelectorAll('svg.timeline g.row')].some(g => g.dataset.outcome === 'dead_letter_replayed' && g.textContent.includes('Ada (token)'))`))

	must(tab.Click(10*time.Second, `button[data-action="redrive"]`))
	must(tab.Do(10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm button[value="yes"]`))))
	must(tab.Poll(10*time.Second, `document.querySelector('.sagahead .badge').textContent === 'compensating'`))
	// the compensation resumes (the redriven event, delivered) and ends
	k.Resume("cf-1", "test.mail.sent")
	must(tab.Poll(10*time.Second, `document.querySelector('.sagahead .badge').textContent === 'compensated'`))
	hist, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('table.history tbody tr')].map(r => r.children[1].textContent + '/' + r.children[2].textContent + (r.children[10].textContent.includes('Ada (token)') ? ' by Ada' : ''))`)
	must(err)
	if got := strings.Join(hist, " "); !strings.Contains(got, "car/failed hotel/compensation_failed /dead_letter_replayed by Ada hotel/redriven by Ada hotel/compensated flight/compensated mail/succeeded") {
		t.Fatalf("history: %s", got)
	}
	if n := len(f.Broker.Events()); n != 2 {
		t.Fatalf("the broker got %d events, want the replayed and the redriven one", n)
	}

	// the dead letters page: filtered by saga, every match replayed at once
	must(tab.Do(navTimeout, chromedp.Navigate(f.URL+"/deadletters?saga=cf-1")))
	must(tab.Poll(pollTimeout, `document.querySelectorAll('table.deadletters tbody tr').length === 1 && document.querySelector('table.deadletters tbody tr').textContent.includes('Ada (token)')`))
	body, err := browsertest.Eval[string](tab, `document.querySelector('table.deadletters tbody tr td.body pre').textContent`)
	must(err)
	if body != xss {
		t.Fatalf("the dead letter's body shown as %q", body)
	}
	must(tab.Click(navTimeout, `.toolbar button.action`))
	must(tab.Do(navTimeout,
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm button[value="yes"]`))))
	must(tab.Poll(pollTimeout, `[...document.querySelectorAll('.toast.ok')].some(t => t.textContent === 'replayed 1')`))
	if n := len(f.Broker.Events()); n != 3 {
		t.Fatalf("the broker got %d events after replaying all, want 3", n)
	}
}

// TestBrowserAnyDefinition: the console shows the order saga and the trip
// saga, side by side, from their definitions alone.
func TestBrowserAnyDefinition(t *testing.T) {
	f := newFixture(t, nil, ordersaga.Saga, tripsaga.Saga)
	order := sagatest.New(t, ordersaga.Saga, f.RDB)
	order.Run("order-1", map[string]any{"user_id": 1, "items": []map[string]any{{"sku": "book", "qty": 1}}}, ordersaga.NotificationSent, sagatest.Fail(ordersaga.StepPayment, "insufficient funds"))
	trips := sagatest.New(t, tripsaga.Saga, f.RDB)
	trips.Run("trip-1", map[string]any{"city": "Lyon"}, tripsaga.Saga.Steps[1].Succeeded)

	tab := startTab(t)
	if err := tab.Do(navTimeout, chromedp.Navigate(f.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if err := tab.Poll(pollTimeout, `document.querySelectorAll('section.card').length === 2 && !!document.querySelector('section.card[data-saga="order"]') && !!document.querySelector('section.card[data-saga="trip"]')`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		def  *saga.Definition
		rows string
	}{
		{"order-1", ordersaga.Saga, "forward:order/succeeded forward:payment/failed compensate:order/compensated final:notification/succeeded"},
		{"trip-1", tripsaga.Saga, "forward:flight/succeeded forward:hotel/succeeded"},
	} {
		if err := tab.Do(navTimeout, chromedp.Navigate(f.URL+"/sagas/"+tc.id)); err != nil {
			t.Fatal(err)
		}
		if err := tab.Poll(pollTimeout, fmt.Sprintf(`document.querySelector('.sagaid')?.textContent === %q && !!document.querySelector('svg.graph')`, tc.id)); err != nil {
			t.Fatal(err)
		}
		rows, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('svg.timeline g.row:not(.waiting)')].map(g => g.dataset.kind + ':' + g.dataset.step + '/' + g.dataset.outcome)`)
		if err != nil || strings.Join(rows, " ") != tc.rows {
			t.Errorf("%s timeline %q %v, want %q", tc.id, strings.Join(rows, " "), err, tc.rows)
		}
		var want []string
		for i, s := range tc.def.Steps {
			want = append(want, fmt.Sprintf("f%d:%s", i, s.Name))
			if s.Compensable() {
				want = append(want, fmt.Sprintf("c%d:undo %s", i, s.Name))
			}
		}
		if tc.def.Finally != nil {
			want = append(want, "final:"+tc.def.Finally.Name)
		}
		nodes, err := browsertest.Eval[[]string](tab, `[...document.querySelectorAll('svg.graph g.node')].map(g => g.dataset.node + ':' + g.querySelector('.name').textContent)`)
		if err != nil || strings.Join(nodes, " ") != strings.Join(want, " ") {
			t.Errorf("%s graph %q %v, want %q", tc.id, nodes, err, want)
		}
	}
}
