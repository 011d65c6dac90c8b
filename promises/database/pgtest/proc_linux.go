package pgtest

import "syscall"

// sysProcAttr runs a server process as cred (nil: as this process's user).
// A long-running server is also sent SIGQUIT, PostgreSQL's immediate
// shutdown, when this process dies, so a crashed or killed test binary
// leaves no server behind. Go sets the parent-death signal after switching
// credentials, so the kernel does not clear it.
func sysProcAttr(cred *syscall.Credential, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: cred}
	if server {
		a.Pdeathsig = syscall.SIGQUIT
	}
	return a
}
