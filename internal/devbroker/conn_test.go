package devbroker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepted.
func countingServer(t testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConnPoolReusesConnections: sequential posts share one connection,
// concurrent ones at most one each; requests arrive intact (headers,
// body, Host) and responses are read whole, chunked or not.
func TestConnPoolReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Ce-Id", r.Header.Get("Ce-Id"))
		w.Header().Set("X-Host", r.Host)
		if r.URL.Query().Get("chunked") == "1" {
			_, _ = w.Write(body[:3])
			w.(http.Flusher).Flush() // forces chunked encoding
			_, _ = w.Write(body[3:])
			return
		}
		_, _ = w.Write(body)
	})
	p := newConnPool(nil, 16, 1<<20)
	ctx := context.Background()
	for i, q := range []string{"", "?chunked=1", "", "?chunked=1", ""} {
		hdr := http.Header{"Ce-Id": {"id-" + q}}
		resp, err := p.post(ctx, hostPort(mustURL(t, srv.URL+"/path"+q)), mustURL(t, srv.URL+"/path"+q), hdr, []byte("hello world"))
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Ce-Id") != "id-"+q || readAll(t, resp) != "hello world" {
			t.Fatalf("post %d: %d %v", i, resp.StatusCode, resp.Header)
		}
		if got, want := resp.Header.Get("X-Host"), mustURL(t, srv.URL).Host; got != want {
			t.Errorf("Host %q, want %q", got, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 sequential posts used %d connections, want 1", n)
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				resp, err := p.post(ctx, hostPort(mustURL(t, srv.URL)), mustURL(t, srv.URL), nil, []byte("x"))
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("post: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n > 8 {
		t.Errorf("8 concurrent senders used %d connections, want at most 8", n)
	}
}

// TestConnPoolSubscriberClosedIdleConnection: a subscriber that closes a
// keep-alive connection after answering (a restart, an idle timeout) costs
// no failed delivery: the request is sent again on a new connection, once.
func TestConnPoolSubscriberClosedIdleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var requests atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				requests.Add(1)
				// Keep-alive as far as the client can tell, then closed.
				_, _ = io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	p := newConnPool(nil, 16, 1<<20)
	u := mustURL(t, "http://"+ln.Addr().String()+"/")
	for i := range 5 {
		resp, err := p.post(context.Background(), hostPort(u), u, nil, []byte("x"))
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusAccepted || readAll(t, resp) != "ok" {
			t.Fatalf("post %d: %d", i, resp.StatusCode)
		}
	}
	if n := requests.Load(); n != 5 {
		t.Errorf("subscriber got %d requests, want 5", n)
	}
}

// TestConnPoolDoesNotReuse: a response with Connection: close, or a body
// beyond the limit (cut at limit+1 bytes, for the caller's 413), closes
// the connection.
func TestConnPoolDoesNotReuse(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		case "/big":
			_, _ = io.WriteString(w, strings.Repeat("b", 100))
		default:
			_, _ = io.WriteString(w, "small")
		}
	})
	p := newConnPool(nil, 16, 64)
	ctx := context.Background()
	post := func(path string) string {
		resp, err := p.post(ctx, hostPort(mustURL(t, srv.URL+path)), mustURL(t, srv.URL+path), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return readAll(t, resp)
	}
	if got := post("/close"); got != "bye" {
		t.Errorf("/close body %q", got)
	}
	if got := post("/big"); len(got) != 65 {
		t.Errorf("/big body is %d bytes, want the limit+1 = 65", len(got))
	}
	if got := post("/"); got != "small" {
		t.Errorf("/ body %q", got)
	}
	if got := post("/"); got != "small" {
		t.Errorf("/ body %q", got)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("used %d connections, want 3 (close, big, then one reused)", n)
	}
}

// TestConnPoolDeadline: the attempt's context deadline interrupts a slow
// subscriber, and the error says so.
func TestConnPoolDeadline(t *testing.T) {
	release := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	p := newConnPool(nil, 16, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.post(ctx, hostPort(mustURL(t, srv.URL)), mustURL(t, srv.URL), nil, []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v after a 100ms deadline", took)
	}
}

// BenchmarkSubscriberPost compares one delivery POST (the client's and the
// in-process server's CPU together) through connPool and through a
// net/http Transport tuned as the broker tuned it.
func BenchmarkSubscriberPost(b *testing.B) {
	reply := bytes.Repeat([]byte("r"), 300)
	srv, _ := countingServer(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Ce-Id", "1")
		_, _ = w.Write(reply)
	})
	u := mustURL(b, srv.URL)
	hdr := http.Header{}
	for _, k := range []string{"Ce-Id", "Ce-Source", "Ce-Type", "Ce-Specversion", "Ce-Time", "Ce-Correlationid", "Traceparent", "Content-Type", "Prefer"} {
		hdr.Set(k, "value-0123456789")
	}
	body := bytes.Repeat([]byte("e"), 300)
	run := func(b *testing.B, post func(ctx context.Context) (*http.Response, error)) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				resp, err := post(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	b.Run("connPool", func(b *testing.B) {
		p := newConnPool(nil, maxIdleConnsPerHost, 1<<20)
		defer p.closeIdle()
		run(b, func(ctx context.Context) (*http.Response, error) { return p.post(ctx, hostPort(u), u, hdr, body) })
	})
	b.Run("net-http", func(b *testing.B) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = maxIdleConns, maxIdleConnsPerHost
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		run(b, func(ctx context.Context) (*http.Response, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
			req.Header = hdr.Clone()
			return c.Do(req)
		})
	})
}
