// Package loadgen is the load generator behind `wasmgate bench`: HTTP/1.1,
// HTTP/2 and HTTP/3 load in a closed loop (a fixed number of connections,
// each sending its next request when the previous response arrived) or an
// open loop (a constant rate, with latency measured from when each request
// was due, so that a stalled target cannot hide behind the requests it
// delayed).
//
// Each connection is driven by its own goroutine that records into its own
// HDR histogram and counters; they are merged once, at the end. The
// HTTP/1.1 path sends prepared bytes and parses with fasthttp's reused
// Response, and allocates nothing per request in steady state.
//
// Run is the whole API for a run; Report, Compare and WriteHTML present
// its outcome.
package loadgen
