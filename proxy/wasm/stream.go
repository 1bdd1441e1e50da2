package wasm

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// factory is one attachment of a plugin: a filter.Factory.
type factory struct {
	m     *Manager
	p     *plugin
	att   *attachment
	route string
	meta  *metaTables // route and cluster metadata; nil for none
}

var _ filter.Factory = (*factory)(nil)

func (f *factory) Name() string { return f.p.cfg.Name }

var streamPool = sync.Pool{New: func() any { return new(stream) }}

// NewStream pins the request to an instance of the plugin and creates its
// stream context there. A request that reaches a plugin closed by a reload
// is served by the plugin that replaced it.
func (f *factory) NewStream(x *filter.Exchange) (filter.Stream, error) {
	s, err := f.open(x, nil)
	if s == nil {
		return nil, err
	}
	return s, nil
}

// open pins a request, or a connection (nc set), to an instance of the
// plugin and creates its context there. It returns nil and the error
// NewStream answers when the plugin has no usable instance.
func (f *factory) open(x *filter.Exchange, nc *filter.NetConn) (*stream, error) {
	p := f.p
	if !p.acquire() {
		if next := f.m.successor(f); next != nil {
			return next.open(x, nc)
		}
		return nil, f.unavailable(errPluginClosed)
	}
	v := p.vm
	in := v.pick()
	if in == nil {
		// The pool's last instance broke: its replacement is being
		// built at once; wait for it rather than fail the request.
		in = v.waitInstance(startTimeout(v.callTimeout))
	}
	for in != nil {
		in.active.Add(1)
		if !in.retired.Load() {
			break
		}
		in.active.Add(-1) // the pool is retiring it: pick another
		in = v.pick()
	}
	if in == nil {
		p.release()
		return nil, f.unavailable(errBroken)
	}
	s := streamPool.Get().(*stream)
	s.f, s.p, s.in, s.x, s.net = f, p, in, x, nc

	in.mu.Lock()
	defer in.mu.Unlock()
	if in.broken || f.att.index >= len(in.roots) || in.roots[f.att.index] == 0 {
		s.failed, s.pendingFail = true, true
		return s, nil
	}
	s.root = in.roots[f.att.index]
	s.needs = allCallbacks
	if n := f.att.needs.Load(); n != 0 {
		s.needs = n
	}
	if nc != nil {
		s.needs = cbNetwork | cbLog
	}
	s.id = in.newID()
	in.streams[s.id] = s
	if nc == nil && in.fn.firstRequestHeaders != nil {
		// The request headers callback creates the context
		// (wasmgate_on_request_headers).
		s.uncreated = true
		return s, nil
	}
	if err := s.create(in); err != nil && p.cfg.FailurePolicy == config.FailOpen {
		return s, nil
	}
	return s, nil
}

// create creates the stream's context in the guest. A failure breaks the
// instance and fails the stream. Callers hold in.mu.
func (s *stream) create(in *instance) error {
	s.uncreated = false
	in.enterStream(s)
	_, err := in.invoke(in.fn.contextCreate, uint64(s.id), uint64(s.root))
	in.leave()
	if err != nil {
		in.vm.failed(in, err)
		s.failed, s.pendingFail = true, true
	}
	return err
}

// unavailable is the error for a plugin that has no usable instance.
func (f *factory) unavailable(cause error) error {
	f.m.metrics.failedRequests.WithLabelValues(f.p.cfg.Name, f.p.cfg.FailurePolicy).Inc()
	if f.p.cfg.FailurePolicy == config.FailOpen {
		return fmt.Errorf("wasm plugin %q: %v: %w", f.p.cfg.Name, cause, filter.ErrFailOpen)
	}
	return fmt.Errorf("wasm plugin %q: %w", f.p.cfg.Name, cause)
}

// stream is a request's context in a plugin instance: a filter.Stream.
// Its fields are guarded by the instance's lock, since HTTP call answers
// and broken instances reach it from other goroutines.
type stream struct {
	f  *factory
	p  *plugin
	in *instance
	x  *filter.Exchange
	// net is the connection of a network filter's context; nil for an
	// HTTP request's. x is then the connection's, with no request.
	net  *filter.NetConn
	id   uint32
	root uint32
	// needs is the set of callbacks the guest is called for; the others
	// continue without it (wasmgate_callbacks).
	needs uint32
	// uncreated: the guest has not seen the context yet, which its first
	// callback creates (a module with wasmgate_on_request_headers); ended:
	// the guest ended it in that callback and is called for it no more.
	uncreated, ended bool

	// body is the chunk of the current body callback.
	body     *filter.Body
	bodyType abi.BufferType
	bodyEdit bool
	// held are a connection's bytes, client's and upstream's, that the
	// guest's last data callback of their direction did not let go: it
	// may read and change them from other callbacks until it does, as
	// Envoy keeps them (s.net.Data guards them there).
	held [2]*filter.Body

	inCallback bool // a callback of this stream is running
	// routeCleared: the guest called proxy_clear_route_cache or changed
	// the request headers.
	routeCleared atomic.Bool
	paused       bool // the last callback paused; the proxy waits
	resumeNow    bool // continue was asked for during the callback
	closed       bool
	failed       bool // the plugin failed; later callbacks are skipped
	pendingFail  bool // the failure is still to be answered
	doneDeferred bool
	finished     bool // on_done, on_log and on_delete have run
}

var _ filter.Stream = (*stream)(nil)

// callback runs one stream callback and turns its action into a Status.
func (s *stream) callback(cb uint32, fn func(in *instance) (uint64, error), pauseStatus filter.Status) filter.Status {
	if s.failed {
		return s.skip()
	}
	if s.needs&cb == 0 || s.ended {
		return filter.Continue
	}
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.broken {
		return s.fail(errBroken)
	}
	if s.uncreated && cb != cbRequestHeaders {
		if err := s.create(in); err != nil {
			return s.fail(err)
		}
	}
	s.paused, s.resumeNow, s.inCallback = false, false, true
	in.enterStream(s)
	action, err := fn(in)
	in.leave()
	s.inCallback = false
	if err != nil {
		in.vm.failed(in, err)
		return s.fail(err)
	}
	if s.x.Local() || s.closed {
		return filter.Stop
	}
	if stops(cb, action) && !s.resumeNow {
		if pauseStatus == filter.Pause {
			s.paused = true
		}
		return pauseStatus
	}
	return filter.Continue
}

// endedContext is the bit of wasmgate_on_request_headers's result that
// says the guest ended the request's context in that call: the host calls
// nothing more for it, proxy_on_delete included.
const endedContext = 1 << 31

// stops reports whether a callback's result holds the stream, as Envoy
// reads the results of every SDK, not only the ABI's CONTINUE (0) and
// PAUSE (1): for headers, 1, 3 (StopAllIterationAndBuffer), 4
// (StopAllIterationAndWatermark) and larger stop, and 2
// (ContinueAndEndStream) goes on; for bodies and trailers, anything but 0
// stops (a body's StopIterationAndWatermark and StopIterationNoBuffer
// buffer here as StopIterationAndBuffer does).
func stops(cb uint32, action uint64) bool {
	switch a := abi.Action(uint32(action)); {
	case a == abi.ActionContinue:
		return false
	case cb == cbRequestHeaders || cb == cbResponseHeaders:
		return a != actionContinueAndEndStream
	}
	return true
}

// actionContinueAndEndStream is the C++ SDK's FilterHeadersStatus
// ContinueAndEndStream, which Envoy treats as CONTINUE.
const actionContinueAndEndStream abi.Action = 2

// skip answers a callback after the plugin failed.
func (s *stream) skip() filter.Status {
	if s.pendingFail {
		s.in.mu.Lock()
		defer s.in.mu.Unlock()
		return s.fail(errBroken)
	}
	return filter.Continue
}

// fail applies the failure policy to the request. Callers hold in.mu.
func (s *stream) fail(err error) filter.Status {
	first := !s.failed || s.pendingFail
	s.failed, s.pendingFail = true, false
	if first {
		s.p.m.metrics.failedRequests.WithLabelValues(s.p.cfg.Name, s.p.cfg.FailurePolicy).Inc()
	}
	if s.p.cfg.FailurePolicy == config.FailOpen {
		return filter.Continue
	}
	if s.net != nil {
		// As Envoy fails a connection: it closes.
		s.net.Control.Close()
		return filter.Stop
	}
	if first {
		// As Envoy fails the stream of a failed plugin: 503 (to a gRPC
		// request, UNAVAILABLE), details wasm_fail_stream.
		s.x.Flags |= filter.FlagFilterFailed
		s.x.SendLocalResponse(503, nil, nil, "wasm_fail_stream")
	}
	return filter.Stop
}

// instanceLost is called when the stream's instance breaks while the
// request still uses it. A request paused on the plugin is answered and
// resumed; others fail at their next callback. Callers hold in.mu.
func (s *stream) instanceLost(error) {
	if s.failed || s.finished {
		return
	}
	if s.paused && !s.inCallback {
		s.paused = false
		s.fail(errBroken)
		s.wake()
		return
	}
	s.pendingFail = true
	s.failed = true
}

// resume is proxy_continue_stream. Callers hold in.mu.
func (s *stream) resume() {
	if s.inCallback {
		s.resumeNow = true
		return
	}
	if s.paused {
		s.paused = false
		s.wake()
	}
}

// wake lets the proxy go on with a paused request or connection.
func (s *stream) wake() {
	if s.net != nil {
		s.net.Control.ResumeDownstream()
		return
	}
	s.x.Resume()
}

// close is proxy_close_stream: the request ends with 503 and the
// connection closes. A network filter's connection closes.
func (s *stream) close() {
	if s.closed {
		return
	}
	s.closed = true
	if s.net != nil {
		s.net.Control.Close()
		return
	}
	if !s.x.Local() {
		// What the proxy records: the client gets no answer.
		s.x.SendLocalResponse(503, nil, nil, "wasm_close_stream")
	}
	s.x.ResetStream()
	if !s.inCallback && s.paused {
		s.paused = false
		s.x.Resume()
	}
}

// sendLocal is proxy_send_local_response.
func (s *stream) sendLocal(code int, body []byte, headers [][2]string, details string) {
	if s.net != nil {
		return // as Envoy: a connection has no HTTP response to send
	}
	if details == "" {
		details = "wasm_local_response"
	}
	s.x.SendLocalResponse(code, body, headers, details)
	if !s.inCallback && s.paused {
		s.paused = false
		s.x.Resume()
	}
}

func eos(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// OnRequestHeaders implements filter.Stream.
func (s *stream) OnRequestHeaders(x *filter.Exchange, endOfStream bool) filter.Status {
	return s.callback(cbRequestHeaders, func(in *instance) (uint64, error) {
		n := in.fieldCount(abi.MapHTTPRequestHeaders)
		if !s.uncreated {
			return in.invoke(in.fn.requestHeaders, uint64(s.id), uint64(n), eos(endOfStream))
		}
		s.uncreated = false
		r, err := in.invoke(in.fn.firstRequestHeaders, uint64(s.id), uint64(s.root), uint64(n), eos(endOfStream))
		if err == nil && r&endedContext != 0 {
			s.ended = true
			r &^= endedContext
		}
		return r, err
	}, filter.Pause)
}

// OnRequestBody implements filter.Stream. A pause before the end of the
// body buffers it; a pause at its end holds the request like a pause from
// headers.
func (s *stream) OnRequestBody(x *filter.Exchange, body *filter.Body, endOfStream bool) filter.Status {
	return s.onBody(abi.BufferHTTPRequestBody, body, endOfStream)
}

// OnResponseBody implements filter.Stream.
func (s *stream) OnResponseBody(x *filter.Exchange, body *filter.Body, endOfStream bool) filter.Status {
	return s.onBody(abi.BufferHTTPResponseBody, body, endOfStream)
}

func (s *stream) onBody(t abi.BufferType, body *filter.Body, endOfStream bool) filter.Status {
	pause := filter.Buffer
	if endOfStream {
		pause = filter.Pause
	}
	fn, cb := s.in.fn.requestBody, uint32(cbRequestBody)
	if t == abi.BufferHTTPResponseBody {
		fn, cb = s.in.fn.responseBody, cbResponseBody
	}
	st := s.callback(cb, func(in *instance) (uint64, error) {
		s.body, s.bodyType, s.bodyEdit = body, t, false
		r, err := in.invoke(fn, uint64(s.id), uint64(len(body.B)), eos(endOfStream))
		s.body = nil
		if s.bodyEdit && endOfStream {
			if t == abi.BufferHTTPRequestBody {
				s.x.Ctx.Request.Header.SetContentLength(len(body.B))
			} else {
				s.x.Ctx.Response.Header.SetContentLength(len(body.B))
			}
		}
		return r, err
	}, pause)
	if st == filter.Buffer && len(body.B) > s.p.maxBody {
		s.failed = true
		code := 413
		if t == abi.BufferHTTPResponseBody {
			code = 500
		}
		s.x.SendLocalResponse(code, nil, nil, "wasm_body_too_large")
		return filter.Stop
	}
	return st
}

// OnRequestTrailers implements filter.Stream.
func (s *stream) OnRequestTrailers(x *filter.Exchange) filter.Status {
	return s.callback(cbRequestTrailers, func(in *instance) (uint64, error) {
		n := in.fieldCount(abi.MapHTTPRequestTrailers)
		return in.invoke(in.fn.requestTrailers, uint64(s.id), uint64(n))
	}, filter.Pause)
}

// OnResponseHeaders implements filter.Stream.
func (s *stream) OnResponseHeaders(x *filter.Exchange, endOfStream bool) filter.Status {
	return s.callback(cbResponseHeaders, func(in *instance) (uint64, error) {
		n := in.fieldCount(abi.MapHTTPResponseHeaders)
		return in.invoke(in.fn.responseHeaders, uint64(s.id), uint64(n), eos(endOfStream))
	}, filter.Pause)
}

// OnResponseTrailers implements filter.Stream.
func (s *stream) OnResponseTrailers(x *filter.Exchange) filter.Status {
	return s.callback(cbResponseTrailers, func(in *instance) (uint64, error) {
		n := in.fieldCount(abi.MapHTTPResponseTrailers)
		return in.invoke(in.fn.responseTrailers, uint64(s.id), uint64(n))
	}, filter.Pause)
}

// OnLog implements filter.Stream: proxy_on_done, then proxy_on_log.
func (s *stream) OnLog(x *filter.Exchange) {
	in := s.in
	in.mu.Lock()
	s.finish(false)
	in.mu.Unlock()
}

// finish runs on_done and on_log once, and on_delete when del is set.
// Callers hold in.mu.
func (s *stream) finish(del bool) {
	in := s.in
	if s.uncreated && !s.finished && s.id != 0 && !in.broken && !s.failed && s.needs&cbLog != 0 {
		// A context that never reached its first callback (an earlier
		// filter answered) still logs, as Envoy's does.
		_ = s.create(in)
	}
	if s.ended || s.uncreated {
		// The guest has no context to finish or delete.
		s.finished = true
		if del && s.id != 0 {
			delete(in.streams, s.id)
			in.cancelCalls(s.id)
		}
		return
	}
	if !s.finished && s.id != 0 && !in.broken && !s.failed && s.needs&cbLog != 0 {
		s.finished = true
		in.enterStream(s)
		r, err := in.invoke(in.fn.done, uint64(s.id))
		if err == nil {
			s.doneDeferred = in.fn.done != nil && uint32(r) == 0
			_, err = in.invoke(in.fn.log, uint64(s.id))
		}
		in.leave()
		if err != nil {
			in.vm.failed(in, err)
		}
	}
	s.finished = true
	if del && s.id != 0 {
		if !in.broken {
			in.enterStream(s)
			_, err := in.invoke(in.fn.delete_, uint64(s.id))
			in.leave()
			if err != nil {
				in.vm.failed(in, err)
			}
		}
		delete(in.streams, s.id)
		in.cancelCalls(s.id)
	}
}

// RouteCacheCleared reports whether the request's route must be chosen
// again, as Envoy does, because the guest cleared the route cache or
// changed the request headers. The proxy asks after the request headers
// callbacks, on the request's goroutine.
func (s *stream) RouteCacheCleared() bool { return s.routeCleared.Load() }

// Done implements filter.Stream: it deletes the stream context, unpins the
// instance and drops the request's reference to the plugin.
func (s *stream) Done(x *filter.Exchange) {
	in, p := s.in, s.p
	in.mu.Lock()
	s.finish(true)
	in.mu.Unlock()
	in.lastUsed.Store(monotonic())
	in.active.Add(-1)
	*s = stream{}
	streamPool.Put(s)
	p.release()
}

// buffer returns the buffer of type t as the effective context sees it.
func (in *instance) buffer(t abi.BufferType) ([]byte, *filter.Body, abi.Status) {
	switch t {
	case abi.BufferHTTPRequestBody, abi.BufferHTTPResponseBody:
		s := in.cur
		if s == nil || s.body == nil || s.bodyType != t {
			return nil, nil, abi.StatusNotFound
		}
		return s.body.B, s.body, abi.StatusOK
	case abi.BufferHTTPCallResponseBody:
		c := in.callResp
		if c == nil {
			return nil, nil, abi.StatusNotFound
		}
		if c.err != nil {
			return nil, nil, abi.StatusOK
		}
		return c.resp.Body(), nil, abi.StatusOK
	case abi.BufferVMConfiguration:
		if in.vmConfig == nil {
			return nil, nil, abi.StatusNotFound
		}
		return in.vmConfig, nil, abi.StatusOK
	case abi.BufferPluginConfiguration:
		if in.pluginConfig == nil {
			return nil, nil, abi.StatusNotFound
		}
		return in.pluginConfig, nil, abi.StatusOK
	case abi.BufferGRPCCallMessage:
		b, st := in.grpcMessage()
		return b, nil, st
	case abi.BufferDownstreamData, abi.BufferUpstreamData:
		// A connection's bytes, in the data callback of their direction,
		// or held by the guest (dataLock guards them then).
		s := in.cur
		if s == nil || s.net == nil {
			return nil, nil, abi.StatusNotFound
		}
		if s.body != nil && s.bodyType == t {
			return s.body.B, s.body, abi.StatusOK
		}
		if h := s.held[netDirection(t)]; h != nil {
			return h.B, h, abi.StatusOK
		}
		return nil, nil, abi.StatusNotFound
	case abi.BufferForeignFunctionArgs:
		return nil, nil, abi.StatusNotFound
	}
	return nil, nil, abi.StatusBadArgument
}

// dataLock is the lock of a connection's bytes (filter.NetConn Data)
// when t is one of its data buffers, or nil: the guest may reach bytes it
// holds from outside their callback, while the proxy gathers the next
// read into them.
func (in *instance) dataLock(t abi.BufferType) sync.Locker {
	if t != abi.BufferDownstreamData && t != abi.BufferUpstreamData {
		return nil
	}
	if s := in.cur; s != nil && s.net != nil {
		return s.net.Data
	}
	return nil
}

// netDirection is the index in stream.held of a connection's data buffer.
func netDirection(t abi.BufferType) int {
	if t == abi.BufferUpstreamData {
		return 1
	}
	return 0
}

func hostGetBufferBytes(in *instance, a []uint64) abi.Status {
	if l := in.dataLock(abi.BufferType(u32(a[0]))); l != nil {
		l.Lock()
		defer l.Unlock()
	}
	b, _, st := in.buffer(abi.BufferType(u32(a[0])))
	if st != abi.StatusOK {
		return st
	}
	// As Envoy: a range past the end is cut short, and one that starts
	// past it is empty, not an error.
	start, size := uint64(u32(a[1])), uint64(u32(a[2]))
	start = min(start, uint64(len(b)))
	end := min(start+size, uint64(len(b)))
	return in.copyOut(b[start:end], u32(a[3]), u32(a[4]))
}

func hostGetBufferStatus(in *instance, a []uint64) abi.Status {
	if l := in.dataLock(abi.BufferType(u32(a[0]))); l != nil {
		l.Lock()
		defer l.Unlock()
	}
	b, _, st := in.buffer(abi.BufferType(u32(a[0])))
	if st != abi.StatusOK {
		return st
	}
	if !in.mem.WriteUint32Le(u32(a[1]), uint32(len(b))) || !in.mem.WriteUint32Le(u32(a[2]), 0) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostSetBufferBytes(in *instance, a []uint64) abi.Status {
	t := abi.BufferType(u32(a[0]))
	if l := in.dataLock(t); l != nil {
		l.Lock()
		defer l.Unlock()
	}
	b, body, st := in.buffer(t)
	if st != abi.StatusOK {
		return st
	}
	if body == nil {
		return abi.StatusBadArgument
	}
	start := uint64(u32(a[1]))
	if start != 0 && start < uint64(len(b)) {
		// Envoy's buffers replace from the start or append at the end,
		// and refuse any other place.
		return abi.StatusBadArgument
	}
	v, ok := in.mem.Read(u32(a[3]), u32(a[4]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	body.B = splice(b, start, uint64(u32(a[2])), v)
	in.cur.bodyEdit = true
	return abi.StatusOK
}

// splice replaces size bytes of b from start with v. start and size are
// clamped to b, so (0, max) replaces b, (max, 0) appends and (0, 0)
// prepends. v must not alias b.
func splice(b []byte, start, size uint64, v []byte) []byte {
	n := uint64(len(b))
	start = min(start, n)
	end := n
	if size < n-start {
		end = start + size
	}
	newLen := start + uint64(len(v)) + (n - end)
	if newLen > uint64(cap(b)) {
		nb := make([]byte, newLen, newLen+newLen/4)
		copy(nb, b[:start])
		copy(nb[start:], v)
		copy(nb[start+uint64(len(v)):], b[end:])
		return nb
	}
	tail := n - end
	b = b[:newLen]
	copy(b[start+uint64(len(v)):], b[end:end+tail])
	copy(b[start:], v)
	return b
}
