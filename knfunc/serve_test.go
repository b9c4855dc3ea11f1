package knfunc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/knfunc"
)

// serveOn runs knfunc.Serve with h and opts on a free port until the test
// ends and returns its address.
func serveOn(t *testing.T, h http.Handler, o knfunc.ServeOptions) string {
	t.Helper()
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o.Logger = slog.New(slog.DiscardHandler)
	o.ShutdownTimeout = time.Second
	o.OnListen = func(a net.Addr) { addr <- a.String() }
	go func() { done <- knfunc.Serve(ctx, "127.0.0.1:0", h, o) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	return ""
}

// trickle writes body to w one byte every interval until it is written or
// stop is closed, then reports how many bytes it wrote. A pipe is closed
// at the end of the body.
func trickle(w io.Writer, body string, interval time.Duration, stop <-chan struct{}) <-chan int {
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		if pw, ok := w.(*io.PipeWriter); ok {
			defer pw.Close()
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n < len(body) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := w.Write([]byte{body[n]}); err != nil {
				return
			}
			n++
		}
	}()
	return sent
}

const slowBodyEvent = `{"pad":"` + "................................................................" + `"}`

// TestSlowBodyIsCutOff (issue 19 A4): a client that sends its headers and
// then trickles its body one byte at a time gets 408 once the body
// deadline passes, long before it has sent the body, over HTTP/1.1.
func TestSlowBodyIsCutOff(t *testing.T) {
	addr := serveOn(t, knfunc.NewHandler(echo, knfunc.HandlerOptions{}), knfunc.ServeOptions{BodyReadTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: fn\r\nCe-Specversion: 1.0\r\nCe-Id: 1\r\nCe-Source: /s\r\nCe-Type: io.ksaga.test.echo\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(slowBodyEvent))
	stop := make(chan struct{})
	sent := trickle(c, slowBodyEvent, 50*time.Millisecond, stop) // 4 s for the whole body
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))           // a hang fails the test instead of blocking it
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	close(stop)
	n := <-sent
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d (%s), want 408", resp.StatusCode, body)
	}
	if n >= len(slowBodyEvent) {
		t.Fatalf("answered only after the whole body (%d bytes) was sent", n)
	}
	// The server does not wait for the rest: it closes the connection
	// (EOF, or a reset when the trickled bytes were still unread).
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after the 408: %v, want the connection closed", err)
	}
}

// TestSlowBodyIsCutOffH2C: the same over HTTP/2 without TLS (a port named
// h2c, as gRPC functions use): the stream is cut off, the connection
// stays usable.
func TestSlowBodyIsCutOffH2C(t *testing.T) {
	addr := serveOn(t, knfunc.NewHandler(echo, knfunc.HandlerOptions{}), knfunc.ServeOptions{BodyReadTimeout: 300 * time.Millisecond, HTTP2: true})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}

	pr, pw := io.Pipe()
	defer pw.Close()
	stop := make(chan struct{})
	sent := trickle(pw, slowBodyEvent, 50*time.Millisecond, stop)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", pr)
	req.Header = http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"io.ksaga.test.echo"}, "Content-Type": {"application/json"}}
	resp, err := client.Do(req)
	close(stop)
	n := <-sent
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("HTTP/%d %d (%s), want HTTP/2 408", resp.ProtoMajor, resp.StatusCode, body)
	}
	if n >= len(slowBodyEvent) {
		t.Fatalf("answered only after the whole body (%d bytes) was sent", n)
	}
	// The next request on the same connection is served.
	req, _ = http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(`{}`))
	req.Header = http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"2"}, "Ce-Source": {"/s"}, "Ce-Type": {"io.ksaga.test.echo"}, "Content-Type": {"application/json"}}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Ce-Id") != "reply-2" {
		t.Fatalf("next request: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestGRPCStreamsHaveNoBodyDeadline: a gRPC or Connect stream's body may
// last as long as the call, as at the ksaga dev ingress; its slow body is
// read to the end.
func TestGRPCStreamsHaveNoBodyDeadline(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			got <- err.Error()
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got <- string(b)
	})
	addr := serveOn(t, h, knfunc.ServeOptions{BodyReadTimeout: 100 * time.Millisecond, HTTP2: true})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	sent := trickle(pw, "stream-messages", 20*time.Millisecond, nil) // 300 ms, thrice the deadline
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/user.v1.UserService/GetUser", pr)
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-sent
	if b := <-got; b != "stream-messages" {
		t.Errorf("the stream's handler read %q, want the whole body", b)
	}
}

// TestBodyDeadlineEndsWithTheBody: once the body has arrived, the handler
// may take longer than the body deadline: its request context is not
// cancelled and its answer is delivered (HTTP/1.1 and h2c).
func TestBodyDeadlineEndsWithTheBody(t *testing.T) {
	const deadline = 200 * time.Millisecond
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(3 * deadline): // the handler's own work, longer than the body deadline
		case <-r.Context().Done():
			http.Error(w, "request context cancelled", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})
	for _, h2 := range []bool{false, true} {
		addr := serveOn(t, slow, knfunc.ServeOptions{BodyReadTimeout: deadline, HTTP2: h2})
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(!h2)
		tr.Protocols.SetUnencryptedHTTP2(h2)
		resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Post("http://"+addr+"/", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != http.StatusOK || string(b) != "hello" {
			t.Errorf("h2c=%v: %d %q, want 200 hello", h2, resp.StatusCode, b)
		}
	}
}
