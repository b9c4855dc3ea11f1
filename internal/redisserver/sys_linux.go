package redisserver

import "syscall"

// procAttr kills redis-server with its parent (a test binary or ksaga bench
// that dies must not leave servers behind).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
