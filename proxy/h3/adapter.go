// The Adapter serves requests that arrive through net/http's interfaces
// (quic-go's http3 server) with the fasthttp.RequestHandler that serves
// HTTP/1.1 and HTTP/2.

package h3

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/internal/headerval"
)

// Adapter serves requests that arrive through net/http's interfaces with a
// fasthttp.RequestHandler. It is safe for concurrent use.
type Adapter struct {
	handler  fasthttp.RequestHandler
	protocol string
	logger   fasthttp.Logger
}

// NewAdapter returns an adapter that hands requests to h. protocol ("HTTP/2"
// or "HTTP/3") becomes the protocol of the fasthttp request, where the
// handler reads it.
func NewAdapter(h fasthttp.RequestHandler, protocol string, logger fasthttp.Logger) *Adapter {
	if logger == nil {
		logger = nopLogger{}
	}
	return &Adapter{handler: h, protocol: protocol, logger: logger}
}

// adapterStream is the pooled state of one request.
type adapterStream struct {
	ctx  fasthttp.RequestCtx
	body requestBody
	vals []string // backing for single-valued response headers
	buf  []byte
	peek [4 << 10]byte // the first bytes of a body of unknown length
}

// requestBody is the request body as the handler sees it. It has no Close:
// the handler wraps and replaces body streams, and fasthttp closes a
// stream it replaces, but the body is net/http's to close. An upstream
// that stops reading before the body's end calls AbortBody instead, which
// ends a read waiting for the client.
type requestBody struct {
	r    io.ReadCloser
	head []byte // read ahead of the handler, returned first
}

func (b *requestBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	return b.r.Read(p)
}

// AbortBody ends the body early: reads return an error from now on.
func (b *requestBody) AbortBody() { _ = b.r.Close() }

const adapterBufferSize = 32 << 10

var adapterPool = sync.Pool{New: func() any {
	return &adapterStream{buf: make([]byte, adapterBufferSize)}
}}

// Serve serves r, which arrived on conn, and writes the response to w.
// conn is what the handler sees as ctx.Conn(): its addresses, its TLS
// state and whatever else the handler asks of it. r.Body may be read by the
// handler's upstream after Serve returns; net/http's servers allow that.
func (a *Adapter) Serve(conn net.Conn, w http.ResponseWriter, r *http.Request) {
	st := adapterPool.Get().(*adapterStream)
	ctx := &st.ctx
	ctx.Init2(conn, a.logger, false)
	a.fillRequest(&ctx.Request, r, st)
	a.handler(ctx)
	// A handler that ended the request without an answer
	// (filter.Exchange.ResetStream) has the stream cancelled.
	reset := ctx.Hijacked()
	ok := reset || writeResponse(w, &ctx.Response, r.Method == http.MethodHead, st)
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.ResetUserValues()
	ctx.Hijack(nil)
	ctx.HijackSetNoResponse(false)
	st.body = requestBody{}
	adapterPool.Put(st)
	if !ok || reset {
		// The upstream broke off mid-body, or the request was reset: let
		// the client see a reset stream rather than a clean end.
		panic(http.ErrAbortHandler)
	}
}

func (a *Adapter) fillRequest(req *fasthttp.Request, r *http.Request, st *adapterStream) {
	h := &req.Header
	h.SetMethod(r.Method)
	h.SetRequestURI(r.RequestURI)
	h.SetProtocol(a.protocol)
	h.SetHost(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	// A request without a body keeps the Content-Length its client sent,
	// if any: filters see the headers it sent, and its length is 0 all
	// the same.
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	n := int(r.ContentLength)
	body := &st.body
	body.r = r.Body
	if n < 0 {
		n = -1
		if r.Method != http.MethodConnect && len(r.Header["Expect"]) == 0 {
			// A request without a body ends its stream with its headers,
			// which net/http's interface does not show: the body is there
			// whatever the request. Read it once, so that a GET is not
			// forwarded with an empty chunked body. A body that does come
			// waits for its first bytes, which are then passed on first.
			k, err := readSome(r.Body, st.peek[:])
			if k == 0 && err == io.EOF {
				return
			}
			body.head = st.peek[:k]
			switch {
			case err == io.EOF:
				// The whole body, but of a length the client did not
				// send: it goes chunked, as a body still coming does.
				body.r = ended
			case err != nil:
				body.r = errBody{err}
			}
		}
	}
	req.SetBodyStream(body, n)
}

// readSome reads into p until it has at least a byte or an error.
func readSome(r io.Reader, p []byte) (int, error) {
	for {
		n, err := r.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// errBody is a body whose reads fail with err, after what was read before it.
type errBody struct{ err error }

func (b errBody) Read([]byte) (int, error) { return 0, b.err }
func (b errBody) Close() error             { return nil }

// ended is the rest of a body read to its end.
var ended io.ReadCloser = errBody{io.EOF}

// writeResponse copies resp into w: status, headers, the body (streamed and
// flushed as it comes when resp has a body stream) and trailers. It reports
// false when the body stream failed before its end.
func writeResponse(w http.ResponseWriter, resp *fasthttp.Response, head bool, st *adapterStream) bool {
	hdr := w.Header()
	vals := st.vals[:0]
	for k, v := range resp.Header.All() {
		name, skip := headerName(k)
		if skip {
			continue
		}
		if prior, ok := hdr[name]; ok {
			hdr[name] = append(prior[:len(prior):len(prior)], value(v))
			continue
		}
		vals = append(vals, value(v))
		hdr[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	stream := resp.IsBodyStream()
	n := -1
	if stream {
		n = resp.Header.ContentLength()
	} else if body := resp.Body(); len(body) > 0 || !head {
		n = len(body)
	}
	if n >= 0 {
		vals = append(vals, strconv.Itoa(n))
		hdr["Content-Length"] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	st.vals = vals
	w.WriteHeader(resp.StatusCode())
	if stream {
		ok := copyBody(w, resp, st.buf)
		_ = resp.CloseBodyStream()
		if !ok {
			return false
		}
	} else if !head {
		_, _ = w.Write(resp.Body())
	}
	for k := range resp.Header.Trailers() {
		v := resp.Header.PeekBytes(k)
		if len(v) == 0 {
			continue
		}
		hdr[http.TrailerPrefix+http.CanonicalHeaderKey(string(k))] = []string{string(v)}
	}
	return true
}

// copyBody streams the body, flushing after every read so a streaming
// upstream (gRPC, server-sent events) reaches the client at once. It
// reports false when the body failed before its end; a client that went
// away is not the body's failure.
func copyBody(w http.ResponseWriter, resp *fasthttp.Response, buf []byte) bool {
	body := resp.BodyStream()
	flusher, _ := w.(http.Flusher)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return true
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return err == io.EOF
		}
	}
}

// headerName returns the canonical name of a response header for net/http,
// without allocating for common names, and whether the header must not be
// sent: connection-specific headers do not exist in HTTP/2 and HTTP/3, and
// the length and trailers are set by writeResponse.
func headerName(k []byte) (string, bool) {
	switch len(k) {
	case 4:
		if headerval.EqualFold(k, "date") {
			return "Date", false
		}
	case 6:
		if headerval.EqualFold(k, "server") {
			return "Server", false
		}
	case 7:
		if headerval.EqualFold(k, "trailer") || headerval.EqualFold(k, "upgrade") {
			return "", true
		}
		if headerval.EqualFold(k, "alt-svc") {
			return "Alt-Svc", false
		}
	case 10:
		if headerval.EqualFold(k, "connection") || headerval.EqualFold(k, "keep-alive") {
			return "", true
		}
		if headerval.EqualFold(k, "set-cookie") {
			return "Set-Cookie", false
		}
	case 12:
		if headerval.EqualFold(k, "content-type") {
			return "Content-Type", false
		}
		if headerval.EqualFold(k, "x-request-id") {
			return "X-Request-Id", false
		}
	case 13:
		if headerval.EqualFold(k, "cache-control") {
			return "Cache-Control", false
		}
		if headerval.EqualFold(k, "last-modified") {
			return "Last-Modified", false
		}
	case 14:
		if headerval.EqualFold(k, "content-length") {
			return "", true
		}
	case 16:
		if headerval.EqualFold(k, "proxy-connection") {
			return "", true
		}
		if headerval.EqualFold(k, "content-encoding") {
			return "Content-Encoding", false
		}
	case 17:
		if headerval.EqualFold(k, "transfer-encoding") {
			return "", true
		}
	}
	return http.CanonicalHeaderKey(string(k)), false
}

// value returns v as a string, without allocating for common values.
func value(v []byte) string {
	if s, ok := headerval.Common(v); ok {
		return s
	}
	return string(v)
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
