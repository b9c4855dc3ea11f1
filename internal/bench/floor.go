package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"
)

// The floor: what this machine can do for the same hops without saga
// logic, measured inside ksaga so that it runs in the same process layout
// and the same Redis as the saga (docs/benchmarks/README.md):
//
//	reply:   sdk-go cloudevents.NewHTTP(WithListener) + NewClient(WithTimeNow,
//	         WithUUIDs) + StartReceiver, replying with a new binary-mode
//	         event with a JSON body;
//	evalsha: the same, plus one go-redis EvalSha of floorTransition per
//	         event (default pool size) on key floor:{<subject>}.
//
// `ksaga bench-floor-server` (hidden) runs one; the bench drives it with its
// own closed-loop load generator (binary-mode CE POSTs with Ce-Specversion,
// Id, Source, Type, Subject and a JSON body the size of a saga event).

// floorTransition is the floor's saga transition: read a state, write two
// fields, bump a version (3 redis calls).
const floorTransition = `local cur = redis.call('HGET', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'step', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'ver', 1)`

// FloorServerCommand is the hidden `ksaga bench-floor-server`: it prints
// "listening <addr>" once it accepts connections, then serves until
// SIGINT/SIGTERM.
func FloorServerCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ksaga bench-floor-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "reply", "reply, or evalsha (one EVALSHA per event)")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	redisURL := fs.String("redis-url", "", "Redis for --mode evalsha")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mode != "reply" && *mode != "evalsha" {
		return fmt.Errorf("bench-floor-server: --mode %q: want reply or evalsha", *mode)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rdb *redis.Client
	var sha string
	if *mode == "evalsha" {
		opt, err := redis.ParseURL(*redisURL)
		if err != nil {
			return fmt.Errorf("bench-floor-server: --redis-url: %w", err)
		}
		rdb = redis.NewClient(opt)
		defer func() { _ = rdb.Close() }()
		if sha, err = rdb.ScriptLoad(ctx, floorTransition).Result(); err != nil {
			return fmt.Errorf("bench-floor-server: SCRIPT LOAD: %w", err)
		}
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	p, err := cloudevents.NewHTTP(cloudevents.WithListener(l))
	if err != nil {
		return err
	}
	c, err := cloudevents.NewClient(p, cloudevents.WithTimeNow(), cloudevents.WithUUIDs())
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "listening %s\n", l.Addr()); err != nil {
		return err
	}
	err = c.StartReceiver(ctx, func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
		if rdb != nil {
			if err := rdb.EvalSha(ctx, sha, []string{"floor:{" + e.Subject() + "}"}, "RESERVED", "2").Err(); err != nil {
				return nil, cehttp.NewResult(http.StatusServiceUnavailable, "%v", err)
			}
		}
		r := cloudevents.NewEvent()
		r.SetSource("/ksaga/bench-floor")
		r.SetType("io.ksaga.bench.replied")
		r.SetSubject(e.Subject())
		if err := r.SetData(cloudevents.ApplicationJSON, e.Data()); err != nil {
			return nil, cehttp.NewResult(http.StatusInternalServerError, "%v", err)
		}
		return &r, nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// floorServer is a running bench-floor-server child.
type floorServer struct {
	cmd  *exec.Cmd
	done chan error
	addr string
}

func startFloorServer(ctx context.Context, bin, mode, redisURL string) (*floorServer, error) {
	cmd := exec.Command(bin, "bench-floor-server", "--mode", mode, "--addr", "127.0.0.1:0", "--redis-url", redisURL)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bench-floor-server: %w", err)
	}
	s := &floorServer{cmd: cmd, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { s.done <- cmd.Wait() }()
	select {
	case line := <-lines:
		a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
		if !ok {
			s.stop()
			return nil, fmt.Errorf("bench-floor-server --mode %s: %q %s", mode, line, stderr.String())
		}
		s.addr = a
		return s, nil
	case <-time.After(10 * time.Second):
		s.stop()
		return nil, fmt.Errorf("bench-floor-server --mode %s did not start: %s", mode, stderr.String())
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

func (s *floorServer) pid() int { return s.cmd.Process.Pid }

func (s *floorServer) stop() {
	if s.done == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	// The exit status of a stopped process is of no interest.
	select {
	case err := <-s.done:
		_ = err
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		err := <-s.done
		_ = err
	}
	s.done = nil
}

// floorRun is the outcome of a closed-loop floor run.
type floorRun struct {
	ended   int64 // responses that ended in the window
	samples []time.Duration
	errors  int64
	firstEr string
	window  float64 // seconds
}

// floorLoad drives url with inflight closed-loop workers, each POSTing a
// binary-mode CloudEvent with body (the size of a saga's event) and
// reading the reply, for warmup + dur.
func floorLoad(ctx context.Context, url string, body []byte, inflight int, warmup, dur time.Duration, seed uint64, mark window) floorRun {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 90 * time.Second, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	var (
		ws, we   atomic.Int64
		stopped  atomic.Bool
		ended    atomic.Int64
		errs     atomic.Int64
		mu       sync.Mutex
		samples  []time.Duration
		firstErr string
		seq      atomic.Int64
	)
	var wg sync.WaitGroup
	for i := range inflight {
		rng := rand.New(rand.NewPCG(seed, uint64(i)+7))
		wg.Go(func() {
			var local []time.Duration
			for !stopped.Load() && ctx.Err() == nil {
				id := strconv.FormatInt(seq.Add(1), 10)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				h := req.Header
				h["Ce-Specversion"] = []string{"1.0"}
				h["Ce-Id"] = []string{id}
				h["Ce-Source"] = []string{"/ksaga/bench"}
				h["Ce-Type"] = []string{"io.ksaga.bench.step"}
				h["Ce-Subject"] = []string{strconv.Itoa(rng.IntN(100000))}
				h["Content-Type"] = []string{"application/json"}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("floor server answered %s", resp.Status)
					}
				}
				t1 := time.Now()
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					sleepCtx(ctx, 10*time.Millisecond)
					continue
				}
				s, e, n0, n1 := ws.Load(), we.Load(), t0.UnixNano(), t1.UnixNano()
				if s != 0 && n1 >= s && (e == 0 || n1 < e) {
					ended.Add(1)
				}
				if s != 0 && n0 >= s && (e == 0 || n0 < e) {
					local = append(local, t1.Sub(t0))
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		})
	}
	sleepCtx(ctx, warmup)
	if mark != nil {
		mark(true)
	}
	ws.Store(time.Now().UnixNano())
	sleepCtx(ctx, dur)
	we.Store(time.Now().UnixNano())
	if mark != nil {
		mark(false)
	}
	stopped.Store(true)
	wg.Wait()
	return floorRun{ended: ended.Load(), samples: samples, errors: errs.Load(), firstEr: firstErr,
		window: float64(we.Load()-ws.Load()) / 1e9}
}
