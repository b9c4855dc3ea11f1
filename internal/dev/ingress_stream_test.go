package dev

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpcFunction runs a real gRPC server (grpc-go, with the reflection
// service and a test service) as the one replica of an h2c function.
func grpcFunction(t *testing.T, name string) *function {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	reflection.Register(gs)
	gs.RegisterService(&countDesc, nil)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	f := stand(name, true, 5*time.Second)
	f.pool.Add(ln.Addr().String())
	return f
}

// countDesc is a test service: Count streams in.Value numbers and ends;
// Early answers the first message of a bidi stream with an error and a
// trailer, without waiting for the client to finish sending.
var countDesc = grpc.ServiceDesc{
	ServiceName: "test.Counter",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			var in wrapperspb.Int32Value
			if err := s.RecvMsg(&in); err != nil {
				return err
			}
			for i := range in.Value {
				if err := s.SendMsg(wrapperspb.Int32(i)); err != nil {
					return err
				}
			}
			s.SetTrailer(metadata.Pairs("x-counted", strconv.Itoa(int(in.Value))))
			return nil
		}},
		{StreamName: "Early", ServerStreams: true, ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			var in wrapperspb.Int32Value
			if err := s.RecvMsg(&in); err != nil {
				return err
			}
			s.SetTrailer(metadata.Pairs("x-early", "yes"))
			return status.Error(codes.FailedPrecondition, "ended before the client")
		}},
	},
}

// grpcClient dials the ingress for a service (grpcurl's -authority).
func grpcClient(t *testing.T, ingressURL, service string) *grpc.ClientConn {
	t.Helper()
	u := strings.TrimPrefix(ingressURL, "http://")
	_, port, _ := net.SplitHostPort(u)
	cc, err := grpc.NewClient(u, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(service+".saga.localhost:"+port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// TestIngressGRPCStreams: gRPC streams through the ingress end as they end
// straight to the function: reflection (grpcurl list: a bidi stream the
// client keeps open until it has its answer), a server stream with its
// trailers, a bidi stream the server ends first, and a function that
// answers HTTP 404 to a stream it does not serve (connect-go's functions
// without reflection). The last two hung before: the proxy waited for the
// rest of a request body nobody would read. A deadline far above any
// answer only keeps a regression from hanging the test.
func TestIngressGRPCStreams(t *testing.T) {
	users := grpcFunction(t, "users")
	plain := serve(t, "plain", true, http.NotFoundHandler())
	srv := serveIngress(t, newIngress(slog.New(slog.DiscardHandler), []*function{users, plain}, http.NotFoundHandler(), func(io.Writer) {}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("reflection list", func(t *testing.T) {
		st, err := rpb.NewServerReflectionClient(grpcClient(t, srv.URL, "users")).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !strings.Contains(strings.Join(names, " "), "test.Counter") {
			t.Errorf("services %v", names)
		}
		_ = st.CloseSend()
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("after CloseSend: %v, want io.EOF", err)
		}
	})
	t.Run("server stream with trailers", func(t *testing.T) {
		s, err := grpcClient(t, srv.URL, "users").NewStream(ctx, &countDesc.Streams[0], "/test.Counter/Count")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(wrapperspb.Int32(3)); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseSend()
		var got []int32
		for {
			var v wrapperspb.Int32Value
			err := s.RecvMsg(&v)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, v.Value)
		}
		if fmt.Sprint(got) != "[0 1 2]" || s.Trailer().Get("x-counted")[0] != "3" {
			t.Errorf("got %v, trailer %v", got, s.Trailer())
		}
	})
	t.Run("bidi stream the server ends first", func(t *testing.T) {
		s, err := grpcClient(t, srv.URL, "users").NewStream(ctx, &countDesc.Streams[1], "/test.Counter/Early")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(wrapperspb.Int32(1)); err != nil {
			t.Fatal(err)
		}
		var v wrapperspb.Int32Value
		err = s.RecvMsg(&v) // no CloseSend: the client would go on sending
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ended before the client") {
			t.Errorf("err = %v, want the server's FailedPrecondition", err)
		}
		if got := s.Trailer().Get("x-early"); len(got) != 1 || got[0] != "yes" {
			t.Errorf("trailer %v", s.Trailer())
		}
	})
	t.Run("a 404 to an open stream", func(t *testing.T) {
		st, err := rpb.NewServerReflectionClient(grpcClient(t, srv.URL, "plain")).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The 404 may end the stream before the message is sent: grpc-go's
		// Send then says io.EOF, and Recv has the status.
		if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.Unimplemented {
			t.Errorf("err = %v, want Unimplemented (HTTP 404)", err)
		}
	})
}

// slowRequest sends headers announcing a body of size bytes, then one byte
// every gap, until the server answers or closes. It returns how many body
// bytes it sent and the status line it read ("" if the connection was
// closed without one).
func slowRequest(addr, host string, size int, gap time.Duration) (sent int, statusLine string, err error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = c.Close() }()
	if _, err := fmt.Fprintf(c, "POST /saga/default HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", host, size); err != nil {
		return 0, "", err
	}
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	for sent < size {
		select {
		case line := <-answered:
			return sent, line, nil
		case <-time.After(gap):
		}
		if _, err := c.Write([]byte("x")); err != nil {
			return sent, <-answered, nil // closed by the server
		}
		sent++
	}
	return sent, <-answered, nil
}

// TestIngressSlowBodies: a body that trickles in is cut at the body
// timeout, on the broker ingress and on a service route alike, for many
// connections at once; the connection is answered 408 (or 400 by a handler
// that reads the body itself) and closed. Streams keep working: a gRPC
// body may take longer, and a long response (server-sent events, after a
// GET or after a body read to its end) is not cut.
func TestIngressSlowBodies(t *testing.T) {
	reader := func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		switch {
		case errors.Is(err, errBodyTimeout):
			http.Error(w, err.Error(), http.StatusRequestTimeout)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			fmt.Fprintf(w, "read %d bytes", len(b))
		}
	}
	events := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 6 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}
	fn := serve(t, "slow", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			events(w, r)
			return
		}
		reader(w, r)
	}))
	in := newIngress(slog.New(slog.DiscardHandler), []*function{fn}, http.HandlerFunc(reader), func(io.Writer) {})
	in.bodyTimeout = 300 * time.Millisecond
	srv := serveIngress(t, in)
	addr := strings.TrimPrefix(srv.URL, "http://")

	const conns, size = 200, 100 // 100 bytes at one per 100 ms: 10 s if never cut
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	for i := range conns {
		host := "localhost"
		if i%2 == 1 {
			host = "slow.saga.localhost"
		}
		wg.Go(func() {
			sent, line, err := slowRequest(addr, host, size, 100*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				results["error: "+err.Error()]++
			case sent >= size:
				results["whole body sent"]++
			default:
				results[host+" "+line]++
			}
		})
	}
	wg.Wait()
	want := map[string]int{"localhost HTTP/1.1 408 Request Timeout": conns / 2, "slow.saga.localhost HTTP/1.1 408 Request Timeout": conns / 2}
	if fmt.Sprint(results) != fmt.Sprint(want) {
		t.Errorf("slow bodies: %v, want %v", results, want)
	}

	// The same over h2c: the stream is answered 408, the connection stays.
	h2 := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}
	for _, host := range []string{"localhost", "slow.saga.localhost"} {
		pr, pw := io.Pipe()
		stop := make(chan struct{})
		go func() {
			defer func() { _ = pw.Close() }()
			for range size {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := pw.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/saga/default", pr)
		req.Host, req.ContentLength = host, size
		code, _ := roundTrip(t, h2, req)
		close(stop)
		if code != http.StatusRequestTimeout {
			t.Errorf("h2c slow body to %s: %d, want 408", host, code)
		}
	}

	// A gRPC body may take longer than the body timeout.
	pr, pw := io.Pipe()
	go func() {
		for range 5 {
			time.Sleep(100 * time.Millisecond)
			_, _ = pw.Write([]byte("y"))
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/x", pr)
	req.Host = "slow.saga.localhost"
	req.Header.Set("Content-Type", "application/grpc")
	if code, body := roundTrip(t, http.DefaultClient, req); code != 200 || body != "read 5 bytes" {
		t.Errorf("slow gRPC body: %d %q", code, body)
	}
	// Long responses are not cut, after a GET or a body read to its end.
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, srv.URL+"/events", strings.NewReader("{}"))
		if method == http.MethodGet {
			req.Body = http.NoBody
		}
		req.Host = "slow.saga.localhost"
		if code, body := roundTrip(t, http.DefaultClient, req); code != 200 || strings.Count(body, "data: ") != 6 {
			t.Errorf("%s server-sent events: %d %q", method, code, body)
		}
	}
}

func roundTrip(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestIngressKeepsConnections: the body deadline is cleared once a body
// has been read, so keep-alive connections are reused request after
// request, on a service route and on the broker ingress.
func TestIngressKeepsConnections(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	srv := serveIngress(t, newIngress(slog.New(slog.DiscardHandler), []*function{serve(t, "echo", false, echo)}, echo, func(io.Writer) {}))
	for _, host := range []string{"echo.saga.localhost", "localhost"} {
		c := &http.Client{Transport: &http.Transport{}}
		reused := 0
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		for i := range 20 {
			body := strings.Repeat("a", 1000*i+1)
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, srv.URL+"/x", strings.NewReader(body))
			req.Host = host
			if code, got := roundTrip(t, c, req); code != 200 || got != body {
				t.Fatalf("%s: %d, %d bytes back", host, code, len(got))
			}
		}
		if reused != 19 {
			t.Errorf("%s: connection reused %d times in 20 requests, want 19", host, reused)
		}
	}
}
