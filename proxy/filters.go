package proxy

import (
	"errors"
	"io"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/filter/native"
	"github.com/wasmgate/wasmgate/proxy/route"
)

const (
	// smallBody is the largest request body with a known length that is
	// read whole before body filters see it, keeping its Content-Length.
	smallBody = cluster.SmallBody
	// maxBuffered bounds what body filters may buffer.
	maxBuffered = 8 << 20
	// chunkSize is the size of the chunks body filters see when a body
	// streams.
	chunkSize = 32 << 10
)

// requestFilters creates the route's filter streams and runs the request
// callbacks. It reports false when the exchange was answered instead.
// When a filter's request headers callback clears the route cache, the
// route is chosen again before the next filter runs (chooseRouteAgain).
func (x *exchange) requestFilters(rt *route.Route, ls *listenerSnap) bool {
	for _, f := range rt.Filters {
		s, err := f.NewStream(&x.Exchange)
		if err != nil {
			if errors.Is(err, filter.ErrFailOpen) {
				continue
			}
			x.localError(fasthttp.StatusInternalServerError, filter.FlagFilterFailed, "filter_failed")
			return false
		}
		x.streams = append(x.streams, s)
		if _, ok := f.(filter.HeadersOnly); !ok {
			x.bodyFilters = true
		}
	}
	req := &x.Ctx.Request
	hasBody := req.IsBodyStream() || len(req.Body()) > 0
	if n := req.Header.ContentLength(); n == 0 {
		hasBody = false
	}
	for i := 0; i < len(x.streams); i++ {
		s := x.streams[i]
		if !x.proceed(s.OnRequestHeaders(&x.Exchange, !hasBody)) {
			return false
		}
		if c, ok := s.(routeCacheClearer); ok && c.RouteCacheCleared() {
			x.chooseRouteAgain(ls)
		}
	}
	if !hasBody || !x.bodyFilters {
		return true
	}
	n := req.Header.ContentLength()
	if n >= 0 && n <= smallBody {
		body := &filter.Body{B: req.Body()}
		for _, s := range x.streams {
			if !x.proceedBody(s.OnRequestBody(&x.Exchange, body, true)) {
				return false
			}
		}
		req.SetBody(body.B)
		return true
	}
	// forward sends the filters' output in place of the body (outbound).
	x.reqFilter = &filterReader{x: x, src: x.requestBody(), request: true}
	return true
}

// responseHeaderFilters runs the response headers callbacks, last filter
// first.
func (x *exchange) responseHeaderFilters() bool {
	resp := &x.Ctx.Response
	x.setServer()
	end := !x.upBody.Active() && len(x.up.Body()) == 0 && len(resp.Body()) == 0
	for i := len(x.streams) - 1; i >= 0; i-- {
		if !x.proceed(x.streams[i].OnResponseHeaders(&x.Exchange, end)) {
			return false
		}
	}
	return true
}

// filterFixedBody runs the response body callbacks over a body that is
// already whole.
func (x *exchange) filterFixedBody(resp *fasthttp.Response) bool {
	if !x.bodyFilters || len(resp.Body()) == 0 {
		return true
	}
	body := &x.fixedBody
	body.B = resp.Body()
	defer func() { body.B = nil }()
	for i := len(x.streams) - 1; i >= 0; i-- {
		if !x.proceedBody(x.streams[i].OnResponseBody(&x.Exchange, body, true)) {
			return false
		}
	}
	resp.SetBody(body.B)
	return true
}

func (x *exchange) responseFilterReader(src io.Reader) *filterReader {
	return &filterReader{x: x, src: src}
}

// proceed acts on a headers callback's status.
func (x *exchange) proceed(st filter.Status) bool {
	switch st {
	case filter.Continue:
		return !x.Local()
	case filter.Pause, filter.Buffer:
		if !x.Wait(x.route.Timeout) {
			x.localError(fasthttp.StatusGatewayTimeout, filter.FlagFilterFailed, "filter_pause_timeout")
			return false
		}
		return !x.Local()
	}
	if !x.Local() {
		x.localError(fasthttp.StatusInternalServerError, filter.FlagFilterFailed, "filter_stopped")
	}
	return false
}

// proceedBody acts on a body callback's status for a whole body. Buffer
// has nothing more to wait for; Pause waits as after headers (a filter
// that decides on the body may ask a service first).
func (x *exchange) proceedBody(st filter.Status) bool {
	switch st {
	case filter.Continue, filter.Buffer:
		return !x.Local()
	case filter.Pause:
		return x.proceed(st)
	}
	if !x.Local() {
		x.localError(fasthttp.StatusInternalServerError, filter.FlagFilterFailed, "filter_stopped")
	}
	return false
}

// filterReader passes a streamed body through the body callbacks chunk by
// chunk. A filter that answers Buffer holds the data until it continues
// or the body ends; past maxBuffered the stream fails.
type filterReader struct {
	x       *exchange
	src     io.Reader
	request bool
	// held is what filters have buffered; out is what is ready to send.
	held []byte
	out  []byte
	buf  []byte
	eof  bool
}

var errBodyTooLarge = errors.New("body filter buffer limit exceeded")

func (f *filterReader) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.eof {
			return 0, io.EOF
		}
		if f.buf == nil {
			f.buf = make([]byte, chunkSize)
		}
		n, err := f.src.Read(f.buf)
		if err != nil && err != io.EOF {
			return 0, err
		}
		f.eof = err == io.EOF
		f.held = append(f.held, f.buf[:n]...)
		if n == 0 && !f.eof {
			continue
		}
		if err := f.run(); err != nil {
			return 0, err
		}
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// run hands the held data to the filters in order (request) or reverse
// order (response).
func (f *filterReader) run() error {
	x := f.x
	body := &filter.Body{B: f.held}
	n := len(x.streams)
	for k := 0; k < n; k++ {
		i := k
		if !f.request {
			i = n - 1 - k
		}
		var st filter.Status
		if f.request {
			st = x.streams[i].OnRequestBody(&x.Exchange, body, f.eof)
		} else {
			st = x.streams[i].OnResponseBody(&x.Exchange, body, f.eof)
		}
		switch st {
		case filter.Continue:
		case filter.Pause, filter.Buffer:
			if f.eof {
				if st == filter.Pause && (!x.Wait(x.route.Timeout) || x.Local()) {
					// The response may have begun: all that is left is
					// to end the stream.
					x.Flags |= filter.FlagFilterFailed
					return errors.New("a filter paused the end of a streamed body and did not resume it")
				}
				continue
			}
			if len(f.held) > maxBuffered {
				x.Flags |= filter.FlagFilterFailed
				return errBodyTooLarge
			}
			return nil // hold everything and read more
		default:
			if !x.Local() {
				x.Flags |= filter.FlagFilterFailed
			}
			return errors.New("a filter stopped the body")
		}
	}
	f.out = body.B
	f.held = nil
	return nil
}

// routeCacheClearer is a stream that can ask for the route to be chosen
// again: a Wasm filter's, after proxy_clear_route_cache or a change of the
// request headers in its request headers callback.
type routeCacheClearer interface{ RouteCacheCleared() bool }

// routeCacheCleared reports whether a filter asked for the route to be
// chosen again.
func (x *exchange) routeCacheCleared() bool {
	for _, s := range x.streams {
		if c, ok := s.(routeCacheClearer); ok && c.RouteCacheCleared() {
			return true
		}
	}
	return false
}

// chooseRouteAgain chooses the request's route again from its headers as
// they are now, as Envoy does after a filter clears the route cache. The
// chain's filters stay those of the first route (in Envoy the chain
// belongs to the listener, not the route), except what Envoy takes from
// the route that is finally chosen: its cluster, timeouts and policies,
// and its header mutations. So the first route's headers filter gives way
// to the new route's: one that has not run yet applies the new route's
// request mutations, and on the way back the response mutations are the
// new route's. A request that matches no route any more keeps the first.
func (x *exchange) chooseRouteAgain(ls *listenerSnap) {
	req := &x.Ctx.Request
	vh := ls.table.Find(req.Header.Host())
	if vh == nil {
		return
	}
	rt := vh.Match(req)
	if rt == nil || rt == x.route {
		return
	}
	x.route = rt
	x.VirtualHost, x.Route = vh.Name, rt.Name
	x.stats = rt.NoTarget()

	next := noHeaders // the new route's headers filter
	for _, f := range rt.Filters {
		if h, ok := f.(*native.Headers); ok {
			next = h
		}
	}
	for i, s := range x.streams {
		if _, ok := s.(*native.Headers); ok {
			x.streams[i] = next // in place: requestFilters walks x.streams
			return
		}
	}
	if next != noHeaders {
		x.streams = append(x.streams, next) // the default place: last
	}
}

// noHeaders stands in for the headers filter of a route that has none.
var noHeaders = &native.Headers{}
