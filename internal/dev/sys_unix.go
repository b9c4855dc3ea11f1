//go:build unix

package dev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// signalGroup sends sig to the process group of a function (its pid: see
// sysProcAttr). A group that is gone already is not an error.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return nil
}

// terminate asks a function to stop (SIGTERM, as the kubelet does).
func terminate(pid int) error { return signalGroup(pid, syscall.SIGTERM) }

// kill stops a function now (SIGKILL).
func kill(pid int) error { return signalGroup(pid, syscall.SIGKILL) }

// lockFile takes an exclusive advisory lock on path (created if needed) and
// returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

func exeSuffix() string { return "" }
