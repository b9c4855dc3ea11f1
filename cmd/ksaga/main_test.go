package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ksaga/ksaga/internal/dev"
	"github.com/ksaga/ksaga/knfunc"
)

func TestParseDevFlagsDefaults(t *testing.T) {
	var stderr bytes.Buffer
	d, err := parseDevFlags(nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	c := d.cfg
	if c.Port != 8080 || c.Mode != "choreography" || c.BrokerClass != "mt-channel" || c.RedisURL != "" ||
		c.Seed != "" || c.FaultInjection || c.DuplicateDeliveries != 0 || len(c.Paths) != 0 || len(c.Env) != 0 || d.logLevel != slog.LevelInfo ||
		c.Scale != dev.ScaleKnative || c.ScaleWindow != 0 {
		t.Errorf("defaults: %+v, level %v", c, d.logLevel)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
}

func TestParseDevFlags(t *testing.T) {
	var stderr bytes.Buffer
	d, err := parseDevFlags([]string{
		"-f", "a.yaml", "--f=dir", "--port", "0", "--mode", "orchestration", "--broker=kafka",
		"--redis-url", "redis://127.0.0.1:6379/1", "--seed", "deploy/demo/seed.redis", "--fault-injection",
		"--env", "A=1", "--env=B=x=y", "--log-level", "debug", "--scale=always-on", "--scale-window", "3s",
	}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	c := d.cfg
	if !slices.Equal(c.Paths, []string{"a.yaml", "dir"}) || c.Port != 0 || c.Mode != "orchestration" || c.BrokerClass != "kafka" ||
		c.RedisURL != "redis://127.0.0.1:6379/1" || c.Seed != "deploy/demo/seed.redis" || !c.FaultInjection ||
		!slices.Equal(c.Env, []string{"A=1", "B=x=y"}) || d.logLevel != slog.LevelDebug ||
		c.Scale != dev.ScaleAlwaysOn || c.ScaleWindow != 3*time.Second {
		t.Errorf("parsed: %+v, level %v", c, d.logLevel)
	}
	if !strings.Contains(stderr.String(), "with -f they are ignored") {
		t.Errorf("no note that --mode/--broker are ignored with -f: %q", stderr.String())
	}
}

func TestParseDevFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--env", "NOEQUALS"}, `--env "NOEQUALS": want KEY=VALUE`},
		{[]string{"--env", "=v"}, `want KEY=VALUE`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--port", "70000"}, `--port 70000`},
		{[]string{"--port", "x"}, `invalid value "x" for flag -port`},
		{[]string{"--nope"}, `flag provided but not defined: -nope`},
		{[]string{"manifests"}, `unexpected arguments ["manifests"]`},
		{[]string{"--scale", "hpa"}, `--scale "hpa": want knative or always-on`},
		{[]string{"--scale-window", "500ms"}, `--scale-window 500ms: want at least 1s`},
		{[]string{"--scale-window", "-1s"}, `want at least 1s`},
		{[]string{"--duplicate-deliveries=1.5"}, `want a rate from 0 to 1`},
		{[]string{"--duplicate-deliveries=-1"}, `want a rate from 0 to 1`},
		{[]string{"--duplicate-deliveries=often"}, `want a rate from 0 to 1`},
		{[]string{"--duplicate-deliveries", "0.3"}, `unexpected arguments ["0.3"]`}, // a rate needs the =
	} {
		var stderr bytes.Buffer
		_, err := parseDevFlags(tc.args, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want exit 2 with %q", tc.args, err, tc.want)
		}
	}
}

// TestDuplicateDeliveriesRate: the flag is a rate; bare, it is 1.
func TestDuplicateDeliveriesRate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want float64
	}{
		{nil, 0},
		{[]string{"--duplicate-deliveries"}, 1},
		{[]string{"-duplicate-deliveries=0.3"}, 0.3},
		{[]string{"--duplicate-deliveries=0"}, 0},
		{[]string{"--duplicate-deliveries=1"}, 1},
		{[]string{"--duplicate-deliveries=false"}, 0},
		{[]string{"--duplicate-deliveries=true"}, 1},
	} {
		var stderr bytes.Buffer
		d, err := parseDevFlags(tc.args, &stderr)
		if err != nil || d.cfg.DuplicateDeliveries != tc.want {
			t.Errorf("%q: rate %v, err %v; want %v", tc.args, d.cfg.DuplicateDeliveries, err, tc.want)
		}
	}
}

// TestFaultInjectionHelp: the flag's help says which key to set and what
// its values do, without sending the reader to the source.
func TestFaultInjectionHelp(t *testing.T) {
	var stderr bytes.Buffer
	_, _ = parseDevFlags([]string{"-h"}, &stderr)
	help := stderr.String()
	for _, want := range []string{knfunc.FaultKey("<service>", "<event type or command>"), "N > 0 fails the next N", "-1", "503", "redis-cli SET ksaga:fault:"} {
		if !strings.Contains(help, want) {
			t.Errorf("--fault-injection help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "see knfunc") {
		t.Error("--fault-injection help still sends the reader to knfunc")
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"dev", "-h"}, {"validate", "--help"}, {"help", "dev"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, os.Getenv, &stdout, &stderr)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: err = %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(stderr.String(), "Usage: ksaga "+args[len(args)-1]) && !strings.Contains(stderr.String(), "Usage: ksaga "+args[0]) {
			t.Errorf("%q: no usage: %q", args, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"help"}, os.Getenv, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "ksaga dev [flags]") {
		t.Errorf("help: %v %q", err, stdout.String())
	}
	for _, args := range [][]string{nil, {"deploy"}} {
		err := run(context.Background(), args, os.Getenv, &stdout, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%q: err = %v, want exit status 2", args, err)
		}
	}
	stderr.Reset()
	_, _ = parseDevFlags([]string{"-h"}, &stderr)
	for _, f := range []string{"-f PATH", "-port int", "-mode string", "-broker string", "-redis-url URL", "-seed", "-fault-injection", "-env KEY=VALUE", "-log-level string", "-scale string", "-scale-window DURATION"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("dev -h lacks %q:\n%s", f, stderr.String())
		}
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join("..", "..", "brokers", "mt-channel")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"validate", "-f", good, "-f", "../../triggers/orchestration", "-f", "../../manifests"}, os.Getenv, &stdout, &stderr); err != nil {
		t.Fatalf("valid set: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "OK: 1 Broker, ") || !strings.Contains(stdout.String(), " Knative Services, ") {
		t.Errorf("report: %s", stdout.String())
	}

	bad := filepath.Join(dir, "trigger.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\n  namespace: saga\nspec:\n  broker: nowhere\n  subscriber:\n    uri: http://example.com\n  colour: blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	err := run(context.Background(), []string{"validate", "-f", bad}, os.Getenv, &stdout, &stderr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("broken set: err = %v, want exit status 1", err)
	}
	for _, want := range []string{"trigger.yaml:1: Trigger saga/t", "spec.colour: unknown field", "Broker saga/nowhere is not defined", "FAILED"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestInstallDialer: the dialer lands on http.DefaultTransport, which
// kncloudevents clones for every delivery target.
func TestInstallDialer(t *testing.T) {
	tr := http.DefaultTransport.(*http.Transport)
	old := tr.DialContext
	t.Cleanup(func() { tr.DialContext = old })
	called := false
	installDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		called = true
		return nil, errors.New("test dialer")
	})
	_, err := http.Get("http://order.saga.localhost:1/")
	if !called || err == nil || !strings.Contains(err.Error(), "test dialer") {
		t.Errorf("called=%v err=%v", called, err)
	}
	var _ dev.DialFunc = tr.DialContext
}
