//go:build !linux

package wasm

// Without a per-thread CPU clock, a call's time is its wall time: a
// descheduled guest counts as a busy one.

func threadCPU() int64     { return monotonic() }
func threadClock() int32   { return 0 }
func clockCPU(int32) int64 { return monotonic() }
