package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// tour is the definition the commands are tested with.
var tour = &saga.Definition{
	Name:    "tour",
	Timeout: saga.Duration(time.Hour),
	Steps: []saga.StepDef{
		{Name: "seat", Command: "t.seat.take", Succeeded: "t.seat.taken", Failed: "t.seat.failed", Compensation: "t.seat.free", Compensated: "t.seat.freed"},
		{Name: "guide", Command: "t.guide.book", Succeeded: "t.guide.booked", Failed: "t.guide.failed"},
	},
}

const consoleToken = "tok-123"

// liveConsole is a real console function (console.Setup, as
// functions/console runs it) on a real redis-server, with sagas in every
// state the commands act on.
type liveConsole struct {
	url    string
	kit    *sagatest.Kit
	broker *sagatest.Broker
}

func startConsole(t *testing.T) *liveConsole {
	t.Helper()
	redisURL, rdb := sagatest.RedisURL(t)
	defs, _ := json.Marshal([]*saga.Definition{tour})
	broker := sagatest.NewBroker(t)
	fn := sagatest.Start(t, console.Setup, map[string]string{"REDIS_URL": redisURL, "K_SERVICE": "console", "K_SINK": broker.URL,
		ops.EnvSagas: string(defs), "KSAGA_CONSOLE_TOKEN": consoleToken})
	k := sagatest.New(t, tour, rdb)
	k.Run("done", map[string]any{"who": "ann"}, "t.guide.booked")
	k.Run("comp", map[string]any{"who": "bo"}, "t.seat.freed", sagatest.Fail("guide", "no guide"))
	k.Run("run", map[string]any{"who": "cy"}, "t.seat.taken")
	waits := k.Run("cf", map[string]any{"who": "di"}, "t.guide.failed", sagatest.Fail("guide", "ill"))
	// the compensation could not be delivered: the dead-letter sink marks it
	reg, err := ops.NewRegistry(tour)
	if err != nil {
		t.Fatal(err)
	}
	dls, err := ops.NewDeadLetters(&ops.Operator{Sagas: reg, Store: k.Store, Source: "/ksaga/deadletter",
		Sink: knfunc.NewSink(broker.URL, nil), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	waits.SetExtension(ops.ExtErrorDest, "http://seat.tour.svc.cluster.local")
	waits.SetExtension(ops.ExtErrorCode, "503")
	waits.SetExtension(ops.ExtErrorData, base64.StdEncoding.EncodeToString([]byte("seat service down")))
	if _, err := dls.Handle(context.Background(), waits); err != nil {
		t.Fatal(err)
	}
	return &liveConsole{url: fn.URL, kit: k, broker: broker}
}

// ksaga runs the command line against the console and returns stdout.
func (c *liveConsole) ksaga(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	e := map[string]string{"KSAGA_CONSOLE_URL": c.url, "USER": "tester"}
	for k, v := range env {
		e[k] = v
	}
	var out, errb bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return e[k] }, &out, &errb)
	return out.String(), err
}

func (c *liveConsole) must(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, err := c.ksaga(t, env, args...)
	if err != nil {
		t.Fatalf("ksaga %s: %v", strings.Join(args, " "), err)
	}
	return out
}

var withToken = map[string]string{"KSAGA_CONSOLE_TOKEN": consoleToken}

func TestSagasList(t *testing.T) {
	c := startConsole(t)
	out := c.must(t, nil, "sagas", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{"cf +tour +- +compensation_failed", "run +tour +- +running", "comp +tour +- +compensated .*no guide", "done +tour +- +completed"} {
		if !regexp.MustCompile("(?m)^" + want).MatchString(out) {
			t.Errorf("no row %q in\n%s", want, out)
		}
	}
	var page ops.SagaPage
	if err := json.Unmarshal([]byte(c.must(t, nil, "sagas", "list", "--status", "compensated", "-o", "json")), &page); err != nil || len(page.Sagas) != 1 || page.Sagas[0].ID != "comp" {
		t.Fatalf("json, compensated: %+v %v", page, err)
	}
	if out := c.must(t, nil, "sagas", "list", "-q", "run"); !strings.Contains(out, "\nrun ") || strings.Count(out, "\n") != 2 {
		t.Fatalf("search:\n%s", out)
	}
	// paging: a page of 2, then the rest from the printed cursor
	first := c.must(t, nil, "sagas", "list", "--limit", "2")
	m := regexp.MustCompile(`more: --cursor (\S+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("no cursor:\n%s", first)
	}
	rest := c.must(t, nil, "sagas", "list", "--limit", "2", "--cursor", m[1])
	if !strings.Contains(rest, "\ncomp ") || !strings.Contains(rest, "\ndone ") || strings.Contains(rest, "more:") {
		t.Fatalf("second page:\n%s", rest)
	}
	if _, err := c.ksaga(t, nil, "sagas", "list", "--status", "lost"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad status: %v", err)
	}
}

func TestSagasShow(t *testing.T) {
	c := startConsole(t)
	out := c.must(t, nil, "sagas", "show", "comp")
	for _, want := range []string{"Status:", "compensated", "Reason:", "no guide",
		"1  seat   succeeded    forward", "2  guide  failed       forward", "3  seat   compensated  compensate"} {
		if !strings.Contains(out, want) {
			t.Errorf("show: no %q in\n%s", want, out)
		}
	}
	var v ops.SagaView
	if err := json.Unmarshal([]byte(c.must(t, nil, "sagas", "show", "comp", "-o", "json")), &v); err != nil || v.ID != "comp" || len(v.Kinds) != 3 {
		t.Fatalf("json: %+v %v", v, err)
	}
	if _, err := c.ksaga(t, nil, "sagas", "show", "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("unknown saga: %v", err)
	}
	var ue *exitError
	if _, err := c.ksaga(t, nil, "sagas", "show"); !errors.As(err, &ue) || ue.code != 2 {
		t.Fatalf("no id: %v", err)
	}
}

func TestSagasAbortAndRedrive(t *testing.T) {
	c := startConsole(t)
	if _, err := c.ksaga(t, nil, "sagas", "abort", "run"); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("abort without the token: %v", err)
	}
	out := c.must(t, withToken, "sagas", "abort", "run", "--actor", "Ada")
	if !strings.Contains(out, "saga run aborted at the guide step (t.guide.failed)") {
		t.Fatalf("abort: %s", out)
	}
	st := c.kit.Record("run")
	if last := st.Steps[len(st.Steps)-1]; st.Status != saga.StatusCompensating || last.Outcome != "aborted" || last.Actor != "Ada (token)" {
		t.Fatalf("after abort: %s %+v", st.Status, last)
	}
	if _, err := c.ksaga(t, withToken, "sagas", "abort", "done"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("abort a completed saga: %v", err)
	}
	out = c.must(t, withToken, "sagas", "redrive", "cf", "-o", "json")
	var r struct {
		EventType string `json:"event_type"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.EventType != "t.guide.failed" {
		t.Fatalf("redrive: %s %v", out, err)
	}
	st = c.kit.Record("cf")
	if last := st.Steps[len(st.Steps)-1]; st.Status != saga.StatusCompensating || last.Outcome != ops.OutcomeRedriven || last.Actor != "tester (token)" {
		t.Fatalf("after redrive: %s %+v", st.Status, last)
	}
}

func TestDeadLettersListAndReplay(t *testing.T) {
	c := startConsole(t)
	out := c.must(t, nil, "deadletters", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "cf") || !strings.Contains(lines[1], "t.guide.failed") ||
		!strings.Contains(lines[1], "http://seat.tour.svc.cluster.local") || !strings.Contains(lines[1], "503") || !strings.Contains(lines[1], "compensation_failed") {
		t.Fatalf("list:\n%s", out)
	}
	var page saga.DeadLetterPage
	if err := json.Unmarshal([]byte(c.must(t, nil, "deadletters", "list", "--saga", "cf", "-o", "json")), &page); err != nil || len(page.DeadLetters) != 1 {
		t.Fatalf("json: %+v %v", page, err)
	}
	id := page.DeadLetters[0].ID
	if _, err := c.ksaga(t, nil, "deadletters", "replay", "--all"); err == nil {
		t.Fatal("replay --all without a filter")
	}
	out = c.must(t, withToken, "deadletters", "replay", id)
	if !strings.Contains(out, "replayed "+id+": t.guide.failed published again") || len(c.broker.Events()) != 1 {
		t.Fatalf("replay: %s, broker got %d", out, len(c.broker.Events()))
	}
	out = c.must(t, withToken, "deadletters", "replay", "--all", "--saga", "cf", "--actor", "Bo")
	if !strings.Contains(out, "replayed 1 dead letter(s)") || len(c.broker.Events()) != 2 {
		t.Fatalf("replay --all: %s", out)
	}
	st := c.kit.Record("cf")
	var notes []string
	for _, s := range st.Steps {
		if s.Note {
			notes = append(notes, s.Outcome+" by "+s.Actor)
		}
	}
	if strings.Join(notes, ", ") != "dead_letter_replayed by tester (token), dead_letter_replayed by Bo (token)" {
		t.Fatalf("notes: %v", notes)
	}
	if out := c.must(t, nil, "deadletters", "list"); !strings.Contains(out, "Bo (token)") {
		t.Fatalf("the dead letter does not say who replayed it:\n%s", out)
	}
}

func TestConsoleCommandErrors(t *testing.T) {
	var out, errb bytes.Buffer
	env := func(k string) string { return map[string]string{"KSAGA_CONSOLE_URL": "http://127.0.0.1:1"}[k] }
	err := run(context.Background(), []string{"sagas", "list"}, env, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "--console") {
		t.Fatalf("unreachable console: %v", err)
	}
	var ue *exitError
	for _, args := range [][]string{{"sagas"}, {"sagas", "nope"}, {"deadletters", "replay"}, {"sagas", "list", "-o", "yaml", "--console", "ftp://x"}} {
		if err := run(context.Background(), args, env, &out, &errb); !errors.As(err, &ue) || ue.code != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"--version"}, env, &out, &errb); err != nil || !strings.HasPrefix(out.String(), "ksaga ") {
		t.Fatalf("--version: %q %v", out.String(), err)
	}
}
