//go:build unix && !linux

package dev

import "syscall"

// sysProcAttr puts a function in its own process group, so that a Ctrl-C in
// the terminal reaches only ksaga, which stops the functions in order. This
// platform has no parent-death signal: a function may outlive a ksaga that
// is killed with SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
