package devbroker_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestIngressContract is the Broker ingress's HTTP contract, as Knative's
// MT broker ingress answers: methods, paths, content modes, validation,
// batch, hostile input, size limit, TTL ≤ 0.
func TestIngressContract(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(brokers(nil), nil)
	cfg.MaxBodyBytes = 64 << 10
	e.start(cfg)
	url := e.ingress.URL

	// binaryAt builds a binary-mode request; extra headers with value ""
	// are removed, the "CE-" key is set verbatim.
	binaryAt := func(path string, extra map[string]string, body string) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
			r.Header.Set("Ce-Specversion", "1.0")
			r.Header.Set("Ce-Id", "1")
			r.Header.Set("Ce-Source", "/test")
			r.Header.Set("Ce-Type", "t")
			r.Header.Set("Content-Type", "application/json")
			for k, v := range extra {
				switch {
				case k == "CE-":
					r.Header[k] = []string{v} // not canonical on purpose
				case v == "":
					r.Header.Del(k)
				default:
					r.Header.Set(k, v)
				}
			}
			return r
		}
	}
	binary := func(extra map[string]string, body string) func() *http.Request {
		return binaryAt("/saga/default", extra, body)
	}
	raw := func(method, path, contentType, body string) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest(method, url+path, strings.NewReader(body))
			if contentType != "" {
				r.Header.Set("Content-Type", contentType)
			}
			return r
		}
	}
	structured := func(body string) func() *http.Request {
		return raw(http.MethodPost, "/saga/default", "application/cloudevents+json", body)
	}
	big := strings.Repeat("x", 64<<10+1)
	chunked := func() *http.Request {
		r := binary(nil, "")()
		r.Body = io.NopCloser(strings.NewReader(`"` + big + `"`))
		r.ContentLength = -1 // no Content-Length: the limit must hold while reading
		return r
	}

	cases := []struct {
		name string
		req  func() *http.Request
		want int
		body string // for a refusal: what its body must say
	}{
		{"OPTIONS is 200", raw(http.MethodOptions, "/saga/default", "", ""), 200, ""},
		{"OPTIONS on any path is 200", raw(http.MethodOptions, "/", "", ""), 200, ""},
		{"GET is 405", raw(http.MethodGet, "/saga/default", "", ""), 405, "method GET not allowed"},
		{"PUT is 405", raw(http.MethodPut, "/saga/default", "", ""), 405, "method PUT not allowed"},
		{"root is 404", binaryAt("/", nil, "{}"), 404, "POST CloudEvents to /<namespace>/<broker>"},
		{"one segment is 400", binaryAt("/saga", nil, "{}"), 400, "want /<namespace>/<broker>"},
		{"four segments is 400", binaryAt("/saga/default/x", nil, "{}"), 400, "want /<namespace>/<broker>"},
		{"unknown broker is 404", binaryAt("/saga/nope", nil, "{}"), 404, "no broker saga/nope"},
		{"unknown namespace is 404", binaryAt("/other/default", nil, "{}"), 404, "no broker other/default"},
		{"query string stays in the name: 404", binaryAt("/saga/default?x=1", nil, "{}"), 404, "no broker saga/default?x=1"},
		{"trailing slash is trimmed", binaryAt("/saga/default/", nil, "{}"), 202, ""},
		{"binary mode is 202", binary(nil, `{"a":1}`), 202, ""},
		{"binary mode without data is 202", binary(map[string]string{"Content-Type": ""}, ""), 202, ""},
		{"structured mode is 202", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}`), 202, ""},
		{"structured data_base64 is 202", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"aGVsbG8="}`), 202, ""},
		{"specversion 0.3 is 202", binary(map[string]string{"Ce-Specversion": "0.3"}, "{}"), 202, ""},
		{"not a CloudEvent is 400", raw(http.MethodPost, "/saga/default", "application/json", `{"a":1}`), 400, "not a CloudEvent: want binary mode"},
		{"no body, no headers is 400", raw(http.MethodPost, "/saga/default", "", ""), 400, "not a CloudEvent"},
		{"missing id is 400", binary(map[string]string{"Ce-Id": ""}, "{}"), 400, "id: MUST be a non-empty string"},
		{"missing source is 400", binary(map[string]string{"Ce-Source": ""}, "{}"), 400, "source: REQUIRED"},
		{"missing type is 400", binary(map[string]string{"Ce-Type": ""}, "{}"), 400, "type: MUST be a non-empty string"},
		{"relative dataschema is 400", binary(map[string]string{"Ce-Dataschema": "rel/x"}, "{}"), 400, "dataschema"},
		{"unknown specversion is 400", binary(map[string]string{"Ce-Specversion": "9.9"}, "{}"), 400, "specversion"},
		{"structured without id is 400", structured(`{"specversion":"1.0","source":"/s","type":"t"}`), 400, "id"},
		{"structured garbage is 400", structured(`{"specversion":`), 400, "malformed CloudEvent"},
		// The JSON format forbids data + data_base64, but sdk-go (and so
		// Knative's ingress) accepts it; the dev broker matches Knative.
		{"structured data and data_base64 is 202 as in Knative", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"aGVsbG8="}`), 202, ""},
		{"batch mode is 400", raw(http.MethodPost, "/saga/default", "application/cloudevents-batch+json",
			`[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`), 400, "batched CloudEvents are not supported"},
		{"header named CE- is 400, no panic", binary(map[string]string{"CE-": "x"}, "{}"), 400, "malformed CloudEvent"}, // sdk-go panics
		{"invalid data_base64 is 400", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!!"}`), 400, "malformed CloudEvent"},
		// sdk-go v2.16.2 panics on this one too; the ingress recovers.
		{"numeric data_base64 is 400, no panic", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":5}`), 400, "malformed CloudEvent"},
		{"TTL 0 is 400", binary(map[string]string{"Ce-Knativebrokerttl": "0"}, "{}"), 400, "knativebrokerttl is 0"},
		{"TTL 1 is 400 (decremented to 0)", binary(map[string]string{"Ce-Knativebrokerttl": "1"}, "{}"), 400, "knativebrokerttl is 0"},
		{"TTL -5 is 400", binary(map[string]string{"Ce-Knativebrokerttl": "-5"}, "{}"), 400, "knativebrokerttl is"},
		{"TTL 2 is 202", binary(map[string]string{"Ce-Knativebrokerttl": "2"}, "{}"), 202, ""},
		{"non-integer TTL is defaulted: 202", binary(map[string]string{"Ce-Knativebrokerttl": "abc"}, "{}"), 202, ""},
		{"body over the limit is 413", binary(nil, `"`+big+`"`), 413, "exceeds the 65536 byte limit"},
		{"chunked body over the limit is 413", chunked, 413, "exceeds the 65536 byte limit"},
		{"body at the limit is 202", binary(nil, `"`+big[:64<<10-2]+`"`), 202, ""},
		// Invalid UTF-8 is refused wherever a string attribute can carry it.
		// A percent-encoded sequence is text to sdk-go and Knative: stored.
		{"percent-encoded correlationid is text: 202", binary(map[string]string{"Ce-Correlationid": "%C0%A0"}, "{}"), 202, ""},
		{"invalid UTF-8 correlationid is 400", binary(map[string]string{"Ce-Correlationid": "\xc0\xa0"}, "{}"), 400, "extension correlationid is not valid UTF-8"},
		{"invalid UTF-8 id is 400", binary(map[string]string{"Ce-Id": "\xff"}, "{}"), 400, "attribute id is not valid UTF-8"},
		{"invalid UTF-8 type is 400", binary(map[string]string{"Ce-Type": "t\xfe"}, "{}"), 400, "attribute type is not valid UTF-8"},
		{"invalid UTF-8 subject is 400", binary(map[string]string{"Ce-Subject": "\xc3"}, "{}"), 400, "attribute subject is not valid UTF-8"},
		{"structured invalid UTF-8 extension is 400", structured("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"correlationid\":\"\xc0\xa0\"}"), 400, "extension correlationid is not valid UTF-8"},
		{"structured invalid UTF-8 id is 400", structured("{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"/s\",\"type\":\"t\"}"), 400, "attribute id is not valid UTF-8"},
		// JSON's \ud800 is decoded to U+FFFD, which is valid.
		{"structured lone surrogate escape is 202", structured(`{"specversion":"1.0","id":"1","source":"/s","type":"t","correlationid":"\ud800"}`), 202, ""},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, body)
			}
			if tc.want >= 400 && (len(body) == 0 || !strings.Contains(string(body), tc.body)) {
				t.Errorf("body %q, want one that says why (%q)", body, tc.body)
			}
			if got := resp.Header.Get("Allow"); got != "POST, OPTIONS" {
				t.Errorf("Allow = %q, want %q", got, "POST, OPTIONS")
			}
			if req.Method == http.MethodOptions {
				for _, h := range []string{"WebHook-Allowed-Origin", "WebHook-Allowed-Rate"} {
					if got := resp.Header.Get(h); got != "*" {
						t.Errorf("%s = %q, want *", h, got)
					}
				}
			}
		})
	}
	// Every 202 above was stored; with no triggers they are all acknowledged.
	e.waitIdle()
}

// TestIngressStoresBeforeAccepting: 202 means "in Redis"; with
// Redis down the ingress answers 503 (retryable), and both the ingress and
// the dispatcher recover when Redis comes back (here empty: no persistence).
func TestIngressStoresBeforeAccepting(t *testing.T) {
	e := newEnv(t)
	e.run(brokers(nil), trigger("sub"))
	first := newEvent("t")
	e.send(first)
	e.sink.wait(t, "/sub", 1) // the dispatcher is in its read loop now

	e.redis.Stop()
	if code := e.post("/saga/default", newEvent("t"), false, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("with Redis down: %d, want 503", code)
	}
	if n := e.obs.get("rejected//503"); n != 1 {
		t.Errorf("rejected/503 counted %d times, want 1", n)
	}
	e.redis.Restart() // no persistence: the stream and group are gone too

	ev := newEvent("t")
	deadline := time.Now().Add(waitFor)
	for code := 0; code != http.StatusAccepted; {
		if time.Now().After(deadline) {
			t.Fatalf("ingress never recovered, last status %d", code)
		}
		code = e.post("/saga/default", ev, false, nil)
	}
	// The dispatcher rides out the broken connection, notices that the
	// consumer group is gone (NOGROUP), recreates it and delivers.
	got := e.sink.wait(t, "/sub", 2)
	if got[1].Event.ID() != ev.ID() {
		t.Fatalf("delivered %s, want %s", got[1].Event.ID(), ev.ID())
	}
}
