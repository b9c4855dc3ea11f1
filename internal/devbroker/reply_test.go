package devbroker_test

import (
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
)

// TestReplies: a 2xx with a CloudEvent (200 or 202, binary or
// structured, with or without data) is a reply, published back to the
// same broker and evaluated against every trigger, including the one that
// produced it; an empty 2xx is not.
func TestReplies(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("svc", onType("order")),
		trigger("done", onType("order.done")),
		trigger("audit"), // no filter: sees everything
	)
	e.sink.on("/svc", func(w http.ResponseWriter, r rec, _ int) {
		mode := r.Event.Extensions()["mode"]
		reply := newEvent("order.done", "mode", mode.(string))
		switch mode {
		case "200":
			replyWith(w, reply, http.StatusOK)
		case "202":
			replyWith(w, reply, http.StatusAccepted)
		case "nodata":
			reply.DataEncoded = nil
			reply.SetDataContentType("")
			replyWith(w, reply, http.StatusOK)
		case "structured":
			w.Header().Set("Content-Type", "application/cloudevents+json")
			b, _ := reply.MarshalJSON()
			_, _ = w.Write(b)
		case "empty200":
			w.WriteHeader(http.StatusOK)
		case "empty204":
			w.WriteHeader(http.StatusNoContent)
		}
	})
	modes := []string{"200", "202", "nodata", "structured", "empty200", "empty204"}
	for _, m := range modes {
		e.send(newEvent("order", "mode", m))
	}
	e.sink.wait(t, "/done", 4)
	e.waitIdle()

	var got []string
	for _, r := range e.sink.got("/done") {
		got = append(got, ext(t, r, "mode"))
	}
	slices.Sort(got)
	if want := []string{"200", "202", "nodata", "structured"}; !slices.Equal(got, want) {
		t.Errorf("replies seen by trigger done: %v, want %v", got, want)
	}
	audit := map[string]int{}
	for _, r := range e.sink.got("/audit") {
		audit[r.Event.Type()]++
	}
	if audit["order"] != 6 || audit["order.done"] != 4 {
		t.Errorf("audit saw %v, want 6 order and 4 order.done", audit)
	}
	if n := len(e.sink.got("/svc")); n != 6 {
		t.Errorf("svc got %d events, want 6 (it must not see its replies: filtered on type)", n)
	}
	for _, r := range e.sink.got("/done") {
		if r.Header.Get("Prefer") != "reply" || r.Header.Get("Kn-Namespace") != ns {
			t.Errorf("reply delivery headers %v", r.Header)
		}
	}
	if n := e.obs.settled("received", 10); n != 10 {
		t.Errorf("received = %d, want 10 (6 sent + 4 replies)", n)
	}
}

// TestReplyTTL is the TTL rules' reply half: the TTL is stripped before the
// subscriber, put back on the reply and decremented by the ingress rules;
// a reply loop ends when it reaches 0, and the rejected reply sends the
// original event to the dead letter sink with code 400 and the broker
// ingress as knativeerrordest. Each reply gets a new knativearrivaltime.
func TestReplyTTL(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("loop", onType("loop"), withDelivery(delivery(0, "", "", "dls"))),
		trigger("once", onType("once")),
		trigger("check", onType("once.reply"), withDelivery(delivery(0, "", "", "dls"))),
	)
	e.sink.on("/loop", func(w http.ResponseWriter, r rec, _ int) {
		time.Sleep(2 * time.Millisecond) // distinct arrival times
		replyWith(w, newEvent("loop"), http.StatusOK)
	})
	e.sink.on("/once", func(w http.ResponseWriter, _ rec, _ int) {
		replyWith(w, newEvent("once.reply"), http.StatusOK)
	})
	e.sink.on("/check", status(http.StatusBadRequest, "look at me")) // to see the reply's TTL in the DLS

	// Stored with TTL 3: deliveries at 3, 2, 1; the third reply would get 0.
	first := newEvent("loop")
	if code := e.post("/saga/default", first, false, http.Header{"Ce-Knativebrokerttl": {"4"}}); code != http.StatusAccepted {
		t.Fatalf("ingress %d", code)
	}
	e.send(newEvent("once"))
	dls := e.sink.wait(t, "/dls", 2)
	e.waitIdle()

	loops := e.sink.got("/loop")
	if n := len(loops); n != 3 {
		t.Errorf("loop delivered %d times, want 3", n)
	}
	var arrivals []time.Time
	for _, r := range loops {
		at, err := time.Parse(time.RFC3339Nano, ext(t, r, "knativearrivaltime"))
		if err != nil {
			t.Fatal(err)
		}
		arrivals = append(arrivals, at)
	}
	for i := 1; i < len(arrivals); i++ {
		if !arrivals[i].After(arrivals[i-1]) {
			t.Errorf("reply %d arrival %s not after %s", i, arrivals[i], arrivals[i-1])
		}
	}
	for _, r := range dls {
		switch r.Event.Type() {
		case "loop": // the rejected third reply: the event that produced it goes to the DLS
			if ext(t, r, "knativeerrorcode") != "400" {
				t.Errorf("loop: knativeerrorcode %s, want 400", ext(t, r, "knativeerrorcode"))
			}
			if got, want := ext(t, r, "knativeerrordest"), e.ingressURL(ns, brokerName).String(); got != want {
				t.Errorf("loop: knativeerrordest %s, want %s", got, want)
			}
			reason, _ := base64.StdEncoding.DecodeString(ext(t, r, "knativeerrordata"))
			if !strings.Contains(string(reason), "knativebrokerttl") {
				t.Errorf("loop: knativeerrordata %q does not explain the TTL", reason)
			}
			if got := ext(t, r, "knativebrokerttl"); got != "1" {
				t.Errorf("loop: dead-lettered event has TTL %s, want 1", got)
			}
		case "once.reply": // the reply of "once": 255 put back, then decremented
			if got := ext(t, r, "knativebrokerttl"); got != "254" {
				t.Errorf("reply TTL %s, want 254", got)
			}
		default:
			t.Errorf("unexpected dead letter %s", r.Event.Type())
		}
	}
}

// TestNonEventReplyIs502 is the replies' failure half: a 2xx whose non-empty
// body is not a CloudEvent, or is an unparsable one, counts as 502 and is
// retried under the delivery policy, then dead-lettered with code 502. A
// later valid answer ends the retries.
func TestNonEventReplyIs502(t *testing.T) {
	e := newEnv(t)
	d := delivery(2, eventingduckv1.BackoffPolicyLinear, "PT0.05S", "dls")
	e.run(brokers(nil),
		trigger("html", onType("html"), withDelivery(d)),
		trigger("broken", onType("broken"), withDelivery(d)),
		trigger("flaky", onType("flaky"), withDelivery(d)),
		trigger("after", onType("after")),
	)
	e.sink.on("/html", func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>ok</html>")
	})
	e.sink.on("/broken", func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Content-Type", "application/cloudevents+json")
		_, _ = io.WriteString(w, `{"specversion":`)
	})
	e.sink.on("/flaky", func(w http.ResponseWriter, _ rec, n int) {
		if n == 1 {
			_, _ = io.WriteString(w, "not an event")
			return
		}
		replyWith(w, newEvent("after"), http.StatusOK)
	})
	for _, typ := range []string{"html", "broken", "flaky"} {
		e.send(newEvent(typ))
	}
	dls := e.sink.wait(t, "/dls", 2)
	e.sink.wait(t, "/after", 1)
	e.waitIdle()
	for _, typ := range []string{"html", "broken"} {
		if n := len(e.sink.got("/" + typ)); n != 3 {
			t.Errorf("%s: %d attempts, want 3", typ, n)
		}
		if n := e.obs.get("retried/" + typ + "/502"); n != 2 {
			t.Errorf("%s: retried/502 = %d, want 2", typ, n)
		}
	}
	if n := len(e.sink.got("/flaky")); n != 2 {
		t.Errorf("flaky: %d attempts, want 2", n)
	}
	for _, r := range dls {
		if got := ext(t, r, "knativeerrorcode"); got != "502" {
			t.Errorf("%s: knativeerrorcode %s, want 502", r.Event.Type(), got)
		}
		if got, want := ext(t, r, "knativeerrordest"), e.sink.url("/"+r.Event.Type()).String(); got != want {
			t.Errorf("%s: knativeerrordest %s, want %s", r.Event.Type(), got, want)
		}
	}
	if len(dls) == 2 {
		byType := map[string]string{}
		for _, r := range dls {
			byType[r.Event.Type()] = ext(t, r, "knativeerrordata")
		}
		if byType["html"] != b64("<html>ok</html>") {
			t.Errorf("html: knativeerrordata %s, want base64 of the body", byType["html"])
		}
	}
}

// TestInvalidReply: a reply that fails the ingress rules (here: no source)
// sends the original event to the dead letter sink with code 400 and the
// broker ingress as destination; without a DLS it is dropped.
func TestInvalidReply(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("bad", onType("bad"), withDelivery(delivery(0, "", "", "dls"))),
		trigger("bad2", onType("bad2")),
	)
	invalid := func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "r1")
		w.Header().Set("Ce-Type", "reply")
		w.WriteHeader(http.StatusOK)
	}
	e.sink.on("/bad", invalid)
	e.sink.on("/bad2", invalid)
	orig := newEvent("bad")
	e.send(orig)
	e.send(newEvent("bad2"))
	got := e.sink.wait(t, "/dls", 1)
	e.waitIdle()
	r := got[0]
	if r.Event.ID() != orig.ID() {
		t.Errorf("dls got %s, want the original %s", r.Event.ID(), orig.ID())
	}
	if c := ext(t, r, "knativeerrorcode"); c != "400" {
		t.Errorf("knativeerrorcode %s, want 400", c)
	}
	if d, want := ext(t, r, "knativeerrordest"), e.ingressURL(ns, brokerName).String(); d != want {
		t.Errorf("knativeerrordest %s, want %s", d, want)
	}
	reason, _ := base64.StdEncoding.DecodeString(ext(t, r, "knativeerrordata"))
	if !strings.Contains(string(reason), "source") {
		t.Errorf("knativeerrordata %q does not name the missing source", reason)
	}
	if n := e.obs.get("rejected/bad/400"); n != 1 {
		t.Errorf("rejected/bad/400 = %d, want 1", n)
	}
	if n := e.obs.get("dropped/bad2/400"); n != 1 {
		t.Errorf("dropped/bad2/400 = %d, want 1", n)
	}
}

// TestInvalidUTF8Reply: a reply whose extension is not valid UTF-8 is
// refused like one the ingress refuses: dead letter code 400, with the
// reason.
func TestInvalidUTF8Reply(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil), trigger("step", onType("step"), withDelivery(delivery(0, "", "", "dls"))), trigger("next", onType("next")))
	e.sink.on("/step", func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "r1")
		w.Header().Set("Ce-Source", "/s")
		w.Header().Set("Ce-Type", "next")
		w.Header()["Ce-Correlationid"] = []string{"saga-\xc0\xa0"}
		w.WriteHeader(http.StatusOK)
	})
	e.send(newEvent("step"))
	got := e.sink.wait(t, "/dls", 1)
	e.waitIdle()
	if c := ext(t, got[0], "knativeerrorcode"); c != "400" {
		t.Errorf("knativeerrorcode %s, want 400", c)
	}
	if reason, _ := base64.StdEncoding.DecodeString(ext(t, got[0], "knativeerrordata")); !strings.Contains(string(reason), "correlationid is not valid UTF-8") {
		t.Errorf("knativeerrordata %q does not give the reason", reason)
	}
	if n := len(e.sink.got("/next")); n != 0 {
		t.Errorf("the invalid reply was delivered %d times", n)
	}
}

// TestReplyTraceHeaders: trace context and pass-through headers of the
// subscriber's response travel with its reply; a response without trace
// headers keeps the trace of the event it answers.
func TestReplyTraceHeaders(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("step", onType("step")),
		trigger("next", onType("next")),
	)
	const (
		tp1 = "00-11111111111111111111111111111111-1111111111111111-01"
		tp2 = "00-22222222222222222222222222222222-2222222222222222-01"
	)
	e.sink.on("/step", func(w http.ResponseWriter, r rec, _ int) {
		if ext(t, r, "own") == "yes" {
			w.Header().Set("Traceparent", tp2)
			w.Header().Set("X-Request-Id", "from-response")
		}
		replyWith(w, newEvent("next", "own", ext(t, r, "own")), http.StatusOK)
	})
	hdr := http.Header{"Traceparent": {tp1}, "Baggage": {"k=v"}, "X-Request-Id": {"from-producer"}}
	for _, own := range []string{"yes", "no"} {
		if code := e.post("/saga/default", newEvent("step", "own", own), false, hdr); code != http.StatusAccepted {
			t.Fatalf("ingress %d", code)
		}
	}
	e.sink.wait(t, "/next", 2)
	e.waitIdle()
	for _, r := range e.sink.got("/next") {
		own := ext(t, r, "own")
		want := map[string]string{"yes": tp2, "no": tp1}[own]
		if got := r.Header.Get("Traceparent"); got != want {
			t.Errorf("own=%s: traceparent %s, want %s", own, got, want)
		}
		wantID := map[string]string{"yes": "from-response", "no": ""}[own]
		if got := r.Header.Get("X-Request-Id"); got != wantID {
			t.Errorf("own=%s: x-request-id %q, want %q (pass-through headers of the response, as Knative)", own, got, wantID)
		}
		if own == "no" && r.Header.Get("Baggage") != "k=v" {
			t.Errorf("own=no: baggage %q, want inherited k=v", r.Header.Get("Baggage"))
		}
	}
}

// TestReplyIDsAreUnique: replies that repeat a CloudEvent id are still
// separate entries; like Knative, the broker does not deduplicate.
func TestReplyIDsAreUnique(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil), trigger("a", onType("a")), trigger("b", onType("b")))
	e.sink.on("/a", func(w http.ResponseWriter, r rec, _ int) {
		reply := cloudevents.NewEvent()
		reply.SetID("same")
		reply.SetSource("/s")
		reply.SetType("b")
		replyWith(w, reply, http.StatusOK)
	})
	for i := range 3 {
		e.send(newEvent("a", "n", strconv.Itoa(i)))
	}
	e.sink.wait(t, "/b", 3)
	e.waitIdle()
}

// TestDuplicateDeliveries: at rate 1 every matching event reaches its
// subscriber twice, concurrently, like at-least-once delivery at its
// worst; the two identical replies (same source and id) are stored once,
// and the entry is acknowledged after both deliveries.
func TestDuplicateDeliveries(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("svc", onType("order")), trigger("done", onType("order.done"))})
	cfg.DuplicateDeliveries = 1
	e.start(cfg)
	e.sink.on("/svc", func(w http.ResponseWriter, r rec, _ int) {
		reply := newEvent("order.done")
		reply.SetID("reply-of-" + r.Event.ID()) // a deterministic reply, as ksaga steps give
		replyWith(w, reply, http.StatusOK)
	})
	for range 3 {
		e.send(newEvent("order"))
	}
	e.sink.wait(t, "/done", 6) // 3 events → 3 stored replies × 2 deliveries each
	e.waitIdle()
	perID := map[string]int{}
	for _, r := range e.sink.got("/svc") {
		perID[r.Event.ID()]++
	}
	if len(perID) != 3 {
		t.Fatalf("%d distinct events delivered, want 3", len(perID))
	}
	for id, n := range perID {
		if n != 2 {
			t.Errorf("event %s delivered %d times, want 2", id, n)
		}
	}
	if n := len(e.sink.got("/done")); n != 6 {
		t.Errorf("%d reply deliveries, want 6 (each stored once, delivered twice)", n)
	}
	if n := e.obs.settled("received", 6); n != 6 {
		t.Errorf("%d events stored, want 6 (3 sent, 3 replies)", n)
	}
}

// TestDuplicateChainGrowsLinearly (issue 19 A3): a chain of N replies under
// duplicate rate 1 stores N+1 events, not 2^(N+1)-1: the duplicate
// delivery's copy of a reply is not published again.
func TestDuplicateChainGrowsLinearly(t *testing.T) {
	const n = 8
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("step", onType("step"))})
	cfg.DuplicateDeliveries = 1
	e.start(cfg)
	e.sink.on("/step", func(w http.ResponseWriter, r rec, _ int) {
		k, _ := strconv.Atoi(ext(t, r, "k"))
		if k == n {
			w.WriteHeader(http.StatusOK)
			return
		}
		reply := newEvent("step", "k", strconv.Itoa(k+1))
		reply.SetID("step-" + strconv.Itoa(k+1))
		replyWith(w, reply, http.StatusOK)
	})
	e.send(newEvent("step", "k", "0"))
	e.sink.wait(t, "/step", 2*(n+1))
	e.waitIdle()
	if got := e.obs.settled("received", n+1); got != n+1 {
		t.Errorf("%d events stored for a chain of %d replies, want %d", got, n, n+1)
	}
	if got := len(e.sink.got("/step")); got != 2*(n+1) {
		t.Errorf("%d deliveries, want %d (each event twice)", got, 2*(n+1))
	}
}

// TestDuplicateRate: at rate 0.3 about 30% of the deliveries are made
// twice, none more than twice, none lost. The bounds are six standard
// deviations wide.
func TestDuplicateRate(t *testing.T) {
	const events = 300
	e := newEnv(t)
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{trigger("svc")})
	cfg.DuplicateDeliveries = 0.3
	e.start(cfg)
	for range events {
		e.send(newEvent("t"))
	}
	e.waitIdle()
	perID := map[string]int{}
	for _, r := range e.sink.got("/svc") {
		perID[r.Event.ID()]++
	}
	twice := 0
	for id, k := range perID {
		switch k {
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("event %s delivered %d times", id, k)
		}
	}
	if len(perID) != events {
		t.Errorf("%d events delivered, want %d", len(perID), events)
	}
	if twice < 42 || twice > 138 {
		t.Errorf("%d of %d events delivered twice at rate 0.3, want about 90", twice, events)
	}
}

// A reply over MaxBodyBytes is refused like one the ingress would refuse:
// dead letter code 413, after one call (413 is final), in binary mode and
// in structured mode, whose cut-off JSON must not pass for a malformed
// event (a 502, retried).
func TestOversizedReplyIs413(t *testing.T) {
	e := newEnv(t)
	d := func() *eventingduckv1.DeliverySpec {
		return delivery(2, eventingduckv1.BackoffPolicyLinear, "PT0.01S", "dls")
	}
	cfg := e.config(brokers(nil), []*eventingv1.Trigger{
		trigger("bin", onType("bin"), withDelivery(d())),
		trigger("json", onType("json"), withDelivery(d())),
		trigger("html", onType("html"), withDelivery(d())),
	})
	cfg.MaxBodyBytes = 1024
	e.start(cfg)
	big := func() cloudevents.Event {
		r := newEvent("big.reply")
		_ = r.SetData(cloudevents.TextPlain, strings.Repeat("x", 4096))
		return r
	}
	e.sink.on("/bin", func(w http.ResponseWriter, _ rec, _ int) { replyWith(w, big(), http.StatusOK) })
	e.sink.on("/json", func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Content-Type", "application/cloudevents+json")
		b, _ := big().MarshalJSON()
		_, _ = w.Write(b)
	})
	// a large body that is no CloudEvent stays what broker-filter makes of
	// any such body: 502, retried
	e.sink.on("/html", func(w http.ResponseWriter, _ rec, _ int) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(strings.Repeat("<p>", 2048)))
	})
	e.send(newEvent("bin"))
	e.send(newEvent("json"))
	e.send(newEvent("html"))
	dls := e.sink.wait(t, "/dls", 3)
	e.waitIdle()
	for _, r := range dls {
		want := map[string]string{"bin": "413", "json": "413", "html": "502"}[r.Event.Type()]
		if got := ext(t, r, "knativeerrorcode"); got != want {
			t.Errorf("%s: knativeerrorcode %s, want %s", r.Event.Type(), got, want)
		}
	}
	for p, want := range map[string]int{"/bin": 1, "/json": 1, "/html": 3} {
		if n := len(e.sink.got(p)); n != want {
			t.Errorf("%s: subscriber called %d times, want %d", p, n, want)
		}
	}
}
