// Command ksaga is the developer tool of ksaga: `ksaga dev` runs a project's
// Knative manifests on one machine (functions, broker, ingress), `ksaga
// validate` checks them as a cluster and `ksaga dev` would, `ksaga sagas`
// and `ksaga deadletters` see and operate sagas through a console's admin
// API, `ksaga bench` measures the reference saga against this machine's
// floor.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/ksaga/ksaga/internal/bench"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			_, _ = fmt.Fprintln(os.Stderr, "ksaga:", ee.msg)
		}
		os.Exit(ee.code)
	}
	_, _ = fmt.Fprintln(os.Stderr, "ksaga:", err)
	os.Exit(1)
}

// exitError ends ksaga with an exit status; msg, if any, is printed first.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// usageError is a command-line mistake (exit status 2, like flag's).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

const usage = `ksaga — sagas built from scale-to-zero Knative functions.

Usage:
  ksaga dev [flags]          run brokers/, triggers/ and manifests/ on this machine:
                             every ko:// Knative Service as a process, the Broker
                             on Redis, one ingress on 127.0.0.1
  ksaga validate [-f PATH]   check the manifests as Knative and ksaga dev would
  ksaga sagas list|show|abort|redrive
                             see and operate sagas through a console (ksaga dev's
                             by default: --console, $KSAGA_CONSOLE_URL)
  ksaga deadletters list|replay
                             see and replay dead letters through a console
  ksaga bench [flags]        measure the reference saga through ksaga dev, a real
                             redis-server and every function, against this
                             machine's floor measured in the same run

Run 'ksaga <command> -h' for the flags of a command; 'ksaga --version' for
the version.
`

// run is the whole program; main only maps its error to an exit status.
// getenv reads ksaga's environment (os.Getenv in main).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return usageError("no command")
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], getenv, stdout, stderr)
	case "validate":
		return runValidate(args[1:], stdout, stderr)
	case "sagas":
		return runSagas(ctx, args[1:], getenv, stdout, stderr)
	case "deadletters":
		return runDeadLetters(ctx, args[1:], getenv, stdout, stderr)
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, version())
		return err
	case "bench":
		self, err := os.Executable()
		if err != nil {
			return err
		}
		err = bench.Command(ctx, args[1:], self, stdout, stderr)
		if errors.Is(err, bench.ErrUsage) {
			return &exitError{code: 2, msg: err.Error()}
		}
		return err
	case "bench-floor-server": // hidden: the floor receivers `ksaga bench` runs
		return bench.FloorServerCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run(ctx, []string{args[1], "-h"}, getenv, stdout, stderr)
		}
		_, _ = fmt.Fprint(stdout, usage)
		return nil
	default:
		_, _ = fmt.Fprint(stderr, usage)
		return usageError("unknown command %q", args[0])
	}
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return fmt.Sprint([]string(*s)) }

func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// syncWriter serialises writes: ksaga's log and the prefixed lines of the
// functions share stderr.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
