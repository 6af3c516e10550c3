package prometheus

import "syscall"

// sysProcAttr: the server is killed if this process dies without Close (a test binary
// killed on timeout, say), so no Prometheus outlives its user.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
