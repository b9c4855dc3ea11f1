//go:build !linux

package redisserver

import "syscall"

// procAttr keeps redis-server in its own process group.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
