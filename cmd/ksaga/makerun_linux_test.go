package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ksaga/ksaga/internal/devproc"
	"github.com/ksaga/ksaga/internal/devtest"
)

// TestE2EMakeRunInterrupt: `make run` in a terminal shows the build's
// progress, and a Ctrl-C typed in that terminal after start-up (the
// terminal sends SIGINT to its foreground process group) ends it with exit
// status 0 and no "make: ***". Before, `go run` in the recipe exited 1 after
// any interrupt ("Error 1"), and make, which got the same SIGINT, ended
// itself with it once ksaga had stopped.
func TestE2EMakeRunInterrupt(t *testing.T) {
	t.Parallel()
	devtest.Binary(t) // skipped under -short, like every end-to-end test
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make on PATH")
	}
	ptm, pts := openPTY(t)
	var out lockedBuffer
	go func() { _, _ = out.ReadFrom(ptm) }() // until the terminal closes
	cmd := exec.Command(mk, "--no-print-directory", "run", "PORT=0", "KSAGA="+filepath.Join(t.TempDir(), "ksaga"))
	cmd.Dir = devtest.RepoRoot()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = pts.Close() // the child has it
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(4 * time.Minute) // covers a cold build
	for !strings.Contains(out.String(), "Ctrl-C stops everything") {
		select {
		case err := <-done:
			t.Fatalf("make run ended before it was ready: %v\n%s", err, out.String())
		case <-deadline:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("make run not ready:\n%s", out.String())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
	if _, err := ptm.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("make run after Ctrl-C: %v, want exit status 0\n%s", err, devproc.Tail(out.String(), 30))
		}
	case <-time.After(time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("make run did not stop within a minute of Ctrl-C\n%s", devproc.Tail(out.String(), 30))
	}
	// the terminal's buffer may still hold the last output: poll for it
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "msg=stopped") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // poll, bounded by the deadline
	}
	for _, want := range []string{"go build -o ", `msg="building functions" count=10`, "msg=seeded file=deploy/demo/seed.redis", "msg=stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("make run's output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "make: ***") {
		t.Errorf("make reported an error:\n%s", devproc.Tail(out.String(), 10))
	}
}

// openPTY opens a pseudo-terminal: the master side and the terminal.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return m, s
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) ReadFrom(f *os.File) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := f.Read(buf)
		l.mu.Lock()
		l.b.Write(buf[:k])
		l.mu.Unlock()
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
