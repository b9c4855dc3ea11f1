//go:build linux

package dev

import "syscall"

// sysProcAttr puts a function in its own process group (so a Ctrl-C in the
// terminal reaches only ksaga, which stops the functions in order) and makes
// the kernel SIGKILL it when ksaga dies, however it dies (kill -9 included),
// so that no function outlives `ksaga dev`.
//
// Pdeathsig fires when the *thread* that forked the child exits, not the
// process; functions are therefore started from one goroutine locked to its
// thread for the life of the supervisor (see spawner).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
