package devbroker_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"k8s.io/utils/ptr"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
)

// TestSubscriberRequest (and the delivery half of the TTL rules): what a
// subscriber sees. Prefer: reply, Kn-Namespace, binary mode by default
// (structured with delivery.format json), pass-through and W3C trace
// headers forwarded, others not, knativebrokerttl stripped,
// knativearrivaltime stamped.
func TestSubscriberRequest(t *testing.T) {
	e := newEnv(t)
	json := eventingduckv1.DeliveryFormatJson
	binaryFmt := eventingduckv1.DeliveryFormatBinary
	e.run(brokers(nil),
		trigger("plain"),
		trigger("json", withDelivery(&eventingduckv1.DeliverySpec{Format: &json})),
		trigger("binary", withDelivery(&eventingduckv1.DeliverySpec{Format: &binaryFmt})),
	)
	before := time.Now()
	ev := newEvent("order.created")
	hdr := http.Header{
		"Traceparent":   {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"Tracestate":    {"congo=t61rcWkgMzE"},
		"Baggage":       {"saga=42"},
		"X-Request-Id":  {"req-1"},
		"Knative-Foo":   {"bar"},
		"X-B3-Traceid":  {"abc"},
		"X-Other":       {"must not pass"},
		"Authorization": {"Bearer secret"},
	}
	for _, structured := range []bool{false, true} {
		if code := e.post("/saga/default", ev, structured, hdr); code != http.StatusAccepted {
			t.Fatalf("ingress %d", code)
		}
	}
	after := time.Now()

	for _, path := range []string{"/plain", "/json", "/binary"} {
		for i, r := range e.sink.wait(t, path, 2) {
			name := fmt.Sprintf("%s #%d", path, i)
			wantMode := binding.EncodingBinary
			if path == "/json" {
				wantMode = binding.EncodingStructured
			}
			if r.Mode != wantMode {
				t.Errorf("%s: mode %v, want %v", name, r.Mode, wantMode)
			}
			if r.Event == nil || r.Event.ID() != ev.ID() {
				t.Fatalf("%s: not the event sent: %s", name, r.Body)
			}
			for k, want := range map[string]string{
				"Prefer":        "reply",
				"Kn-Namespace":  ns,
				"Traceparent":   hdr.Get("Traceparent"),
				"Tracestate":    hdr.Get("Tracestate"),
				"Baggage":       hdr.Get("Baggage"),
				"X-Request-Id":  "req-1",
				"Knative-Foo":   "bar",
				"X-B3-Traceid":  "abc",
				"X-Other":       "",
				"Authorization": "",
			} {
				if got := r.Header.Get(k); got != want {
					t.Errorf("%s: header %s = %q, want %q", name, k, got, want)
				}
			}
			if v := ext(t, r, "knativebrokerttl"); v != "" {
				t.Errorf("%s: knativebrokerttl %q reached the subscriber", name, v)
			}
			at, err := time.Parse(time.RFC3339Nano, ext(t, r, "knativearrivaltime"))
			if err != nil {
				t.Errorf("%s: knativearrivaltime: %v", name, err)
			} else if at.Before(before.Add(-time.Millisecond)) || at.After(after.Add(time.Millisecond)) {
				t.Errorf("%s: knativearrivaltime %v outside [%v, %v]", name, at, before, after)
			}
			if got := string(r.Event.Data()); got != `{"hello":"world"}` {
				t.Errorf("%s: data %s", name, got)
			}
		}
	}
	e.waitIdle()
	if n := e.obs.get("delivered/plain/200"); n != 2 {
		t.Errorf("delivered/plain/200 = %d, want 2", n)
	}
	if n := e.obs.get("received"); n != 2 {
		t.Errorf("received = %d, want 2", n)
	}
}

// TestFilters: legacy attributes (exact, "" = present and
// non-empty), every SubscriptionsAPI dialect, filters overriding filter,
// no filter = everything; filter misses are acknowledged silently.
func TestFilters(t *testing.T) {
	e := newEnv(t)
	sub := func(fs ...eventingv1.SubscriptionsAPIFilter) func(*eventingv1.Trigger) {
		return func(t *eventingv1.Trigger) { t.Spec.Filters = fs }
	}
	legacy := func(kv ...string) func(*eventingv1.Trigger) {
		return func(t *eventingv1.Trigger) {
			m := map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			t.Spec.Filter = &eventingv1.TriggerFilter{Attributes: m}
		}
	}
	e.run(brokers(nil),
		trigger("legacy", legacy("type", "order.created", "source", "/shop")),
		trigger("legacyany", legacy("region", "")),
		trigger("legacyint", legacy("sequence", "5")),
		trigger("exact", sub(eventingv1.SubscriptionsAPIFilter{Exact: map[string]string{"type": "order.created"}})),
		trigger("prefix", sub(eventingv1.SubscriptionsAPIFilter{Prefix: map[string]string{"type": "order."}})),
		trigger("suffix", sub(eventingv1.SubscriptionsAPIFilter{Suffix: map[string]string{"type": ".cancelled"}})),
		trigger("all", sub(eventingv1.SubscriptionsAPIFilter{All: []eventingv1.SubscriptionsAPIFilter{
			{Exact: map[string]string{"type": "order.created"}}, {Prefix: map[string]string{"source": "/sh"}}}})),
		trigger("any", sub(eventingv1.SubscriptionsAPIFilter{Any: []eventingv1.SubscriptionsAPIFilter{
			{Exact: map[string]string{"type": "a"}}, {Suffix: map[string]string{"subject": "-vip"}}}})),
		trigger("not", sub(eventingv1.SubscriptionsAPIFilter{Not: &eventingv1.SubscriptionsAPIFilter{Prefix: map[string]string{"type": "order."}}})),
		trigger("cesql", sub(eventingv1.SubscriptionsAPIFilter{CESQL: "sequence > 3 AND subject LIKE 'vip-%'"})),
		trigger("toplevel", sub( // a top-level list is an implicit all
			eventingv1.SubscriptionsAPIFilter{Prefix: map[string]string{"type": "order."}},
			eventingv1.SubscriptionsAPIFilter{Exact: map[string]string{"source": "/shop"}})),
		trigger("override", legacy("type", "never"), sub(eventingv1.SubscriptionsAPIFilter{Exact: map[string]string{"type": "order.created"}})),
		trigger("none"),
	)
	evs := map[string]cloudevents.Event{
		"e1": newEvent("order.created", "region", "eu", "sequence", "1"),
		"e2": newEvent("order.cancelled"),
		"e3": newEvent("a", "region", ""),
		"e4": newEvent("other", "sequence", "5"),
		"e5": newEvent("misc"),
	}
	e1 := evs["e1"]
	e1.SetSource("/shop")
	e1.SetSubject("s-1")
	evs["e1"] = e1
	e2 := evs["e2"]
	e2.SetSource("/shop")
	e2.SetSubject("x-vip")
	evs["e2"] = e2
	e4 := evs["e4"]
	e4.SetSubject("vip-1")
	evs["e4"] = e4
	e5 := evs["e5"]
	e5.SetExtension("sequence", 5) // an integer, sent in structured mode below
	evs["e5"] = e5
	names := map[string]string{}
	for name, ev := range evs {
		names[ev.ID()] = name
		if code := e.post("/saga/default", ev, name == "e5", nil); code != http.StatusAccepted {
			t.Fatalf("%s: ingress %d", name, code)
		}
	}
	want := map[string][]string{
		"legacy":    {"e1"},
		"legacyany": {"e1"},       // e3 has region "" → not a match
		"legacyint": {"e4", "e5"}, // structured 5 is "5" after a binary hop in a cluster, here too
		"exact":     {"e1"},
		"prefix":    {"e1", "e2"},
		"suffix":    {"e2"},
		"all":       {"e1"},
		"any":       {"e2", "e3"},
		"not":       {"e3", "e4", "e5"},
		"cesql":     {"e4"},
		"toplevel":  {"e1", "e2"},
		"override":  {"e1"},
		"none":      {"e1", "e2", "e3", "e4", "e5"},
	}
	e.sink.wait(t, "/none", len(evs))
	e.waitIdle()
	for trig, w := range want {
		var got []string
		for _, r := range e.sink.got("/" + trig) {
			got = append(got, names[r.Event.ID()])
		}
		slices.Sort(got)
		if !slices.Equal(got, w) {
			t.Errorf("trigger %s received %v, want %v", trig, got, w)
		}
	}
}

// TestRetryBackoff is the retries' timing: exponential waits d, 2d, 4d and
// linear waits 0, d, 2d (kncloudevents' 0-based attempt numbers), no
// policy → immediate retries; then the dead letter sink gets the original
// event with the error extensions (knativeerrordest/code/data).
// A CESQL expression that parses but is not a boolean ("type") panics
// Knative's filter at the first event. The broker must survive it: that
// Trigger does not match, the others deliver, and later events go on.
func TestNonBooleanCESQLDoesNotMatch(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("sql", func(tr *eventingv1.Trigger) { tr.Spec.Filters = []eventingv1.SubscriptionsAPIFilter{{CESQL: "type"}} }),
		// a "not" around the failing expression does not make it a match
		trigger("notsql", func(tr *eventingv1.Trigger) {
			tr.Spec.Filters = []eventingv1.SubscriptionsAPIFilter{{Not: &eventingv1.SubscriptionsAPIFilter{CESQL: "type"}}}
		}),
		trigger("other", onType("order")),
	)
	e.send(newEvent("order"))
	e.send(newEvent("order"))
	e.sink.wait(t, "/other", 2)
	e.waitIdle()
	for _, p := range []string{"/sql", "/notsql"} {
		if n := len(e.sink.got(p)); n != 0 {
			t.Fatalf("%s: the failing filter matched %d events", p, n)
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	const d = 100 * time.Millisecond
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("exp", onType("exp"), withDelivery(delivery(3, eventingduckv1.BackoffPolicyExponential, "PT0.1S", "dls"))),
		trigger("lin", onType("lin"), withDelivery(delivery(3, eventingduckv1.BackoffPolicyLinear, "PT0.1S", "dls"))),
		trigger("nopolicy", onType("nopolicy"), withDelivery(delivery(3, "", "PT0.1S", "dls"))),
	)
	for _, p := range []string{"/exp", "/lin", "/nopolicy"} {
		e.sink.on(p, status(http.StatusServiceUnavailable, "busy "+p))
	}
	sent := map[string]cloudevents.Event{}
	for _, typ := range []string{"exp", "lin", "nopolicy"} {
		sent[typ] = newEvent(typ)
		e.send(sent[typ])
	}
	cases := map[string][]time.Duration{
		"exp":      {d, 2 * d, 4 * d},
		"lin":      {0, d, 2 * d},
		"nopolicy": {0, 0, 0},
	}
	dls := e.sink.wait(t, "/dls", 3)
	// The sink has the dead letters; the broker counts them once the sink
	// has answered: wait for the broker to finish before reading counters.
	e.waitIdle()
	for typ, gaps := range cases {
		got := e.sink.got("/" + typ)
		if len(got) != 4 {
			t.Errorf("%s: %d attempts, want 4", typ, len(got))
			continue
		}
		for i, want := range gaps {
			gap := got[i+1].At.Sub(got[i].At)
			// Lower bound: the backoff itself (what tells the formulas apart);
			// upper: scheduling slack under -race on a busy CI machine.
			if gap < want-5*time.Millisecond || gap > want+time.Second {
				t.Errorf("%s: wait before retry %d = %v, want %v", typ, i+1, gap, want)
			}
		}
		if n := e.obs.get(fmt.Sprintf("retried/%s/503", typ)); n != 3 {
			t.Errorf("%s: retried counted %d, want 3", typ, n)
		}
	}
	for _, r := range dls {
		typ := r.Event.Type()
		if r.Event.ID() != sent[typ].ID() {
			t.Errorf("dls got %s, want the original %s", r.Event.ID(), sent[typ].ID())
		}
		if got, want := ext(t, r, "knativeerrorcode"), "503"; got != want {
			t.Errorf("%s: knativeerrorcode %s, want %s", typ, got, want)
		}
		if got, want := ext(t, r, "knativeerrordest"), e.sink.url("/"+typ).String(); got != want {
			t.Errorf("%s: knativeerrordest %s, want %s", typ, got, want)
		}
		if got, want := ext(t, r, "knativeerrordata"), b64("busy /"+typ); got != want {
			t.Errorf("%s: knativeerrordata %s, want %s", typ, got, want)
		}
		if got := ext(t, r, "knativebrokerttl"); got != "255" {
			t.Errorf("%s: dead letter knativebrokerttl %q, want 255 (broker-filter keeps it on the DLS path)", typ, got)
		}
		if ext(t, r, "knativearrivaltime") == "" {
			t.Errorf("%s: dead letter without knativearrivaltime", typ)
		}
		if r.Header.Get("Kn-Namespace") != ns {
			t.Errorf("%s: dead letter without Kn-Namespace", typ)
		}
		if n := e.obs.get(fmt.Sprintf("deadlettered/%s/503", typ)); n != 1 {
			t.Errorf("%s: deadlettered counted %d, want 1", typ, n)
		}
	}
}

// TestRetryableCodes is the retries' code table: transport errors, 5xx, 404,
// 408, 409, 429 are retried; 3xx and every other 4xx are not.
func TestRetryableCodes(t *testing.T) {
	e := newEnv(t)
	retried := []int{404, 408, 409, 429, 500, 502, 503, 504}
	final := []int{300, 400, 401, 403, 413, 422}
	var triggers []*eventingv1.Trigger
	for _, c := range append(slices.Clone(retried), final...) {
		name := fmt.Sprintf("c%d", c)
		triggers = append(triggers, trigger(name, onType(name), withDelivery(delivery(2, "", "", "dls"))))
	}
	// A closed port: every attempt is a transport error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/gone"
	_ = l.Close()
	transport := trigger("transport", onType("transport"), withDelivery(delivery(2, "", "", "dls")))
	transport.Spec.Subscriber = duckv1.Destination{URI: apis.HTTP(l.Addr().String())}
	transport.Spec.Subscriber.URI.Path = "/gone"
	triggers = append(triggers, transport)
	e.run(brokers(nil), triggers...)

	for _, c := range append(slices.Clone(retried), final...) {
		e.sink.on(fmt.Sprintf("/c%d", c), status(c, fmt.Sprintf("code %d", c)))
		e.send(newEvent(fmt.Sprintf("c%d", c)))
	}
	e.send(newEvent("transport"))

	n := len(retried) + len(final) + 1
	dls := e.sink.wait(t, "/dls", n)
	e.waitIdle()
	if len(dls) != n {
		t.Fatalf("dls got %d events, want %d", len(dls), n)
	}
	for _, c := range retried {
		if got := len(e.sink.got(fmt.Sprintf("/c%d", c))); got != 3 {
			t.Errorf("code %d: %d attempts, want 3 (retried)", c, got)
		}
	}
	for _, c := range final {
		if got := len(e.sink.got(fmt.Sprintf("/c%d", c))); got != 1 {
			t.Errorf("code %d: %d attempts, want 1 (not retried)", c, got)
		}
	}
	if got := e.obs.get("retried/transport/500"); got != 2 {
		t.Errorf("transport errors retried %d times, want 2", got)
	}
	for _, r := range dls {
		typ := r.Event.Type()
		if typ == "transport" {
			if got := ext(t, r, "knativeerrorcode"); got != "500" {
				t.Errorf("transport: knativeerrorcode %s, want 500", got)
			}
			if got := ext(t, r, "knativeerrordest"); got != closed {
				t.Errorf("transport: knativeerrordest %s, want %s", got, closed)
			}
			data, _ := base64.StdEncoding.DecodeString(ext(t, r, "knativeerrordata"))
			if !strings.HasPrefix(string(data), "dispatch error") {
				t.Errorf("transport: knativeerrordata %q, want a dispatch error", data)
			}
			continue
		}
		if got, want := ext(t, r, "knativeerrorcode"), strings.TrimPrefix(typ, "c"); got != want {
			t.Errorf("%s: knativeerrorcode %s, want %s", typ, got, want)
		}
		if got, want := ext(t, r, "knativeerrordata"), b64("code "+strings.TrimPrefix(typ, "c")); got != want {
			t.Errorf("%s: knativeerrordata %s, want %s", typ, got, want)
		}
	}
}

// TestDeliveryTimeout: delivery.timeout bounds each attempt; a timed-out
// attempt is a transport error and is retried.
func TestDeliveryTimeout(t *testing.T) {
	e := newEnv(t)
	d := delivery(1, "", "", "dls")
	d.Timeout = ptr.To("PT0.5S") // room for the second attempt on a slow machine
	e.run(brokers(nil), trigger("slow", withDelivery(d)))
	e.sink.on("/slow", func(w http.ResponseWriter, r rec, n int) {
		if n == 1 {
			time.Sleep(2 * time.Second)
		}
		w.WriteHeader(http.StatusOK)
	})
	e.send(newEvent("t"))
	got := e.sink.wait(t, "/slow", 2)
	// Not before the timeout (less the first attempt's own dial and send),
	// and well before the first attempt would have ended by itself.
	if gap := got[1].At.Sub(got[0].At); gap < 400*time.Millisecond || gap > 1500*time.Millisecond {
		t.Errorf("second attempt %v after the first, want about the 500ms timeout", gap)
	}
	e.waitIdle()
	if n := len(e.sink.got("/dls")); n != 0 {
		t.Errorf("dls got %d events, want 0", n)
	}
	if n := e.obs.get("delivered/slow/200"); n != 1 {
		t.Errorf("delivered = %d, want 1", n)
	}
}

// TestTriggerDeliveryReplacesBroker is the delivery specs' precedence: a Trigger's
// delivery replaces the Broker's retry/backoff as a whole (so a Trigger
// with only a dead letter sink gets no retries), while the dead letter
// sink falls back to the Broker's on its own.
func TestTriggerDeliveryReplacesBroker(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(delivery(2, "", "", "bdls")),
		trigger("dlsonly", onType("dlsonly"), withDelivery(&eventingduckv1.DeliverySpec{
			DeadLetterSink: &duckv1.Destination{Ref: ksvc("tdls").Ref}})),
		trigger("retryonly", onType("retryonly"), withDelivery(&eventingduckv1.DeliverySpec{Retry: ptr.To[int32](1)})),
		trigger("inherit", onType("inherit")),
	)
	for _, name := range []string{"dlsonly", "retryonly", "inherit"} {
		e.sink.on("/"+name, status(http.StatusInternalServerError, "boom"))
		e.send(newEvent(name))
	}
	e.sink.wait(t, "/tdls", 1)
	e.sink.wait(t, "/bdls", 2)
	e.waitIdle()
	for name, want := range map[string]int{"dlsonly": 1, "retryonly": 2, "inherit": 3} {
		if got := len(e.sink.got("/" + name)); got != want {
			t.Errorf("%s: %d attempts, want %d", name, got, want)
		}
	}
	if got := e.sink.got("/tdls"); len(got) != 1 || got[0].Event.Type() != "dlsonly" {
		t.Errorf("trigger DLS got %v", got)
	}
	var types []string
	for _, r := range e.sink.got("/bdls") {
		types = append(types, r.Event.Type())
	}
	slices.Sort(types)
	if !slices.Equal(types, []string{"inherit", "retryonly"}) {
		t.Errorf("broker DLS got %v, want [inherit retryonly]", types)
	}
}

// TestDeadLetterData: knativeerrordata is base64 of the response body,
// truncated to 1024 characters; without a DLS a failed event is dropped,
// counted and acknowledged; a failing DLS also drops.
func TestDeadLetterData(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil),
		trigger("big", onType("big"), withDelivery(delivery(0, "", "", "dls"))),
		trigger("nodls", onType("nodls"), withDelivery(delivery(1, "", "", ""))),
		trigger("baddls", onType("baddls"), withDelivery(delivery(0, "", "", "brokendls"))),
	)
	body := strings.Repeat("0123456789", 200)
	e.sink.on("/big", status(http.StatusInternalServerError, body))
	e.sink.on("/nodls", status(http.StatusBadRequest, "bad"))
	e.sink.on("/baddls", status(http.StatusBadRequest, "bad"))
	e.sink.on("/brokendls", status(http.StatusInternalServerError, ""))
	for _, typ := range []string{"big", "nodls", "baddls"} {
		e.send(newEvent(typ))
	}
	got := e.sink.wait(t, "/dls", 1)
	e.sink.wait(t, "/brokendls", 1)
	e.waitIdle()
	data := ext(t, got[0], "knativeerrordata")
	if len(data) != 1024 || data != b64(body[:768]) {
		t.Errorf("knativeerrordata has %d chars, want the first 1024 of base64(body)", len(data))
	}
	if n := len(e.sink.got("/nodls")); n != 1 {
		t.Errorf("nodls: %d attempts, want 1 (400 is final)", n)
	}
	if n := e.obs.get("dropped/nodls/400"); n != 1 {
		t.Errorf("dropped/nodls/400 = %d, want 1", n)
	}
	if n := e.obs.get("dropped/baddls/400"); n != 1 {
		t.Errorf("dropped/baddls/400 = %d, want 1", n)
	}
	if n := e.obs.get("deadlettered/big/500"); n != 1 {
		t.Errorf("deadlettered/big/500 = %d, want 1", n)
	}
}

// TestEventRoundTrip: what the subscriber receives is the event that was
// sent (every attribute, extension and data byte; v0.3 and v1.0; binary
// and structured input; data_base64 stays data_base64 when the trigger
// asks for structured mode), plus knativearrivaltime.
func TestEventRoundTrip(t *testing.T) {
	e := newEnv(t)
	json := eventingduckv1.DeliveryFormatJson
	e.run(brokers(nil),
		trigger("bin"),
		trigger("json", withDelivery(&eventingduckv1.DeliverySpec{Format: &json})),
	)
	full := cloudevents.NewEvent()
	full.SetID("full")
	full.SetSource("urn:example:source")
	full.SetType("com.example.full")
	full.SetSubject("subject-1")
	full.SetTime(time.Date(2026, 11, 25, 10, 11, 12, 123456789, time.UTC))
	full.SetDataSchema("https://example.com/schema.json")
	full.SetExtension("sagaid", "s-1")
	full.SetExtension("empty", "")
	_ = full.SetData("text/plain; charset=utf-8", []byte("plain \x00 bytes ü"))
	v03 := full.Clone()
	v03.SetID("v03")
	v03.SetSpecVersion("0.3")
	nodata := cloudevents.NewEvent()
	nodata.SetID("nodata")
	nodata.SetSource("/s")
	nodata.SetType("t")
	b64data := nodata.Clone()
	b64data.SetID("b64")
	b64data.DataEncoded = []byte{0, 1, 2, 0xff}
	b64data.DataBase64 = true
	b64data.SetDataContentType("application/octet-stream")

	sent := map[string]cloudevents.Event{}
	for _, ev := range []cloudevents.Event{full, v03, nodata, b64data} {
		for _, structured := range []bool{false, true} {
			sent[ev.ID()] = ev
			if code := e.post("/saga/default", ev, structured, nil); code != http.StatusAccepted {
				t.Fatalf("%s structured=%v: ingress %d", ev.ID(), structured, code)
			}
		}
	}
	b64kept := 0
	for _, path := range []string{"/bin", "/json"} {
		for _, r := range e.sink.wait(t, path, 8) {
			want := sent[r.Event.ID()]
			got := r.Event.Clone()
			got.SetExtension("knativearrivaltime", nil)
			if got.SpecVersion() != want.SpecVersion() || got.Source() != want.Source() || got.Type() != want.Type() ||
				got.Subject() != want.Subject() || !got.Time().Equal(want.Time()) || got.DataSchema() != want.DataSchema() ||
				got.DataContentType() != want.DataContentType() || string(got.Data()) != string(want.Data()) {
				t.Errorf("%s %s: got\n%s\nwant\n%s", path, want.ID(), got, want)
			}
			for k, v := range want.Extensions() {
				if fmt.Sprint(got.Extensions()[k]) != fmt.Sprint(v) {
					t.Errorf("%s %s: extension %s = %v, want %v", path, want.ID(), k, got.Extensions()[k], v)
				}
			}
			if len(got.Extensions()) != len(want.Extensions()) {
				t.Errorf("%s %s: extensions %v, want %v", path, want.ID(), got.Extensions(), want.Extensions())
			}
			if path == "/json" && want.ID() == "b64" && strings.Contains(string(r.Body), `"data_base64":"AAEC/w=="`) {
				b64kept++
			}
		}
	}
	// Only the structured input carried data_base64 (binary mode has no
	// such notion); the broker keeps it for structured delivery, where a
	// binary hop in a cluster would turn it into a lossy JSON string.
	if b64kept != 1 {
		t.Errorf("data_base64 kept in %d structured deliveries, want 1", b64kept)
	}
	e.waitIdle()
}
