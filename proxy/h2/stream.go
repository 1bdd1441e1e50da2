package h2

import (
	"bytes"
	"io"
	"sync"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// stream is the pooled state of one request stream. It is acquired when
// its HEADERS frame arrives and released once its handler has returned
// and its response is written (or, for a stream that never reached a
// handler, when it is dropped). Nothing may hold it, its RequestCtx or
// its request body after that.
type stream struct {
	ctx  fasthttp.RequestCtx
	body streamBody
	sc   *serverConn
	id   uint32
	head bool

	// Guarded by sc.mu.
	inMap          bool
	localClosed    bool // END_STREAM or RST_STREAM sent, or the client reset it
	remoteClosed   bool // END_STREAM or RST_STREAM received, or we reset it
	sendWindow     int64
	recvWindow     int64
	recvTarget     int32
	recvCredit     int64
	contentLength  int64
	received       int64
	buf            []byte // request body received, not yet read, from r on
	r              int
	eof            bool
	bodyErr        error
	bodyWaiting    bool
	expectContinue bool
	trailers       []byte // request trailers: name, 0, value, 0, ...
	cond           sync.Cond

	stalled bool   // waited for window for IdleTimeout
	timed   bool   // a stallTimer was set for this use
	gen     uint64 // counts the stream's uses, for stallTimer

	copyBuf []byte // the response body stream's read buffer
}

// streamBody is a stream's request body as the handler sees it. It has no
// Close: the handler wraps and replaces body streams, and fasthttp closes
// a stream it replaces, but the body is the stream's. An upstream that
// stops reading before the body's end calls AbortBody instead, which ends
// a read waiting for the client. It may be read by another goroutine than
// the handler's until the response has been written, not after.
type streamBody struct {
	st *stream
}

var streamPool = sync.Pool{New: func() any {
	st := &stream{}
	st.body.st = st
	return st
}}

const (
	copyBufferSize = 32 << 10
	// maxKeptBody bounds the request body buffer a pooled stream keeps.
	maxKeptBody = 64 << 10
)

func acquireStream(sc *serverConn, id uint32) *stream {
	st := streamPool.Get().(*stream)
	st.sc = sc
	st.id = id
	st.cond.L = &sc.mu
	st.contentLength = -1
	st.ctx.Init2(sc.conn, sc.srv.logger, false)
	return st
}

// release resets st and puts it back in the pool.
func (st *stream) release() {
	st.ctx.Request.Reset()
	st.ctx.Response.Reset()
	st.ctx.ResetUserValues()
	st.ctx.Hijack(nil)
	st.ctx.HijackSetNoResponse(false)
	if cap(st.buf) > maxKeptBody {
		st.buf = nil
	}
	st.buf, st.r = st.buf[:0], 0
	st.trailers = st.trailers[:0]
	st.id = 0
	st.head = false
	st.inMap, st.localClosed, st.remoteClosed = false, false, false
	st.sendWindow, st.recvWindow, st.recvTarget, st.recvCredit = 0, 0, 0, 0
	st.contentLength, st.received = -1, 0
	st.eof, st.bodyErr, st.bodyWaiting, st.expectContinue = false, nil, false, false
	if st.timed {
		// A stallTimer may fire late: it finds the stream released.
		st.sc.mu.Lock()
		st.gen++
		st.sc.mu.Unlock()
	}
	st.stalled, st.timed = false, false
	st.sc = nil
	st.cond.L = nil
	streamPool.Put(st)
}

// serve runs the handler and writes its response. It runs on a worker.
func (st *stream) serve() {
	sc := st.sc
	if st.callHandler() {
		st.respond()
	}
	sc.streamDone(st)
	st.release()
}

// callHandler runs the handler; a handler that panics has its stream
// reset rather than the process taken down.
func (st *stream) callHandler() (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			st.sc.srv.logger.Printf("http2: panic serving stream %d: %v", st.id, r)
			st.sc.mu.Lock()
			st.sc.resetLocked(st, http2.ErrCodeInternal)
			st.sc.mu.Unlock()
			ok = false
		}
	}()
	st.sc.srv.handler(&st.ctx)
	if st.ctx.Hijacked() {
		// The handler ended the request without an answer
		// (filter.Exchange.ResetStream): the stream is reset, as Envoy
		// resets a stream a filter closes.
		st.sc.mu.Lock()
		st.sc.resetLocked(st, http2.ErrCodeNo)
		st.sc.mu.Unlock()
		return false
	}
	return true
}

// respond writes the handler's response: headers, the body (read from a
// body stream and sent as each read returns) and trailers.
func (st *stream) respond() {
	sc := st.sc
	resp := &st.ctx.Response
	status := resp.StatusCode()
	if status < 200 || status > 999 {
		status = 500
	}
	streaming := resp.IsBodyStream()
	noBody := st.head || status == 204 || status == 304
	var body []byte
	if !streaming {
		body = resp.Body()
	}
	cl := -1
	switch {
	case status == 204 || status == 304:
	case streaming:
		cl = resp.Header.ContentLength()
	case st.head && len(body) == 0:
		if n := resp.Header.ContentLength(); n > 0 {
			cl = n
		}
	default:
		cl = len(body)
	}
	trailers := hasTrailers(&resp.Header)
	sendBody := !noBody && (streaming || len(body) > 0)
	end := !sendBody && !trailers

	sc.mu.Lock()
	if st.localClosed || sc.closing {
		sc.mu.Unlock()
		if streaming {
			_ = resp.CloseBodyStream()
		}
		return
	}
	if !streaming || !sendBody {
		sc.writeHeadersLocked(st, status, &resp.Header, cl, trailers, end)
		if !end && sendBody {
			if sc.writeDataLocked(st, body, !trailers) == nil && trailers {
				sc.writeTrailersLocked(st, &resp.Header)
			}
		} else if !end {
			sc.writeTrailersLocked(st, &resp.Header)
		}
		sc.mu.Unlock()
		if streaming {
			_ = resp.CloseBodyStream()
		}
		return
	}
	sc.mu.Unlock()

	// A body stream: each read goes out as it returns, so streaming
	// upstreams (gRPC, server-sent events) reach the client at once. The
	// header block waits for the first read, as net/http's would: a body
	// that ends at once makes a response of headers alone, which is how
	// gRPC sends a status without a message ("trailers-only").
	if st.copyBuf == nil {
		st.copyBuf = make([]byte, copyBufferSize)
	}
	src := resp.BodyStream()
	headers := false
	var err error
	for {
		var n int
		n, err = src.Read(st.copyBuf)
		if n == 0 && err == nil {
			continue
		}
		sc.mu.Lock()
		if !headers && (n > 0 || err != io.EOF) {
			headers = true
			if !st.localClosed && !sc.closing {
				sc.writeHeadersLocked(st, status, &resp.Header, cl, false, false)
			}
		}
		var werr error
		if n > 0 {
			werr = sc.writeDataLocked(st, st.copyBuf[:n], false)
		}
		sc.mu.Unlock()
		if werr != nil || err != nil {
			break // the end, a failure, or the client reset the stream or went away
		}
	}
	sc.mu.Lock()
	switch {
	case st.localClosed || sc.closing:
	case err != io.EOF:
		// The upstream broke off mid-body: the client sees a reset
		// stream rather than a clean end.
		sc.resetLocked(st, http2.ErrCodeInternal)
	case !headers:
		// Headers alone, or headers and trailers.
		tr := hasTrailers(&resp.Header)
		sc.writeHeadersLocked(st, status, &resp.Header, cl, tr, !tr)
		if tr {
			sc.writeTrailersLocked(st, &resp.Header)
		}
	case hasTrailers(&resp.Header):
		sc.writeTrailersLocked(st, &resp.Header)
	default:
		_ = sc.writeDataLocked(st, nil, true)
	}
	sc.mu.Unlock()
	_ = resp.CloseBodyStream()
}

func hasTrailers(h *fasthttp.ResponseHeader) bool {
	for range h.Trailers() {
		return true
	}
	return false
}

func isTrailer(h *fasthttp.ResponseHeader, k []byte) bool {
	for t := range h.Trailers() {
		if bytes.EqualFold(t, k) {
			return true
		}
	}
	return false
}

// endLocalLocked records that st's response has ended. A client still
// sending its request is asked to stop (RFC 9113, 8.1).
func (sc *serverConn) endLocalLocked(st *stream) {
	st.localClosed = true
	if !st.remoteClosed {
		sc.appendRST(st.id, http2.ErrCodeNo)
		st.remoteClosed = true
		sc.abortLocked(st, errResponseDone)
	}
	sc.removeLocked(st)
}

// Read reads the request body as the client sends it. At its end the
// request trailers, if any, are added to the request header.
func (b *streamBody) Read(p []byte) (int, error) {
	st := b.st
	sc := st.sc
	sc.mu.Lock()
	if st.expectContinue {
		st.expectContinue = false
		if len(st.buf) == st.r && !st.eof && st.bodyErr == nil && !st.localClosed && !sc.closing {
			sc.writeContinueLocked(st)
		}
	}
	for st.r == len(st.buf) && !st.eof && st.bodyErr == nil {
		st.bodyWaiting = true
		st.cond.Wait()
		st.bodyWaiting = false
	}
	if st.bodyErr != nil {
		err := st.bodyErr
		sc.mu.Unlock()
		return 0, err
	}
	if st.r == len(st.buf) {
		// The end: the trailers go to the request header once.
		trailers := st.trailers
		st.trailers = st.trailers[:0]
		sc.mu.Unlock()
		if len(trailers) > 0 {
			addTrailers(&st.ctx.Request.Header, trailers)
		}
		return 0, io.EOF
	}
	n := copy(p, st.buf[st.r:])
	st.r += n
	if st.r == len(st.buf) {
		st.buf, st.r = st.buf[:0], 0
	} else if st.r > cap(st.buf)/2 {
		m := copy(st.buf, st.buf[st.r:])
		st.buf, st.r = st.buf[:m], 0
	}
	sc.creditLocked(st, int64(n))
	sc.mu.Unlock()
	return n, nil
}

// AbortBody ends the body early: reads return an error from now on.
func (b *streamBody) AbortBody() {
	st := b.st
	sc := st.sc
	sc.mu.Lock()
	if st.bodyErr == nil && !(st.eof && st.r == len(st.buf)) {
		sc.abortLocked(st, errBodyAborted)
	}
	sc.mu.Unlock()
}

func addTrailers(h *fasthttp.RequestHeader, kv []byte) {
	for len(kv) > 0 {
		i := bytes.IndexByte(kv, 0)
		name := kv[:i]
		kv = kv[i+1:]
		j := bytes.IndexByte(kv, 0)
		value := kv[:j]
		kv = kv[j+1:]
		if h.AddTrailerBytes(name) == nil {
			h.AddBytesKV(name, value)
		}
	}
}
