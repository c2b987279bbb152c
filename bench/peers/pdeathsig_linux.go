package main

import "syscall"

// init asks Linux to send this process SIGTERM when its parent dies: with
// `go run`, a SIGTERM reaches the go command, not the program, which would
// otherwise run on alone; this way it stops and removes its clusters too.
func init() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
}
