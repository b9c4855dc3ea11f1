//go:build !unix

package dev

import (
	"os"
	"syscall"
)

// sysProcAttr: this platform has neither process groups nor a parent-death
// signal as ksaga uses them; functions are stopped one by one.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate stops a function; without SIGTERM it is a kill.
func terminate(pid int) error { return kill(pid) }

// kill stops a function now.
func kill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// lockFile is a no-op here: concurrent `ksaga dev` builds are not serialised.
func lockFile(string) (func(), error) { return func() {}, nil }

func exeSuffix() string { return ".exe" }
