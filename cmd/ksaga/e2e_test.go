package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ksaga/ksaga/internal/devtest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/proto/user"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
)

// The end-to-end tests build the ksaga binary once, run `ksaga dev` from the
// repository root as a child process (which builds and runs every function)
// and drive it over real HTTP and gRPC, against real redis-servers.

const (
	// sagaTimeout is how long a saga may take to complete.
	sagaTimeout = 60 * time.Second
	// orderData is the reference order: user 1 buys one book.
	orderData = `{"user_id":1,"items":[{"sku":"book","qty":1}]}`
)

func TestMain(m *testing.M) { os.Exit(devtest.Main(m)) }

// devProc is one running `ksaga dev` (internal/devtest), with the helpers
// these tests share.
type devProc struct {
	*devtest.Dev
	t *testing.T
}

// demoData is the demo's users and products, which ksaga dev seeds.
const demoData = "deploy/demo/seed.redis"

// startDev runs `ksaga dev --seed deploy/demo/seed.redis args...` from the
// repository root and waits until its ingress answers GET /readyz; at
// cleanup it is stopped with SIGINT and must exit 0, unless the test
// stopped it.
func startDev(t *testing.T, args ...string) *devProc {
	t.Helper()
	return &devProc{Dev: devtest.Start(t, nil, append([]string{"--seed", demoData}, args...)...), t: t}
}

// serviceHost is the Host header of a Knative Service on the ingress.
func (d *devProc) serviceHost(name string) string {
	return name + ".saga.localhost:" + strconv.Itoa(d.Port)
}

// interrupt sends SIGINT and returns the exit code.
func (d *devProc) interrupt() int {
	d.t.Helper()
	code, err := d.Interrupt(60 * time.Second)
	if err != nil {
		d.t.Error(err)
	}
	return code
}

// assertGone waits until none of pids is a live process.
func assertGone(t *testing.T, pids map[string]int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no function pids found in the log")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []string
		for svc, pid := range pids {
			if processAlive(pid) {
				alive = append(alive, fmt.Sprintf("%s (pid %d)", svc, pid))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("functions still running after ksaga dev exited: %s", strings.Join(alive, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive reports whether pid exists and is not a zombie (a function
// reparented to an init that does not reap stays a zombie, but is dead).
func processAlive(pid int) bool {
	if _, err := os.Stat("/proc/self"); err != nil {
		return syscall.Kill(pid, 0) == nil // no /proc: a zombie counts as alive
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b) // "pid (comm) state ..."
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// uid returns a unique id with a prefix.
func uid(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// postBinary sends io.ksaga.order.create in binary mode to the broker and
// returns the status code.
func (d *devProc) postBinary(id, sagaID string) int {
	d.t.Helper()
	req, err := http.NewRequest(http.MethodPost, d.URL("/saga/default"), strings.NewReader(orderData))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-source", "/e2e")
	req.Header.Set("ce-type", "io.ksaga.order.create")
	req.Header.Set("ce-correlationid", sagaID)
	req.Header.Set("content-type", "application/json")
	return d.do(req)
}

// postStructured sends io.ksaga.order.create in structured mode.
func (d *devProc) postStructured(id, sagaID string) int {
	d.t.Helper()
	body, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": id, "source": "/e2e", "type": "io.ksaga.order.create",
		"correlationid": sagaID, "datacontenttype": "application/json", "data": json.RawMessage(orderData),
	})
	if err != nil {
		d.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, d.URL("/saga/default"), bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("content-type", "application/cloudevents+json; charset=utf-8")
	return d.do(req)
}

func (d *devProc) do(req *http.Request) int {
	d.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// saga is GET /api/v1/sagas/<id> of the console's admin API, through the
// ingress.
func (d *devProc) saga(id string) (status string, body string, err error) {
	req, err := http.NewRequest(http.MethodGet, d.URL("/api/v1/sagas/"+id), nil)
	if err != nil {
		return "", "", err
	}
	req.Host = d.serviceHost("console")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return "", string(b), nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", string(b), fmt.Errorf("GET /api/v1/sagas/%s: %d %s", id, resp.StatusCode, b)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return "", string(b), err
	}
	return st.Status, string(b), nil
}

// waitCompleted polls until every saga is completed and its Finally step
// (the order saga's notification) is recorded, so the record no longer
// changes; a saga that ends any other way fails the test at once.
func (d *devProc) waitCompleted(timeout time.Duration, ids ...string) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	pending := map[string]string{}
	for _, id := range ids {
		pending[id] = "not polled"
	}
	for {
		for id := range pending {
			status, body, err := d.saga(id)
			switch {
			case err != nil:
				pending[id] = err.Error()
			case status == "completed" && strings.Contains(body, `"final"`):
				delete(pending, id)
			case status == "completed":
				pending[id] = "completed, its notification not yet recorded"
			case status == "compensated" || status == "compensation_failed":
				d.t.Fatalf("saga %s ended %s: %s", id, status, body)
			case status == "":
				pending[id] = "not found"
			default:
				pending[id] = status
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("after %v, %d of %d sagas are not completed: %v", timeout, len(pending), len(ids), pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestE2EChoreography: binary- and structured-mode commands to the broker,
// a POST /orders through order-api (and its GET /orders/{id}), gRPC GetUser
// through the ingress, the sagas through the console, and the index page.
func TestE2EChoreography(t *testing.T) {
	t.Parallel()
	redis := testredis.Start(t)
	d := startDev(t, "--redis-url", redis.URL())

	binary, structured := uid("bin"), uid("structured")
	if code := d.postBinary(uid("id"), binary); code != http.StatusAccepted {
		t.Fatalf("binary-mode create: %d", code)
	}
	if code := d.postStructured(uid("id"), structured); code != http.StatusAccepted {
		t.Fatalf("structured-mode create: %d", code)
	}

	// The order API: K_SINK (SinkBinding → broker) and USERS_URL (rewritten
	// to the users dev URL, gRPC through the ingress) at work.
	req, _ := http.NewRequest(http.MethodPost, d.URL("/orders"), strings.NewReader(orderData))
	req.Host = d.serviceHost("order-api")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var accepted struct {
		OrderID string `json:"order_id"`
		SagaID  string `json:"saga_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&accepted)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || err != nil || accepted.SagaID == "" || resp.Header.Get("Location") != "/orders/"+accepted.OrderID {
		t.Fatalf("POST /orders: %d %+v %v", resp.StatusCode, accepted, err)
	}

	d.waitCompleted(sagaTimeout, binary, structured, accepted.SagaID)
	req, _ = http.NewRequest(http.MethodGet, d.URL("/orders/"+accepted.OrderID), nil)
	req.Host = d.serviceHost("order-api")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var order struct {
		Status string `json:"status"`
		Saga   struct {
			ID string `json:"id"`
		} `json:"saga"`
	}
	err = json.NewDecoder(resp.Body).Decode(&order)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || order.Status != "confirmed" || order.Saga.ID != accepted.SagaID {
		t.Errorf("GET /orders/%s: %d %+v %v", accepted.OrderID, resp.StatusCode, order, err)
	}
	// In choreography, payment reacts to the event io.ksaga.order.created.
	if _, body, err := d.saga(structured); err != nil || !strings.Contains(body, `"event_type":"io.ksaga.order.created"`) {
		t.Errorf("the saga was not choreographed: %s %v", body, err)
	}

	t.Run("gRPC GetUser through the ingress", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///127.0.0.1:"+strconv.Itoa(d.Port),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(d.serviceHost("users")))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got user.UserResponse
		if err := conn.Invoke(ctx, "/user.UserService/GetUser", &user.UserRequest{UserId: 1}, &got); err != nil {
			t.Fatal(err)
		}
		if got.GetUserId() != 1 || got.GetUsername() != "alice" {
			t.Errorf("GetUser(1) = %v", &got)
		}
	})

	t.Run("index", func(t *testing.T) {
		resp, err := http.Get(d.URL("/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for _, want := range []string{"mode:    choreography", "broker:  MTChannelBasedBroker",
			"http://localhost:" + strconv.Itoa(d.Port) + "/saga/default", "http://order.saga.localhost:" + strconv.Itoa(d.Port), "h2c", "ready"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("index lacks %q:\n%s", want, b)
			}
		}
	})

	t.Run("start-up log", func(t *testing.T) {
		log := d.Log()
		for _, want := range []string{`msg="ksaga dev" mode=choreography broker_class=MTChannelBasedBroker`,
			`msg=redis url=redis://127.0.0.1:`, `msg="built functions" count=`, `msg=ready`,
			"curl -i -X POST http://order-api.saga.localhost:" + strconv.Itoa(d.Port) + "/orders -H 'content-type: application/json' -d '" + orderData + "'",
			"-H 'ce-type: io.ksaga.order.create'", "curl http://console.saga.localhost:" + strconv.Itoa(d.Port) + "/api/v1/sagas/saga-1",
			"curl -i -X POST http://localhost:" + strconv.Itoa(d.Port) + "/.ksaga/pingsources/saga/sweeper-ping",
			`msg=seeded file=deploy/demo/seed.redis`} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q", want)
			}
		}
		if !regexp.MustCompile(`(?m)^order +\| \{.*"msg":"listening"`).MatchString(d.Out.String()) {
			t.Error("function output is not prefixed with the service name")
		}
	})
}

// TestE2EEmbeddedRedis: without --redis-url, miniredis runs inside ksaga.
func TestE2EEmbeddedRedis(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	if !strings.Contains(d.Log(), "redis: embedded (miniredis in this process): not durable") {
		t.Error("the log does not say that Redis is embedded and not durable")
	}
	id := uid("embedded")
	if code := d.postBinary(uid("id"), id); code != http.StatusAccepted {
		t.Fatalf("create: %d", code)
	}
	d.waitCompleted(sagaTimeout, id)
}

// TestE2EOrchestration: the orchestration triggers complete a saga.
func TestE2EOrchestration(t *testing.T) {
	t.Parallel()
	redis := testredis.Start(t)
	d := startDev(t, "--mode", "orchestration", "--redis-url", redis.URL())
	if !strings.Contains(d.Log(), `mode=orchestration`) {
		t.Error("the log does not name the mode")
	}
	id := uid("orch")
	if code := d.postStructured(uid("id"), id); code != http.StatusAccepted {
		t.Fatalf("create: %d", code)
	}
	d.waitCompleted(sagaTimeout, id)
	// Only the orchestrator emits the command io.ksaga.payment.authorize.
	if _, body, err := d.saga(id); err != nil || !strings.Contains(body, `"event_type":"io.ksaga.payment.authorize"`) {
		t.Errorf("the saga was not orchestrated: %s %v", body, err)
	}
}

// TestE2EDurability: events accepted before `ksaga dev` is killed with
// SIGKILL are all delivered after a restart against the same Redis.
func TestE2EDurability(t *testing.T) {
	t.Parallel()
	const n = 20
	redis := testredis.Start(t)
	rdb := redis.Client(t)
	ctx := context.Background()
	fault := knfunc.FaultKey("payment", "io.ksaga.order.created")

	d := startDev(t, "--redis-url", redis.URL(), "--fault-injection")
	// Every delivery to payment now fails with 503 and is retried by the
	// broker (5 retries, exponential from 0.2s: ~6s before dead-lettering).
	if err := rdb.Set(ctx, fault, -1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	began := time.Now()
	for i := range ids {
		ids[i] = uid(fmt.Sprintf("durable%02d", i))
		if code := d.postBinary(uid("id"), ids[i]); code != http.StatusAccepted {
			t.Fatalf("create %d: %d", i, code)
		}
	}
	// Wait until the order step has started every saga (so each one's
	// io.ksaga.order.created is in the broker, being retried), then kill,
	// well before the first one could be dead-lettered (~6s after the
	// first create).
	deadline := began.Add(4 * time.Second)
	for _, id := range ids {
		for {
			status, _, err := d.saga(id)
			if err == nil && status == "running" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("saga %s not started 4s after the first create (status %q, %v)", id, status, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pids := d.Pids()
	d.Kill()
	t.Logf("killed ksaga dev %v after the first create", time.Since(began).Round(time.Millisecond))
	assertGone(t, pids)
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st, err := store.Get(ctx, id); err != nil || st.Status != saga.StatusRunning {
			t.Fatalf("saga %s is %q (%v) after the kill: it was dead-lettered, the kill came too late", id, st.Status, err)
		}
	}

	if err := rdb.Del(ctx, fault).Err(); err != nil {
		t.Fatal(err)
	}
	d2 := startDev(t, "--redis-url", redis.URL(), "--fault-injection")
	d2.waitCompleted(sagaTimeout, ids...)
	if !strings.Contains(d2.Log(), "redelivering pending entries") {
		t.Error("the restarted broker did not redeliver pending entries")
	}
}

// TestE2EInterrupt: SIGINT stops ksaga dev with exit status 0 and no
// function left running. (It also starts another broker class, without
// the demo data.)
func TestE2EInterrupt(t *testing.T) {
	t.Parallel()
	d := &devProc{Dev: devtest.Start(t, nil, "--broker", "kafka"), t: t}
	if strings.Contains(d.Log(), "msg=seeded") {
		t.Error("ksaga dev seeded data without --seed")
	}
	for _, want := range []string{`broker_class=Kafka note="every broker class runs on the local data plane`,
		`msg="PingSource scheduled" pingsource=saga/sweeper-ping`} {
		if !strings.Contains(d.Log(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	pids := d.Pids()
	if want := strings.Count(d.Log(), `msg=service service=`); len(pids) != want || want == 0 {
		t.Fatalf("pids of %d functions: %v", want, pids)
	}
	if code := d.interrupt(); code != 0 {
		t.Fatalf("exit status %d after SIGINT", code)
	}
	assertGone(t, pids)
	log := d.Log()
	for _, want := range []string{`msg="shutting down"`, `msg="function stopped" service=saga/order-api pid=`,
		`msg="function stopped" service=saga/sweeper pid=`, `msg=stopped`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if !strings.Contains(d.Out.String(), `"msg":"draining"`) {
		t.Error("the functions were not stopped with SIGTERM (no drain logged)")
	}
}

// TestE2EValidateExitStatus: `ksaga validate` exits 1 on a broken copy of
// the project and 0 on the project.
func TestE2EValidateExitStatus(t *testing.T) {
	t.Parallel()
	bin := devtest.Binary(t)
	root := devtest.RepoRoot()
	out, err := runIn(root, bin, "validate")
	if err != nil {
		t.Fatalf("validate of the project: %v\n%s", err, out)
	}

	dir := t.TempDir()
	for _, sub := range []string{"brokers", "triggers", "manifests"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(root, sub))); err != nil {
			t.Fatal(err)
		}
	}
	broken := "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: broken\n  namespace: saga\nspec:\n  broker: default\n  subscriber:\n    ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      name: ghost\n"
	if err := os.WriteFile(filepath.Join(dir, "triggers", "orchestration", "99-broken.yaml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runIn(dir, bin, "validate")
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("validate of a broken copy: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"triggers/orchestration/99-broken.yaml:1: Trigger saga/broken: spec.subscriber.ref: Service.serving.knative.dev saga/ghost is not defined",
		"== brokers/mt-channel + triggers/choreography + manifests ==\n", "validate: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func runIn(dir, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}
