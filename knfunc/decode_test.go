package knfunc_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/saga"
)

type rawRequest struct {
	name    string
	headers map[string]string
	body    string
}

var validBinary = map[string]string{
	"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "/s", "Ce-Type": "io.ksaga.test.echo", "Content-Type": "application/json",
}

func with(h map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for key, val := range h {
		out[key] = val
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// malformed are requests that must each be answered 400.
var malformed = []rawRequest{
	{"binary: missing id", with(validBinary, "Ce-Id", ""), `{}`},
	{"binary: missing source", with(validBinary, "Ce-Source", ""), `{}`},
	{"binary: missing type", with(validBinary, "Ce-Type", ""), `{}`},
	{"binary: missing specversion (not a CloudEvent)", with(validBinary, "Ce-Specversion", ""), `{}`},
	{"binary: unknown specversion", with(validBinary, "Ce-Specversion", "9.9"), `{}`},
	{"structured: bad JSON", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":`},
	{"structured: missing id", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","source":"/s","type":"t"}`},
	{"structured: invalid data_base64", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"%%%not base64"}`},
	{"structured: data and data_base64", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{},"data_base64":"e30="}`},
	{"unknown content type, no ce headers", map[string]string{"Content-Type": "text/x-unknown"}, `hello`},
	{"batch mode", map[string]string{"Content-Type": "application/cloudevents-batch+json"}, `[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`},
	{"a header named just CE-", with(validBinary, "CE-", "x"), `{}`},
	{"a header named CE- only, no others", map[string]string{"CE-": "x", "Ce-Specversion": "1.0"}, `{}`},
	{"empty body, no headers", map[string]string{}, ``},
	{"binary: invalid UTF-8 correlationid", with(validBinary, "Ce-Correlationid", "\xc0\xa0"), `{}`},
	{"binary: invalid UTF-8 id", with(validBinary, "Ce-Id", "\xff"), `{}`},
	{"binary: invalid UTF-8 subject", with(validBinary, "Ce-Subject", "a\xc3"), `{}`},
	{"structured: invalid UTF-8 extension", map[string]string{"Content-Type": "application/cloudevents+json"}, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"correlationid\":\"\xc0\xa0\"}"},
	{"structured: invalid UTF-8 type", map[string]string{"Content-Type": "application/cloudevents+json"}, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\xfe\"}"},
}

// echo replies with an event of its own, so a decodable request gets 200.
var echo = saga.StepFunc(func(_ context.Context, e event.Event) (*event.Event, error) {
	r := event.New()
	r.SetID("reply-" + e.ID())
	r.SetSource("/echo")
	r.SetType("io.ksaga.test.echoed")
	return &r, nil
})

func serve(h http.Handler, rr rawRequest) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(rr.body))
	for k, v := range rr.headers {
		req.Header[k] = []string{v} // raw keys: "CE-" must reach the decoder as is
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestMalformedInputIs400AndServingContinues(t *testing.T) {
	h := knfunc.NewHandler(echo, knfunc.HandlerOptions{})
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(h, tt)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", w.Code, w.Body.String())
			}
			if strings.Contains(tt.name, "UTF-8") && !strings.Contains(w.Body.String(), "is not valid UTF-8") {
				t.Errorf("body %q does not say what is not UTF-8", w.Body.String())
			}
			// and the next valid event is still served
			if w := serve(h, rawRequest{"valid", validBinary, `{}`}); w.Code != http.StatusOK || w.Header().Get("Ce-Id") != "reply-1" {
				t.Fatalf("valid event after a bad one: %d %v", w.Code, w.Header())
			}
		})
	}
}

func TestHTTPSemantics(t *testing.T) {
	h := knfunc.NewHandler(echo, knfunc.HandlerOptions{MaxBodyBytes: 64})
	t.Run("structured mode is decoded too", func(t *testing.T) {
		w := serve(h, rawRequest{"s", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":"7","source":"/s","type":"t"}`})
		if w.Code != 200 || w.Header().Get("Ce-Id") != "reply-7" {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
	})
	t.Run("oversized body is 413", func(t *testing.T) {
		if w := serve(h, rawRequest{"big", validBinary, `"` + strings.Repeat("x", 100) + `"`}); w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", w.Code)
		}
	})
	t.Run("GET is 405 with Allow", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		if w.Code != 405 || w.Header().Get("Allow") != "POST, OPTIONS" {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
	})
	t.Run("error codes follow Knative delivery semantics", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			want int
		}{
			{saga.Invalid("bad"), 400},
			{saga.Transient(context.DeadlineExceeded, "redis"), 503},
			{context.Canceled, 500},
		} {
			h := knfunc.NewHandler(saga.StepFunc(func(context.Context, event.Event) (*event.Event, error) { return nil, tc.err }), knfunc.HandlerOptions{})
			if w := serve(h, rawRequest{"e", validBinary, `{}`}); w.Code != tc.want {
				t.Errorf("%v: status %d, want %d", tc.err, w.Code, tc.want)
			}
		}
	})
	t.Run("a panicking step is a 500, and the handler survives", func(t *testing.T) {
		h := knfunc.NewHandler(saga.StepFunc(func(context.Context, event.Event) (*event.Event, error) { panic("boom") }), knfunc.HandlerOptions{})
		if w := serve(h, rawRequest{"p", validBinary, `{}`}); w.Code != 500 {
			t.Fatalf("status %d", w.Code)
		}
	})
	t.Run("no reply is 200 with an empty body", func(t *testing.T) {
		h := knfunc.NewHandler(saga.StepFunc(func(context.Context, event.Event) (*event.Event, error) { return nil, nil }), knfunc.HandlerOptions{})
		if w := serve(h, rawRequest{"n", validBinary, `{}`}); w.Code != 200 || w.Body.Len() != 0 {
			t.Fatalf("%d %q", w.Code, w.Body.String())
		}
	})
	t.Run("K_CE_OVERRIDES extensions are set on replies", func(t *testing.T) {
		h := knfunc.NewHandler(echo, knfunc.HandlerOptions{Overrides: map[string]string{"team": "payments"}})
		if w := serve(h, rawRequest{"o", validBinary, `{}`}); w.Header().Get("Ce-Team") != "payments" {
			t.Fatalf("headers %v", w.Header())
		}
	})
}

// FuzzDecode feeds arbitrary headers and bodies to the decoding path: it
// must never panic, and must answer 200 (valid) or 400/413 — never 5xx.
func FuzzDecode(f *testing.F) {
	for _, m := range malformed {
		f.Add(m.headers["Content-Type"], m.headers["Ce-Specversion"], m.headers["Ce-Id"], headerName(m.headers), m.body)
	}
	f.Add("application/json", "1.0", "1", "Ce-Source", `{"a":1}`)
	f.Add("application/cloudevents+json", "", "", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"e30"}`)
	f.Add("application/cloudevents+json", "", "", "", `{"specversion":"1.0","id":"1","source":"%C0%A0","type":"t"}`)
	h := knfunc.NewHandler(echo, knfunc.HandlerOptions{MaxBodyBytes: 1 << 16, Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, contentType, specversion, id, extraHeader, body string) {
		headers := map[string]string{"Content-Type": contentType, "Ce-Specversion": specversion, "Ce-Id": id, "Ce-Type": "t"}
		if extraHeader != "" {
			headers[extraHeader] = "v"
		}
		for k, v := range headers {
			if v == "" || !validHeader(k, v) {
				delete(headers, k)
			}
		}
		w := serve(h, rawRequest{"fuzz", headers, body})
		if w.Code != 200 && w.Code != 400 && w.Code != 413 {
			t.Fatalf("status %d for %v %q: %s", w.Code, headers, body, w.Body.String())
		}
	})
}

func headerName(h map[string]string) string {
	for k := range h {
		if strings.HasPrefix(strings.ToUpper(k), "CE-") && len(k) <= 3 {
			return k
		}
	}
	return "Ce-Source"
}

// validHeader keeps what net/http itself could carry.
func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for _, r := range k + v {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return false
		}
	}
	return !strings.ContainsAny(k, " :\t")
}
