// Package native holds the proxy's own filters: the forwarding headers,
// rate limits and header mutation. They implement filter.Factory as Wasm
// plugins do, so that a route's chain is one ordered list that the
// configuration may interleave (config.FilterRef.Native).
//
// The default order of a chain, for what a route does not place itself:
//
//	forwarded, rate_limit, <the virtual host's and the route's plugins>, headers
//
// Requests pass the chain in order and responses in reverse: plugins see
// the forwarding headers and a request the rate limits let through, the
// request's header mutation is the last change before the upstream, and
// the response's the first change after it.
//
// Native filters keep no state per request: a factory is its own stream,
// so that a request through them allocates nothing.
package native

import "github.com/wasmgate/wasmgate/proxy/filter"

// headersOnly gives a native filter the callbacks it does not use, and
// marks it filter.HeadersOnly.
type headersOnly struct{}

func (headersOnly) HeadersOnly() {}

func (headersOnly) OnRequestBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (headersOnly) OnRequestTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (headersOnly) OnResponseHeaders(*filter.Exchange, bool) filter.Status {
	return filter.Continue
}
func (headersOnly) OnResponseBody(*filter.Exchange, *filter.Body, bool) filter.Status {
	return filter.Continue
}
func (headersOnly) OnResponseTrailers(*filter.Exchange) filter.Status { return filter.Continue }
func (headersOnly) OnLog(*filter.Exchange)                            {}
func (headersOnly) Done(*filter.Exchange)                             {}
