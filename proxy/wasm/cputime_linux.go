//go:build linux

package wasm

import "golang.org/x/sys/unix"

// threadCPU returns the CPU time the calling OS thread has used, in ns.
// The caller must hold its thread (runtime.LockOSThread) for two readings
// to be comparable.
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return monotonic()
	}
	return ts.Nano()
}

// threadClock returns the clock id of the calling thread's CPU clock,
// readable from any thread of the process (Linux's MAKE_THREAD_CPUCLOCK
// with CPUCLOCK_SCHED).
func threadClock() int32 {
	return int32(^uint32(unix.Gettid())<<3 | 6)
}

// clockCPU reads a thread CPU clock returned by threadClock, in ns.
func clockCPU(id int32) int64 {
	var ts unix.Timespec
	if unix.ClockGettime(id, &ts) != nil {
		return monotonic()
	}
	return ts.Nano()
}
