package devbroker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"

	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/testredis"
)

// BenchmarkSaga runs N=4-step sagas through the broker, like the
// prototype the targets of `make bench` were checked against
// (docs/benchmarks/README.md): the saga start is POSTed to the ingress, each step (a sdk-go
// receiver) replies with the next type, and the completion event is
// delivered to a final net/http sink. One saga = 1 ingress request + 5
// deliveries (4 steps + completion). Goroutines carry pprof labels
// (role=broker, ingress, fn, sink, load), so a CPU profile splits the
// process CPU between the broker and the sdk-go functions:
//
//	go test -c -o /tmp/devbroker.test ./internal/devbroker/
//	/tmp/devbroker.test -test.run '^$' -test.bench 'Saga/inflight=32' -test.benchtime 10000x -test.cpuprofile /tmp/cpu.prof
//	go tool pprof -tags /tmp/devbroker.test /tmp/cpu.prof
func BenchmarkSaga(b *testing.B) {
	for _, c := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("inflight=%d", c), func(b *testing.B) { benchSaga(b, c) })
	}
}

func benchSaga(b *testing.B, inflight int) {
	rs := testredis.Start(b)
	rdb := rs.Client(b)

	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	// Steps are sdk-go receivers (client.StartReceiver, as in func-go)
	// replying with the next event, like the bench's plain floor receiver
	// (internal/bench). The completion sink is plain net/http.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	types4 := []string{"saga.step1", "saga.step2", "saga.step3", "saga.step4", "saga.completed"}
	services := map[types.NamespacedName]*apis.URL{}
	var triggers []*eventingv1.Trigger
	for i := range 4 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		p, err := cloudevents.NewHTTP(cloudevents.WithListener(l), cehttp.WithShutdownTimeout(50*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		c, err := cloudevents.NewClient(p)
		if err != nil {
			b.Fatal(err)
		}
		next := types4[i+1]
		stopped := make(chan struct{})
		go pprof.Do(ctx, pprof.Labels("role", "fn"), func(ctx context.Context) {
			defer close(stopped)
			_ = c.StartReceiver(ctx, func(ev cloudevents.Event) *cloudevents.Event {
				out := cloudevents.NewEvent()
				out.SetID(ev.ID() + "+")
				out.SetSource("/bench")
				out.SetType(next)
				out.SetExtension("sagaid", ev.Extensions()["sagaid"])
				_ = out.SetData(cloudevents.ApplicationJSON, map[string]any{"sagaId": "x", "step": i + 1})
				return &out
			})
		})
		b.Cleanup(func() { cancel(); <-stopped })
		name := "fn" + strconv.Itoa(i)
		u, _ := apis.ParseURL("http://" + l.Addr().String())
		services[types.NamespacedName{Namespace: ns, Name: name}] = u
		triggers = append(triggers, trigger(name, onType(types4[i])))
	}
	completion := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get("Ce-Sagaid")
		mu.Lock()
		ch := waiting[id]
		delete(waiting, id)
		mu.Unlock()
		if ch != nil {
			close(ch)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	pprof.Do(ctx, pprof.Labels("role", "sink"), func(context.Context) { completion.Start() })
	b.Cleanup(completion.Close)
	cu, _ := apis.ParseURL(completion.URL)
	services[types.NamespacedName{Namespace: ns, Name: "done"}] = cu
	triggers = append(triggers, trigger("done", onType(types4[4])))

	var ingress *httptest.Server
	ingressURL := func(namespace, name string) *apis.URL {
		u, _ := apis.ParseURL(ingress.URL + "/" + namespace + "/" + name)
		return u
	}
	broker, err := devbroker.New(devbroker.Config{
		Redis:    rdb,
		Brokers:  brokers(delivery(10, "exponential", "PT0.2S", "")),
		Triggers: triggers,
		Resolve:  devbroker.DefaultResolver(services, func(ns, n string) *apis.URL { return ingressURL(ns, n) }),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	ingress = httptest.NewUnstartedServer(broker)
	pprof.Do(ctx, pprof.Labels("role", "ingress"), func(context.Context) { ingress.Start() })
	b.Cleanup(ingress.Close)
	runCtx, stopRun := context.WithCancel(context.Background())
	done := make(chan error)
	go pprof.Do(runCtx, pprof.Labels("role", "broker"), func(ctx context.Context) { done <- broker.Run(ctx) })
	b.Cleanup(func() { stopRun(); <-done })

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inflight + 1}}
	start := func(i int) chan struct{} {
		id := "s" + strconv.Itoa(i)
		ch := make(chan struct{})
		mu.Lock()
		waiting[id] = ch
		mu.Unlock()
		req, _ := http.NewRequest(http.MethodPost, ingress.URL+"/saga/default", strings.NewReader(`{"sagaId":"x"}`))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Source", "/bench")
		req.Header.Set("Ce-Type", "saga.step1")
		req.Header.Set("Ce-Sagaid", id)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Errorf("ingress %d", resp.StatusCode)
			return nil
		}
		return ch
	}
	// Warm up connections.
	for i := range 50 {
		if ch := start(-1 - i); ch != nil {
			<-ch
		}
	}

	redisPid := findRedisPid(rs.Addr())
	cpu0, rcpu0 := processCPU(), pidCPU(redisPid)
	var lat []time.Duration
	var latMu sync.Mutex
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range inflight {
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("role", "load")))
			for i := range next {
				s := time.Now()
				if ch := start(i); ch != nil {
					<-ch
				}
				latMu.Lock()
				lat = append(lat, time.Since(s))
				latMu.Unlock()
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	cpu, rcpu := processCPU()-cpu0, pidCPU(redisPid)-rcpu0
	hops := float64(b.N * 5)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(float64(cpu.Microseconds())/hops, "proc-cpu-µs/hop")
	b.ReportMetric(float64(rcpu.Microseconds())/hops, "redis-cpu-µs/hop")
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU reads utime+stime of a process from /proc (clock ticks of 10ms).
func pidCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func findRedisPid(addr string) int {
	_, port, _ := strings.Cut(addr, ":")
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		// redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
		if strings.HasPrefix(args[0], "redis-server") && (strings.HasSuffix(args[0], ":"+port) || slices.Contains(args, port)) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			return pid
		}
	}
	return 0
}
