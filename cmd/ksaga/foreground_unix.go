//go:build linux || darwin

package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// foreground makes `ksaga dev` the terminal's foreground process group when
// it shares one with the program that started it (make, go run), and
// returns the function that gives the terminal back.
//
// A Ctrl-C is a SIGINT to every process of the terminal's foreground group.
// Under `make run`, make got it too and, whatever ksaga then did, ended
// itself with the same signal once its child had exited ("make: ***
// [run] Interrupt", exit status 130); `go run` exits 1 after any interrupt.
// In a group of its own, ksaga alone gets the Ctrl-C: it stops everything
// and exits 0, and so does its parent. Run from a shell, ksaga already
// leads its own group and nothing changes; without a terminal neither.
func foreground() (restore func()) {
	noop := func() {}
	tty := int(os.Stdin.Fd())
	fg, err := tcgetpgrp(tty)
	if err != nil {
		return noop // not a terminal
	}
	pgrp := syscall.Getpgrp()
	if fg != pgrp || pgrp == os.Getpid() {
		return noop // in the background, or leading the group already
	}
	// A process outside the foreground group that changes it gets
	// SIGTTOU, which would stop it.
	signal.Ignore(syscall.SIGTTOU)
	if err := syscall.Setpgid(0, 0); err != nil {
		signal.Reset(syscall.SIGTTOU)
		return noop
	}
	if err := tcsetpgrp(tty, os.Getpid()); err != nil {
		_ = syscall.Setpgid(0, pgrp)
		signal.Reset(syscall.SIGTTOU)
		return noop
	}
	return func() {
		_ = tcsetpgrp(tty, pgrp)
		signal.Reset(syscall.SIGTTOU)
	}
}

func tcgetpgrp(fd int) (int, error) {
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return 0, e
	}
	return int(pgrp), nil
}

func tcsetpgrp(fd, pgrp int) error {
	p := int32(pgrp)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCSPGRP), uintptr(unsafe.Pointer(&p))); e != 0 {
		return e
	}
	return nil
}
