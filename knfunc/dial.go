package knfunc

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// Dial connects like net.Dialer, except that "localhost" and every
// "*.localhost" name go to 127.0.0.1 (RFC 6761), which Go's resolver does not
// do by itself. `ksaga dev` addresses services as
// http://<service>.<namespace>.localhost:<port>, like curl and browsers do.
func Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && isLocalhost(host) {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, network, addr)
}

func isLocalhost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// NewHTTPClient returns a client for calling other services: it dials with
// Dial and keeps many idle connections per host (the default of 2 exhausts
// ports under load).
func NewHTTPClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = Dial
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: t, Timeout: timeout}
}
