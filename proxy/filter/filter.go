// Package filter is the contract between the proxy and the filters that
// see its requests: native Go filters and Wasm plugins alike.
//
// A snapshot holds one Factory per configured filter attachment. For each
// request the proxy asks every factory of the route's chain for a Stream,
// then calls the Stream's callbacks in this order, as Envoy does:
//
//	request headers -> request body chunks -> request trailers
//	  -> [upstream, or a local response]
//	response headers -> response body chunks -> response trailers -> log -> done
//
// Requests pass the chain in order and responses in reverse order. A
// callback returns a Status. All callbacks of one Stream are made from one
// goroutine at a time; the Exchange they are given may be used until Done
// returns and must not be retained after it.
package filter

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"
)

// Status is what a callback tells the chain.
type Status uint8

const (
	// Continue passes the data to the next filter.
	Continue Status = iota
	// Pause holds the exchange until the filter calls Exchange.Resume or
	// Exchange.SendLocalResponse, or the route's timeout expires. A
	// headers or trailers callback may pause, and so may a body callback
	// at the end of the body; mid-body it means Buffer.
	Pause
	// Buffer, from a body callback, holds the data seen so far: the proxy
	// calls again with the next chunk appended and passes nothing on
	// until the filter continues. Buffered data is bounded by the filter's
	// limit; past it the request fails with 413 (request) or 500 (response).
	Buffer
	// Stop ends the chain. The filter has sent a local response, or failed
	// closed (the proxy answers 500 unless a local response was sent).
	Stop
)

func (s Status) String() string {
	switch s {
	case Continue:
		return "continue"
	case Pause:
		return "pause"
	case Buffer:
		return "buffer"
	case Stop:
		return "stop"
	}
	return "unknown"
}

// Factory is one configured filter within a snapshot. It is shared by every
// request of the routes it is attached to and is safe for concurrent use.
type Factory interface {
	// Name identifies the filter in logs and metrics.
	Name() string
	// NewStream returns the filter's state for one request. It is called
	// on the request's goroutine before the request headers callback. An
	// error fails the request as the filter's failure policy says: with
	// ErrFailOpen wrapped in it the request goes on without the filter.
	NewStream(x *Exchange) (Stream, error)
}

// Stream is a filter's state for one request.
type Stream interface {
	OnRequestHeaders(x *Exchange, endOfStream bool) Status
	// OnRequestBody sees the request body chunk by chunk. body holds the
	// chunk, or everything buffered so far after a Buffer; the filter may
	// change body.B. The proxy sends body.B upstream when the filter
	// returns Continue.
	OnRequestBody(x *Exchange, body *Body, endOfStream bool) Status
	OnRequestTrailers(x *Exchange) Status
	OnResponseHeaders(x *Exchange, endOfStream bool) Status
	OnResponseBody(x *Exchange, body *Body, endOfStream bool) Status
	OnResponseTrailers(x *Exchange) Status
	// OnLog is called once the response has been sent (or the request
	// failed), before Done, for access logging and telemetry.
	OnLog(x *Exchange)
	// Done releases the stream. It is always called, exactly once, for
	// every stream NewStream returned.
	Done(x *Exchange)
}

// Body is body data handed to a filter. The filter may replace or
// re-slice B; B must not be retained after the callback returns.
type Body struct {
	B []byte
}

// Upstreams sends requests that filters make on their own (proxy_http_call)
// to clusters of the live snapshot.
type Upstreams interface {
	// Call sends req to an endpoint of the named cluster and reads the
	// whole response into resp. It returns ErrUnknownCluster for a cluster
	// that does not exist.
	Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error
}

// StreamUpstreams is implemented by Upstreams whose clusters also carry
// exchanges that stream both ways: the gRPC calls and streams that filters
// open (proxy_grpc_call, proxy_grpc_stream).
type StreamUpstreams interface {
	// StreamCluster returns the named cluster of the live configuration.
	// It returns ErrUnknownCluster for a cluster that does not exist and
	// ErrNotHTTP2 for one whose endpoints are not reached over HTTP/2.
	StreamCluster(name string) (StreamCluster, error)
}

// StreamCluster opens streaming exchanges with the endpoints of one
// cluster. It is safe for concurrent use.
type StreamCluster interface {
	// Stream sends req's headers to an endpoint, then body, which the
	// transport reads on a goroutine of its own until io.EOF (a body
	// that is also an io.Closer is closed when the exchange no longer
	// needs it). It returns once the response headers have arrived in
	// resp (status and headers; resp's body is unused). The returned
	// body streams the response: at its io.EOF the response's trailers
	// are added to resp.Header as trailers. A response that ended with
	// its headers returns http.NoBody. Cancelling ctx ends the exchange,
	// resetting the stream if it is still open; so does closing the
	// body. The caller must close the body.
	Stream(ctx context.Context, req *fasthttp.Request, body io.Reader, resp *fasthttp.Response) (io.ReadCloser, error)
}

// ErrNotHTTP2 is returned by StreamUpstreams.StreamCluster for a cluster
// whose protocol is not http2: gRPC needs HTTP/2.
var ErrNotHTTP2 = errors.New("cluster protocol is not http2")
