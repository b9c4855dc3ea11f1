package dev

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests of replicas and autoscaling run real processes: this test
// binary, started again with testFnEnv set, is a small function (testFn)
// instead of running the tests.

const testFnEnv = "KSAGA_DEV_TEST_FUNCTION"

func TestMain(m *testing.M) {
	if os.Getenv(testFnEnv) != "" {
		os.Exit(testFn())
	}
	os.Exit(m.Run())
}

// testFnReply is what testFn answers on /work.
type testFnReply struct {
	PID      int `json:"pid"`
	Port     int `json:"port"`
	InFlight int `json:"in_flight"` // requests in flight in this process when this one started, itself included
}

// testFn serves, on LISTEN_ADDRESS:
//
//   - GET /readyz: 200, or 503 "redis down" while the file named by
//     TESTFN_NOT_READY exists;
//   - /work?ms=N: sleeps N ms (default TESTFN_SLEEP_MS), answers testFnReply;
//
// and drains on SIGTERM, like a knfunc function.
func testFn() int {
	var inflight atomic.Int32
	sleep, _ := strconv.Atoi(os.Getenv("TESTFN_SLEEP_MS"))
	port, _ := strconv.Atoi(os.Getenv("PORT"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p := os.Getenv("TESTFN_NOT_READY"); p != "" {
			if _, err := os.Stat(p); err == nil {
				http.Error(w, "redis down", http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		ms := sleep
		if v := r.URL.Query().Get("ms"); v != "" {
			ms, _ = strconv.Atoi(v)
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		_ = json.NewEncoder(w).Encode(testFnReply{PID: os.Getpid(), Port: port, InFlight: int(n)})
	})
	ln, err := net.Listen("tcp", os.Getenv("LISTEN_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Println("listening")
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
