package devbroker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// connPool posts deliveries to plain-HTTP subscribers over HTTP/1.1
// keep-alive connections, writing the request and reading the response on
// the delivering goroutine. net/http's Transport runs a read loop and a
// write loop per connection and hands every request and response between
// three goroutines; on this workload that cost about 20 µs of CPU per
// delivery (BenchmarkSubscriberPost). The request is written by
// http.Request.Write and the response parsed by http.ReadResponse, so the
// wire format is the standard library's. Other schemes (https) use the
// broker's http.Client.
type connPool struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per host
	idleTimeout time.Duration // an idle connection older than this is closed, not reused
	maxBody     int64         // response bodies are read up to maxBody+1 bytes

	mu   sync.Mutex
	idle map[string][]*pconn // by host:port, most recently used last
}

type pconn struct {
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	used time.Time
}

// errStaleConn marks a failure on a connection the subscriber had closed.
var errStaleConn = errors.New("devbroker: idle connection closed by the subscriber")

func newConnPool(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, maxBody int64) *connPool {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	return &connPool{dial: dial, maxIdle: maxIdle, idleTimeout: 60 * time.Second, maxBody: maxBody, idle: map[string][]*pconn{}}
}

// post sends one POST for u to addr (host:port) and returns the response
// with its body read into memory (at most maxBody+1 bytes). A request that fails on a reused
// connection before any byte of a response arrived is sent once more on a
// new connection: the subscriber closed the idle connection, so it did not
// process the request (and if it did, at-least-once delivery allows the
// duplicate).
func (p *connPool) post(ctx context.Context, addr string, u *url.URL, header http.Header, body []byte) (*http.Response, error) {
	for try := 0; ; try++ {
		pc, reused, err := p.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		req := &http.Request{Method: http.MethodPost, URL: u, Host: u.Host, Header: header,
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		resp, keep, err := p.roundTrip(ctx, pc, req)
		if err != nil {
			_ = pc.c.Close()
			if reused && try == 0 && errors.Is(err, errStaleConn) && ctx.Err() == nil {
				continue
			}
			return nil, err
		}
		if keep {
			p.put(addr, pc)
		} else {
			_ = pc.c.Close()
		}
		return resp, nil
	}
}

func (p *connPool) roundTrip(ctx context.Context, pc *pconn, req *http.Request) (resp *http.Response, keep bool, err error) {
	// The attempt's timeout, or shutdown after the drain timeout, interrupts
	// the I/O (connections in the pool never carry a deadline: one whose
	// deadline was moved is not put back).
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			keep = false
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
	}()

	if err := req.Write(pc.w); err != nil {
		return nil, false, staleIf(err)
	}
	if err := pc.w.Flush(); err != nil {
		return nil, false, staleIf(err)
	}
	if _, err := pc.r.Peek(1); err != nil {
		return nil, false, staleIf(err)
	}
	for {
		resp, err = http.ReadResponse(pc.r, req)
		if err != nil {
			return nil, false, err
		}
		// Informational answers (a subscriber may send 103 Early Hints)
		// precede the real one.
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	// A body within the limit was read to its end (the limit was not what
	// stopped ReadAll), so the connection is clean for the next request; a
	// larger one is cut at maxBody+1 bytes, which the caller rejects (413),
	// and the connection is closed.
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, p.maxBody+1))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if rerr != nil {
		return nil, false, fmt.Errorf("read response body: %w", rerr)
	}
	return resp, int64(len(b)) <= p.maxBody && !resp.Close, nil
}

// staleIf marks the errors a subscriber's closing of an idle connection
// produces before any byte of a response was read.
func staleIf(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %w", errStaleConn, err)
	}
	return err
}

func (p *connPool) get(ctx context.Context, addr string) (*pconn, bool, error) {
	now := time.Now()
	p.mu.Lock()
	for conns := p.idle[addr]; len(conns) > 0; conns = p.idle[addr] {
		pc := conns[len(conns)-1]
		p.idle[addr] = conns[:len(conns)-1]
		if now.Sub(pc.used) < p.idleTimeout {
			p.mu.Unlock()
			return pc, true, nil
		}
		_ = pc.c.Close()
	}
	p.mu.Unlock()
	c, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &pconn{c: c, r: bufio.NewReaderSize(c, 4096), w: bufio.NewWriterSize(c, 4096)}, false, nil
}

func (p *connPool) put(addr string, pc *pconn) {
	pc.used = time.Now()
	p.mu.Lock()
	if len(p.idle[addr]) < p.maxIdle {
		p.idle[addr] = append(p.idle[addr], pc)
		pc = nil
	}
	p.mu.Unlock()
	if pc != nil {
		_ = pc.c.Close()
	}
}

// closeIdle closes every idle connection.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, conns := range p.idle {
		for _, pc := range conns {
			_ = pc.c.Close()
		}
		delete(p.idle, addr)
	}
}

// hostPort is u's host:port, with the scheme's default port.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
