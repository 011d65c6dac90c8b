//go:build !linux

package pgtest

import "syscall"

// sysProcAttr runs a server process as cred (nil: as this process's user).
// Outside Linux there is no parent-death signal: stop the server with
// Server.Stop.
func sysProcAttr(cred *syscall.Credential, _ bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
