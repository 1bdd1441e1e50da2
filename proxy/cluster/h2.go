package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// h2Client sends requests to one endpoint over HTTP/2: h2 over TLS, or
// h2c with prior knowledge. Streams share its connections, which its
// transport opens as needed (h2conn.go).
type h2Client struct {
	tr     *h2Transport
	scheme string
	addr   string
	conns  atomic.Int64
}

func newH2Client(k poolKey, tlsConf *tls.Config) *h2Client {
	c := &h2Client{addr: k.addr, scheme: "http"}
	c.tr = &h2Transport{
		addr:            k.addr,
		dialer:          net.Dialer{Timeout: k.connectTimeout},
		connectTimeout:  k.connectTimeout,
		idleTimeout:     k.idleTimeout,
		sendPingTimeout: h2SendPingTimeout,
		pingTimeout:     h2PingTimeout,
		pingInterval:    h2PingInterval,
		// The connection's one reader waits for frames most of its life:
		// sockio's reads save it the read that finds nothing before each
		// wait.
		wrap: func(raw net.Conn) net.Conn { return c.track(sockio.Wrap(raw)) },
	}
	if tlsConf != nil {
		c.scheme = "https"
		conf := tlsConf.Clone()
		conf.NextProtos = []string{"h2"}
		if conf.ServerName == "" {
			// The endpoint's host, as net/http names it.
			conf.ServerName = k.addr
			if host, _, err := net.SplitHostPort(k.addr); err == nil {
				conf.ServerName = host
			}
		}
		c.tr.tlsConf = conf
	}
	return c
}

func (c *h2Client) track(conn net.Conn) net.Conn {
	c.conns.Add(1)
	return &h2CountedConn{Conn: conn, n: &c.conns}
}

// h2CountedConn counts itself out of its client's connections once
// closed.
type h2CountedConn struct {
	net.Conn
	n    *atomic.Int64
	once sync.Once
}

func (c *h2CountedConn) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.Conn.Close()
}

// do sends req and reads the response headers into resp. A body is left
// streaming in s, and the response's trailers are added to resp.Header as
// trailers when it ends; closing s ends the exchange, resetting the stream
// if it is still open. A body that had wholly arrived with the headers,
// without trailers, is read into resp instead. timeout bounds the
// exchange up to the response headers: a gRPC stream lives as long as its
// peers keep it.
//
// A request the endpoint did not process (GOAWAY, REFUSED_STREAM) is sent
// once more, on another connection, when its body is not a stream.
func (c *h2Client) do(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) error {
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		left := timeout
		if attempt > 0 {
			if left = time.Until(deadline); left <= 0 {
				return fasthttp.ErrTimeout
			}
		}
		err := c.try(req, resp, left, s)
		if err == nil || attempt > 0 || req.IsBodyStream() || !errors.Is(err, errH2Unsent) {
			return err
		}
	}
}

func (c *h2Client) try(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) error {
	x := h2Streams.Get().(*h2Stream)
	x.resp = resp
	var mem []byte
	length := int64(0)
	if req.IsBodyStream() {
		x.body.src = req.BodyStream()
		length = int64(req.Header.ContentLength())
		if length < 0 {
			length = -1
		}
	} else {
		mem = req.Body()
		length = int64(len(mem))
	}
	if err := c.open(req, x, mem, length); err != nil {
		return err
	}
	cc := x.cc
	if x.timer == nil {
		x.timer = time.AfterFunc(timeout, x.expire)
	} else {
		x.timer.Reset(timeout)
	}
	cc.mu.Lock()
	for !x.gotHeaders && x.err == nil {
		x.cond.Wait()
	}
	stopped := x.timer.Stop()
	if !x.gotHeaders {
		err := x.err
		cc.mu.Unlock()
		x.finish()
		return err
	}
	ended := x.remoteEnded && len(x.trailer) == 0
	body := x.buf[x.off:]
	cc.mu.Unlock()

	x.copyHeaders()
	if ended {
		// The whole response is here: no stream to keep.
		if len(body) == 0 {
			if !x.head {
				// The answer to HEAD keeps the length it names, that of
				// the content a GET would have.
				resp.Header.SetContentLength(0)
			}
		} else if len(body) <= SmallBody {
			resp.SetBody(body)
		} else {
			ended = false
		}
	}
	if ended {
		x.finish()
		if stopped && !x.sending {
			// Nothing refers to x any more: no timer to fire, no body
			// sender, and the caller has no stream.
			x.recycle()
		}
		return nil
	}
	resp.SetBodyStream(x, int(x.expect))
	*s = Body{resp: resp, active: true}
	return nil
}

// stream opens an exchange whose request body is read from body as the
// transport sends it, for gRPC calls that filters make
// (filter.StreamCluster). Cancelling ctx ends the exchange.
func (c *h2Client) stream(ctx context.Context, req *fasthttp.Request, body io.Reader, resp *fasthttp.Response) (io.ReadCloser, error) {
	x := &h2Stream{resp: resp, ctx: ctx}
	x.body.src = body
	if cl, ok := body.(io.Closer); ok {
		x.closeBody = cl
	}
	length := int64(-1)
	if br, ok := body.(*bytes.Reader); ok {
		length = int64(br.Len())
		if length == 0 {
			x.body.src = nil
		}
	}
	if err := c.open(req, x, nil, length); err != nil {
		x.closeSource()
		return nil, err
	}
	// A context already done runs cancel at once, on a goroutine of its
	// own: stopCtx is set under mu, where finish reads it.
	stop := context.AfterFunc(ctx, x.cancel)
	cc := x.cc
	cc.mu.Lock()
	x.stopCtx = stop
	for !x.gotHeaders && x.err == nil {
		x.cond.Wait()
	}
	if !x.gotHeaders {
		err := x.err
		cc.mu.Unlock()
		x.finish()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	empty := x.remoteEnded && x.received == 0 && len(x.trailer) == 0
	cc.mu.Unlock()
	x.copyHeaders()
	if empty {
		x.finish()
		return http.NoBody, nil
	}
	return x, nil
}

// call sends a request made by a filter and reads the whole response.
func (c *h2Client) call(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	var s Body
	if err := c.do(req, resp, timeout, &s); err != nil {
		return err
	}
	if !s.Active() {
		return nil
	}
	body, err := io.ReadAll(&s)
	_ = s.Close()
	if err != nil {
		return err
	}
	resp.SetBody(body)
	return nil
}

// open opens a stream for req on a connection with one free and sends
// its headers, with mem when the body is in memory and fits the peer's
// windows. Any other body is sent by a goroutine of its own from x.body.
// length is the body's, -1 when unknown.
func (c *h2Client) open(req *fasthttp.Request, x *h2Stream, mem []byte, length int64) error {
	var cc *h2Conn
	for {
		var err error
		if cc, err = c.tr.reserve(); err != nil {
			return err
		}
		cc.mu.Lock()
		if cc.err == nil && !cc.goneAway {
			break
		}
		// The connection ended, or was told to go away, since the stream
		// was reserved: nothing was sent, another connection is tried.
		cc.unreserveLocked()
		cc.mu.Unlock()
	}
	x.cc = cc
	x.cond.L = &cc.mu
	authority := req.Header.Host()
	if len(authority) == 0 {
		authority = s2b(c.addr)
	}
	if cc.maxHeaderList > 0 && requestHeaderSize(req, authority) > uint64(cc.maxHeaderList) {
		cc.unreserveLocked()
		cc.mu.Unlock()
		return errH2HeadersTooLarge
	}
	cc.openLocked(x)
	x.head = req.Header.IsHead()
	inline := len(mem) > 0 && int64(len(mem)) <= min(x.sendWindow, cc.sendWindow)
	if len(mem) > 0 && !inline {
		x.body.src = bytes.NewReader(mem)
	}
	endStream := x.body.src == nil && !inline
	block := cc.encodeLocked(req, c.scheme, authority, length)
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(cc.maxFrame))]
		block = block[len(frag):]
		if first {
			cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: x.id, BlockFragment: frag,
				EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			cc.fr.WriteContinuation(x.id, len(block) == 0, frag)
		}
	}
	if inline {
		x.sendWindow -= int64(len(mem))
		cc.sendWindow -= int64(len(mem))
		for len(mem) > 0 {
			n := min(len(mem), int(cc.maxFrame))
			cc.fr.WriteData(x.id, n == len(mem), mem[:n])
			mem = mem[n:]
		}
	}
	if x.body.src == nil {
		x.localEnded = true
	}
	cc.flushSoonLocked()
	cc.mu.Unlock()
	if x.body.src != nil {
		x.sending = true
		go x.sendBody(length)
	}
	return nil
}

var errH2HeadersTooLarge = errors.New("http2: request headers exceed the endpoint's SETTINGS_MAX_HEADER_LIST_SIZE")

// requestHeaderSize is the size of req's header list as HTTP/2 counts it
// (RFC 9113, 6.5.2), near enough to hold it to the peer's limit.
func requestHeaderSize(req *fasthttp.Request, authority []byte) uint64 {
	n := uint64(len(req.Header.Method())+len(req.RequestURI())+len(authority)) + 4*32 + 20
	for k, v := range req.Header.All() {
		n += uint64(len(k)+len(v)) + 32
	}
	return n
}

// encodeLocked encodes req's header block into cc.hbuf and returns it.
// Names are lowercased, hop-by-hop fields dropped and :authority is
// authority.
func (cc *h2Conn) encodeLocked(req *fasthttp.Request, scheme string, authority []byte, length int64) []byte {
	cc.hbuf.Reset()
	method := req.Header.Method()
	cc.fieldLocked(strMethod, method)
	cc.henc.WriteField(hpack.HeaderField{Name: ":scheme", Value: scheme})
	cc.fieldLocked(strAuthority, authority)
	path := req.RequestURI()
	if len(path) == 0 {
		path = strSlash
	}
	cc.fieldLocked(strPath, path)
	grpc := false
	for k, v := range req.Header.All() {
		switch {
		case hopByHop(k):
			continue
		case len(k) == 12 && bytes.EqualFold(k, []byte("content-type")):
			grpc = bytes.HasPrefix(v, []byte("application/grpc"))
		}
		cc.fieldLocked(cc.lowerName(k), v)
	}
	if grpc {
		// gRPC needs trailers, and says so.
		cc.henc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	if length > 0 || length == 0 && (string(method) == "POST" || string(method) == "PUT" || string(method) == "PATCH") {
		cc.num = strconv.AppendInt(cc.num[:0], length, 10)
		cc.fieldLocked(strContentLength, cc.num)
	}
	return cc.hbuf.Bytes()
}

var (
	strSlash         = []byte("/")
	strMethod        = []byte(":method")
	strAuthority     = []byte(":authority")
	strPath          = []byte(":path")
	strContentLength = []byte("content-length")
)

// h2Field is what a connection remembers of a request field name: its
// string, the value it carried last, and the string of the value it
// carries as an index.
type h2Field struct {
	name  string
	last  []byte
	seen  bool
	value string
}

// fieldLocked encodes one field; name is lowercase. A value is indexed
// in HPACK's dynamic table from the second request in a row that
// carries it: a stable value (user-agent, x-forwarded-proto) is then sent
// as an index, while a value that changes with each request (x-request-id)
// goes as a literal that takes no place in either peer's table and evicts
// nothing. The strings are kept per connection, for the encoder's table
// keeps them too; a literal is encoded without making a string of it.
func (cc *h2Conn) fieldLocked(name, value []byte) {
	f := cc.fields[string(name)]
	if f == nil {
		if len(cc.fields) >= h2MaxFields {
			cc.literalLocked(string(name), value)
			return
		}
		f = &h2Field{name: string(name)}
		cc.fields[f.name] = f
	}
	if f.seen && bytes.Equal(f.last, value) {
		if f.value != string(value) {
			f.value = string(value)
		}
		cc.henc.WriteField(hpack.HeaderField{Name: f.name, Value: f.value})
		return
	}
	f.seen = len(value) <= h2MaxFieldLen
	if f.seen {
		f.last = append(f.last[:0], value...)
	}
	cc.literalLocked(f.name, value)
}

// literalLocked encodes a field as a literal never indexed. Its value is
// copied to a buffer of cc's, so that value does not escape: the encoder
// keeps nothing of a field it does not index, but the compiler cannot
// know that.
func (cc *h2Conn) literalLocked(name string, value []byte) {
	cc.lit = append(cc.lit[:0], value...)
	cc.henc.WriteField(hpack.HeaderField{Name: name, Value: b2s(cc.lit), Sensitive: true})
}

// lowerName returns name in lowercase, in a buffer of cc's when it must
// change.
func (cc *h2Conn) lowerName(name []byte) []byte {
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			cc.lower = append(cc.lower[:0], name...)
			for j := i; j < len(name); j++ {
				if c := name[j]; 'A' <= c && c <= 'Z' {
					cc.lower[j] = c + 'a' - 'A'
				}
			}
			return cc.lower
		}
	}
	return name
}

// hopByHop reports whether a request header describes the downstream
// connection (or is carried otherwise in HTTP/2) and is not forwarded.
func hopByHop(k []byte) bool {
	switch len(k) {
	case 2:
		return bytes.EqualFold(k, []byte("te"))
	case 4:
		return bytes.EqualFold(k, []byte("host"))
	case 7:
		return bytes.EqualFold(k, []byte("upgrade"))
	case 10:
		return bytes.EqualFold(k, []byte("connection")) || bytes.EqualFold(k, []byte("keep-alive"))
	case 14:
		return bytes.EqualFold(k, []byte("content-length"))
	case 16:
		return bytes.EqualFold(k, []byte("proxy-connection"))
	case 17:
		return bytes.EqualFold(k, []byte("transfer-encoding"))
	}
	return false
}

// h2Stream is one request in flight on an HTTP/2 connection; it is the
// response's body stream. Its state is guarded by its connection's mu.
type h2Stream struct {
	cc   *h2Conn
	id   uint32
	cond sync.Cond // the caller waits on it for headers and data

	sendWindow int64
	recvWindow int64
	// unacked is what the caller read, and the padding that came, since
	// the stream's last WINDOW_UPDATE.
	unacked  int64
	buf      []byte // received, unread
	off      int
	received int64
	expect   int64 // content-length, -1 when unknown

	head        bool // the request's method is HEAD
	gotHeaders  bool
	status      int
	header      []hpack.HeaderField
	trailer     []hpack.HeaderField
	remoteEnded bool // the response ended
	localEnded  bool // the request ended
	removed     bool // no longer open on the connection
	wakePending bool // in the connection's wake list
	err         error

	// The caller's.
	timer         *time.Timer // do's wait for the response headers
	sending       bool        // a goroutine sends the request body
	resp          *fasthttp.Response
	body          h2RequestBody
	closeBody     io.Closer // a filter's body, closed when the exchange ends
	bodyClosed    atomic.Bool
	ctx           context.Context
	stopCtx       func() bool // set and read under the connection's mu
	trailersAdded bool
	done          atomic.Bool
}

var errH2Closed = errors.New("http2: the exchange was closed")

// h2Streams holds streams for do's exchanges, with their timer and read
// buffer.
var h2Streams = sync.Pool{New: func() any { return new(h2Stream) }}

// recycle puts x back in h2Streams. Only do's exchange that ended whole
// within do recycles its stream: one that a caller reads, or whose timer
// fired or whose body a goroutine sends, is left to the collector.
func (x *h2Stream) recycle() {
	buf := x.buf[:0]
	if cap(buf) > 16<<10 {
		buf = nil
	}
	header, trailer := x.header[:0], x.trailer[:0]
	if cap(header) > 64 {
		header = nil
	}
	if cap(trailer) > 64 {
		trailer = nil
	}
	clear(header[:cap(header)])
	clear(trailer[:cap(trailer)])
	*x = h2Stream{timer: x.timer, buf: buf, header: header, trailer: trailer}
	h2Streams.Put(x)
}

// failLocked fails the stream with err, unless its response was complete:
// a reset after it only stops the request body (RFC 9113, 8.1).
func (x *h2Stream) failLocked(err error) {
	if x.err == nil && !x.remoteEnded {
		x.err = err
	}
	x.cond.Broadcast()
}

// expire ends the wait for the response headers.
func (x *h2Stream) expire() {
	x.cc.mu.Lock()
	if !x.gotHeaders {
		x.failLocked(fasthttp.ErrTimeout)
	}
	x.cc.mu.Unlock()
}

// cancel ends the exchange when its context is done.
func (x *h2Stream) cancel() {
	x.cc.mu.Lock()
	x.failLocked(x.ctx.Err())
	x.cc.mu.Unlock()
	x.finish()
}

// copyHeaders sets resp's status and headers from the response's. The
// headers are set once, before the caller reads them.
func (x *h2Stream) copyHeaders() {
	resp := x.resp
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(x.status)
	var name [64]byte
	for _, hf := range x.header {
		if hf.Name == "trailer" {
			continue // the trailers say their own names when they come
		}
		resp.Header.AddBytesKV(canonicalName(name[:0], hf.Name), s2b(hf.Value))
	}
}

// Read reads the response body; at its end the response's trailers are
// added to resp.Header as trailers.
func (x *h2Stream) Read(p []byte) (int, error) {
	cc := x.cc
	cc.mu.Lock()
	for x.off == len(x.buf) && !x.remoteEnded && x.err == nil {
		x.cond.Wait()
	}
	if x.off < len(x.buf) {
		n := copy(p, x.buf[x.off:])
		x.off += n
		if x.off == len(x.buf) {
			x.buf, x.off = x.buf[:0], 0
		}
		x.creditLocked(int64(n), false)
		cc.flushLocked()
		cc.mu.Unlock()
		return n, nil
	}
	err := x.err
	cc.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if !x.trailersAdded {
		x.trailersAdded = true
		addTrailers(x.resp, x.trailer)
	}
	return 0, io.EOF
}

// creditLocked gives back n bytes of the stream's receive window,
// sending a WINDOW_UPDATE once half of it is owed, while the response may
// still send. fromReader says the reader calls: it queues the frame for
// the writer goroutine; the caller flushes it otherwise.
func (x *h2Stream) creditLocked(n int64, fromReader bool) {
	cc := x.cc
	if x.remoteEnded || x.removed {
		return
	}
	x.unacked += n
	if x.unacked < h2StreamWindow/2 || cc.err != nil {
		return
	}
	cc.fr.WriteWindowUpdate(x.id, uint32(x.unacked))
	x.recvWindow += x.unacked
	x.unacked = 0
	if fromReader {
		cc.kickLocked()
	}
}

// Close ends the exchange: a stream still open is reset.
func (x *h2Stream) Close() error {
	x.finish()
	return nil
}

// finish ends the exchange once: the stream, if still open, is reset, its
// unread data dropped, and the request body read no more.
func (x *h2Stream) finish() {
	if x.done.Swap(true) {
		return
	}
	cc := x.cc
	cc.mu.Lock()
	stop := x.stopCtx
	x.failLocked(errH2Closed)
	if x.wakePending {
		cc.unwakeLocked(x)
	}
	if !x.removed {
		if cc.err == nil {
			cc.fr.WriteRSTStream(x.id, http2.ErrCodeCancel)
		}
		cc.removeLocked(x)
	}
	x.buf, x.off = x.buf[:0], 0
	cc.flushLocked()
	cc.mu.Unlock()
	if stop != nil {
		stop()
	}
	x.body.detach()
	x.closeSource()
}

func (x *h2Stream) closeSource() {
	if x.closeBody != nil && !x.bodyClosed.Swap(true) {
		_ = x.closeBody.Close()
	}
}

// sendBody sends the request body from x.body, as the peer's windows
// allow, and ends the stream with it. A body that fails to read resets
// the stream and fails the exchange as the downstream's failure.
func (x *h2Stream) sendBody(length int64) {
	bp := h2BodyBufs.Get().(*[]byte)
	defer h2BodyBufs.Put(bp)
	buf := *bp
	var sent int64
	for {
		n, err := x.body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if length >= 0 && sent > length {
				x.abort(&DownstreamError{Err: errors.New("request body longer than its content-length")})
				return
			}
			if !x.sendData(buf[:n], false) {
				return
			}
		}
		switch {
		case err == io.EOF:
			if length >= 0 && sent != length {
				x.abort(&DownstreamError{Err: io.ErrUnexpectedEOF})
				return
			}
			x.sendData(nil, true)
			if x.ctx != nil {
				// A filter's body is done with once sent, as net/http does.
				x.closeSource()
			}
			return
		case errors.Is(err, errDetached):
			return
		case err != nil:
			x.abort(&DownstreamError{Err: err})
			return
		}
	}
}

var h2BodyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// sendData sends p as DATA frames, waiting for the windows and for queued
// output to drain, and ends the request with end. It reports false when
// the stream or its connection is no longer open.
func (x *h2Stream) sendData(p []byte, end bool) bool {
	cc := x.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		for !x.removed && x.err == nil && cc.err == nil &&
			(len(p) > 0 && min(x.sendWindow, cc.sendWindow) <= 0 || cc.writing && len(cc.out.b) > h2OutHighWater) {
			cc.sendCond.Wait()
		}
		if x.removed || x.err != nil || cc.err != nil {
			return false
		}
		n := min(int64(len(p)), x.sendWindow, cc.sendWindow, int64(cc.maxFrame))
		last := end && n == int64(len(p))
		cc.fr.WriteData(x.id, last, p[:n])
		x.sendWindow -= n
		cc.sendWindow -= n
		p = p[n:]
		if last {
			x.localEnded = true
			if x.remoteEnded {
				cc.removeLocked(x)
			}
		}
		cc.flushLocked()
		if len(p) == 0 && (!end || last) {
			return true
		}
	}
}

// abort resets the stream for a request body that could not be read.
func (x *h2Stream) abort(err error) {
	cc := x.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if x.removed {
		return
	}
	x.failLocked(err)
	if cc.err == nil {
		cc.fr.WriteRSTStream(x.id, http2.ErrCodeCancel)
	}
	cc.removeLocked(x)
	cc.flushLocked()
}

// addTrailers adds trailer fields to resp.Header as trailers. A name
// fasthttp refuses as a trailer is dropped.
func addTrailers(resp *fasthttp.Response, fields []hpack.HeaderField) {
	var name [64]byte
	var okBuf [16]bool
	ok := okBuf[:0]
	if len(fields) > len(okBuf) {
		ok = make([]bool, 0, len(fields))
	}
	for i, f := range fields {
		k := canonicalName(name[:0], f.Name)
		first := i
		for j := range i {
			if fields[j].Name == f.Name {
				first = j
				break
			}
		}
		if first == i {
			ok = append(ok, resp.Header.AddTrailerBytes(k) == nil)
		} else {
			ok = append(ok, ok[first])
		}
		if ok[i] {
			resp.Header.AddBytesKV(k, s2b(f.Value))
		}
	}
}

// canonicalName appends name in its canonical form (Content-Type) to dst.
func canonicalName(dst []byte, name string) []byte {
	upper := true
	for i := range len(name) {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper = c == '-'
		dst = append(dst, c)
	}
	return dst
}

// s2b returns s's bytes, which must not be changed.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// b2s returns b's bytes as a string, without a copy: b must not change
// while the string is in use.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// h2RequestBody hands the request body to the transport, which reads it
// on a goroutine of its own and may still be reading when the response has
// ended. detach makes sure it reads no more once the exchange is over:
// the body belongs to the downstream request, which is reused after.
type h2RequestBody struct {
	mu       sync.Mutex
	src      io.Reader
	detached bool
}

var errDetached = errors.New("the exchange has ended")

func (b *h2RequestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errDetached
	}
	return b.src.Read(p)
}

// Close is the transport's: it is done with the body. The body itself is
// the downstream request's to close.
func (b *h2RequestBody) Close() error { return nil }

// bodyAborter is a request body that can end a read waiting for its
// client: an HTTP/2 or HTTP/3 stream's, which a client may keep open.
type bodyAborter interface{ AbortBody() }

// detach stops reads of the source. A read in progress is ended when the
// source can be aborted, and waited for otherwise (an HTTP/1.1 client
// sends its whole body before it reads the response).
func (b *h2RequestBody) detach() {
	if b.src == nil {
		return
	}
	if a, ok := b.src.(bodyAborter); ok {
		a.AbortBody()
	}
	b.mu.Lock()
	b.detached = true
	b.mu.Unlock()
}
