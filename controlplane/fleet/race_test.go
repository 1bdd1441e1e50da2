//go:build race

package fleet_test

// The race detector slows everything tenfold: check correctness with fewer
// changes, and measure latency without it.
func init() { defaultApplies = 20 }
