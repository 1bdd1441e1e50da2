package h2

import (
	"encoding/binary"
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/internal/headerval"
)

const (
	// outHighWater is how much output may wait for the writer before
	// response bodies wait for it to drain.
	outHighWater = 256 << 10
	// maxKeptOut bounds the output buffers a connection keeps between
	// writes.
	maxKeptOut = 1 << 20
	maxIdleOut = 16 << 10
	// Bounds of a connection's interned response field names and values.
	maxInternedNames  = 64
	maxInternedValues = 256
	maxInternedLen    = 128
)

// All output goes through out: frames are appended under mu by whoever
// has something to send (handlers, the reader), and the writer goroutine
// writes everything pending in one conn.Write. While it writes, others
// keep appending, so under load many responses share a TLS record and a
// system call.

// kickLocked wakes the writer when it waits for output.
func (sc *serverConn) kickLocked() {
	if sc.writerIdle {
		sc.writerIdle = false
		sc.wcond.Signal()
	}
}

func (sc *serverConn) writeLoop() {
	defer close(sc.writerDone)
	sc.mu.Lock()
	for {
		if len(sc.out) == 0 {
			if sc.closing {
				break
			}
			// An idle connection keeps no large buffer.
			if cap(sc.out) > maxIdleOut {
				sc.out = nil
			}
			if cap(sc.spare) > maxIdleOut {
				sc.spare = nil
			}
			sc.writerIdle = true
			sc.wcond.Wait()
			if len(sc.out) > 0 && !sc.closing {
				// Let the goroutines that are ready to run append their
				// frames too, before the write.
				sc.mu.Unlock()
				runtime.Gosched()
				sc.mu.Lock()
			}
			continue
		}
		buf := sc.out
		sc.out, sc.spare = sc.spare[:0], nil
		sc.writing = true
		sc.controlQueued = 0
		now := time.Now()
		rearm := now.Add(sc.srv.opts.IdleTimeout / 2).After(sc.wdeadline)
		if rearm {
			sc.wdeadline = now.Add(sc.srv.opts.IdleTimeout)
		}
		sc.mu.Unlock()
		if rearm {
			_ = sc.conn.SetWriteDeadline(sc.wdeadline)
		}
		_, err := sc.conn.Write(buf)
		sc.mu.Lock()
		sc.writing = false
		if cap(buf) <= maxKeptOut {
			sc.spare = buf[:0]
		}
		if err != nil {
			sc.out = sc.out[:0]
			sc.closeLocked()
			break
		}
		if sc.sendWaiters > 0 {
			sc.sendCond.Broadcast()
		}
	}
	sc.mu.Unlock()
	// Tell the client we are done writing; the reader drains until it
	// closes too, or drainTimeout.
	if cw, ok := sc.conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

func (sc *serverConn) appendFrameHeader(length int, t http2.FrameType, flags http2.Flags, id uint32) {
	sc.out = append(sc.out, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

func (sc *serverConn) appendSettings(s []http2.Setting) {
	sc.appendFrameHeader(6*len(s), http2.FrameSettings, 0, 0)
	for _, x := range s {
		sc.out = binary.BigEndian.AppendUint16(sc.out, uint16(x.ID))
		sc.out = binary.BigEndian.AppendUint32(sc.out, x.Val)
	}
}

func (sc *serverConn) appendSettingsAck() {
	sc.appendFrameHeader(0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func (sc *serverConn) appendPingAck(data [8]byte) {
	sc.appendFrameHeader(8, http2.FramePing, http2.FlagPingAck, 0)
	sc.out = append(sc.out, data[:]...)
}

func (sc *serverConn) appendWindowUpdate(id, incr uint32) {
	sc.appendFrameHeader(4, http2.FrameWindowUpdate, 0, id)
	sc.out = binary.BigEndian.AppendUint32(sc.out, incr)
}

func (sc *serverConn) appendRST(id uint32, code http2.ErrCode) {
	sc.appendFrameHeader(4, http2.FrameRSTStream, 0, id)
	sc.out = binary.BigEndian.AppendUint32(sc.out, uint32(code))
}

func (sc *serverConn) appendGoAway(last uint32, code http2.ErrCode) {
	sc.appendFrameHeader(8, http2.FrameGoAway, 0, 0)
	sc.out = binary.BigEndian.AppendUint32(sc.out, last)
	sc.out = binary.BigEndian.AppendUint32(sc.out, uint32(code))
}

// appendHeaderBlock frames an encoded header block: HEADERS, then
// CONTINUATION frames when it exceeds the client's maximum frame size.
func (sc *serverConn) appendHeaderBlock(id uint32, block []byte, endStream bool) {
	t := http2.FrameHeaders
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), sc.peerMaxFrm)
		var flags http2.Flags
		if first && endStream {
			flags |= http2.FlagHeadersEndStream
		}
		if n == len(block) {
			flags |= http2.FlagHeadersEndHeaders
		}
		sc.appendFrameHeader(n, t, flags, id)
		sc.out = append(sc.out, block[:n]...)
		block = block[n:]
		t = http2.FrameContinuation
	}
}

// writeHeadersLocked queues st's response header block.
func (sc *serverConn) writeHeadersLocked(st *stream, status int, h *fasthttp.ResponseHeader, cl int, trailers, end bool) {
	sc.block.b = sc.block.b[:0]
	sc.writeField(":status", statusText(status), true)
	for k, v := range h.All() {
		name, index, ok := sc.fieldName(k)
		if !ok || trailers && isTrailer(h, k) {
			continue
		}
		sc.writeValue(name, v, index)
	}
	if cl >= 0 {
		sc.num = strconv.AppendInt(sc.num[:0], int64(cl), 10)
		sc.writeValue("content-length", sc.num, true)
	}
	sc.appendHeaderBlock(st.id, sc.block.b, end)
	if end {
		sc.endLocalLocked(st)
	}
	sc.kickLocked()
}

// writeTrailersLocked queues the response trailers, which end st.
func (sc *serverConn) writeTrailersLocked(st *stream, h *fasthttp.ResponseHeader) {
	sc.block.b = sc.block.b[:0]
	for k := range h.Trailers() {
		v := h.PeekBytes(k)
		if len(v) == 0 {
			continue
		}
		name, index, ok := sc.fieldName(k)
		if !ok {
			continue
		}
		sc.writeValue(name, v, index)
	}
	sc.appendHeaderBlock(st.id, sc.block.b, true)
	sc.endLocalLocked(st)
	sc.kickLocked()
}

// writeContinueLocked queues an interim 100 (Continue) response.
func (sc *serverConn) writeContinueLocked(st *stream) {
	sc.block.b = sc.block.b[:0]
	sc.writeField(":status", "100", true)
	sc.appendHeaderBlock(st.id, sc.block.b, false)
	sc.kickLocked()
}

// writeDataLocked queues p as DATA frames on st, waiting for flow-control
// window and for the writer to drain a full output. With end, the last
// frame ends the stream. It fails when the stream or the connection has
// ended.
func (sc *serverConn) writeDataLocked(st *stream, p []byte, end bool) error {
	var stall *time.Timer
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	for {
		if st.stalled {
			// The client granted no window for IdleTimeout.
			sc.srv.countError("flow_control_stall")
			sc.resetLocked(st, http2.ErrCodeCancel)
			return errStreamReset
		}
		if st.localClosed {
			return errStreamReset
		}
		if sc.closing {
			return errConnClosed
		}
		if len(p) == 0 {
			if end {
				sc.appendFrameHeader(0, http2.FrameData, http2.FlagDataEndStream, st.id)
				sc.endLocalLocked(st)
				sc.kickLocked()
			}
			return nil
		}
		n := int64(min(len(p), sc.peerMaxFrm))
		n = min(n, st.sendWindow, sc.sendWindow)
		if n <= 0 || len(sc.out) >= outHighWater && sc.writing {
			if n <= 0 && stall == nil {
				stall = sc.stallTimer(st)
			}
			sc.kickLocked()
			sc.sendWaiters++
			sc.sendCond.Wait()
			sc.sendWaiters--
			continue
		}
		var flags http2.Flags
		last := int(n) == len(p)
		if last && end {
			flags = http2.FlagDataEndStream
		}
		sc.appendFrameHeader(int(n), http2.FrameData, flags, st.id)
		sc.out = append(sc.out, p[:n]...)
		st.sendWindow -= n
		sc.sendWindow -= n
		p = p[n:]
		if last {
			if end {
				sc.endLocalLocked(st)
			}
			sc.kickLocked()
			return nil
		}
	}
}

// stallTimer marks st stalled when it has waited for window for
// IdleTimeout: a client that opens streams and never lets their
// responses through holds no handler forever.
func (sc *serverConn) stallTimer(st *stream) *time.Timer {
	gen := st.gen
	st.timed = true
	return time.AfterFunc(sc.srv.opts.IdleTimeout, func() {
		sc.mu.Lock()
		if st.gen == gen {
			st.stalled = true
			sc.sendCond.Broadcast()
		}
		sc.mu.Unlock()
	})
}

// blockBuf collects the HPACK encoder's output.
type blockBuf struct{ b []byte }

func (w *blockBuf) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (sc *serverConn) writeField(name, value string, index bool) {
	_ = sc.enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: !index})
}

// writeValue encodes a field whose value is in a buffer the response
// owns. The encoder's dynamic table keeps the strings it indexes, so
// only a value that is a constant or interned for the connection may be
// indexed; any other is sent as a literal without indexing, read from
// the buffer in place.
func (sc *serverConn) writeValue(name string, v []byte, index bool) {
	if index {
		if s, ok := headerval.Common(v); ok {
			sc.writeField(name, s, true)
			return
		}
		if s, ok := sc.values[string(v)]; ok {
			sc.writeField(name, s, true)
			return
		}
		if len(sc.values) < maxInternedValues && len(v) <= maxInternedLen {
			s := string(v)
			sc.values[s] = s
			sc.writeField(name, s, true)
			return
		}
	}
	sc.writeField(name, unsafe.String(unsafe.SliceData(v), len(v)), false)
}

// fieldName returns the lower case name of a response field, whether its
// values may be indexed, and false for the fields HTTP/2 does not send
// (connection-specific ones) or that respond sets itself (the length).
func (sc *serverConn) fieldName(k []byte) (name string, index, ok bool) {
	lk := sc.lname[:0]
	for _, c := range k {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lk = append(lk, c)
	}
	sc.lname = lk
	if f, found := knownFields[string(lk)]; found {
		return f.name, f.index, !f.skip
	}
	if s, found := sc.names[string(lk)]; found {
		return s, true, true
	}
	if len(sc.names) < maxInternedNames && len(lk) <= maxInternedLen {
		s := string(lk)
		sc.names[s] = s
		return s, true, true
	}
	// Neither known nor interned: literal, without indexing.
	return unsafe.String(unsafe.SliceData(lk), len(lk)), false, true
}

type knownField struct {
	name  string
	index bool // its values repeat: worth the dynamic table
	skip  bool
}

var knownFields = func() map[string]knownField {
	m := map[string]knownField{}
	for _, n := range []string{
		"content-type", "content-encoding", "server", "cache-control", "vary", "accept-ranges",
		"alt-svc", "access-control-allow-origin", "access-control-allow-credentials",
		"access-control-allow-headers", "access-control-allow-methods", "access-control-expose-headers",
		"grpc-status", "grpc-encoding", "grpc-accept-encoding", "strict-transport-security",
		"x-content-type-options", "x-frame-options", "content-language", "x-xss-protection",
		"referrer-policy", "via", "content-security-policy",
	} {
		m[n] = knownField{name: n, index: true}
	}
	// Values that change with every response, or should not be kept.
	for _, n := range []string{
		"date", "set-cookie", "etag", "last-modified", "expires", "age", "location",
		"x-request-id", "grpc-message", "content-disposition", "content-range", "link",
		"www-authenticate", "authorization", "x-trace-id", "traceparent",
	} {
		m[n] = knownField{name: n}
	}
	// The response's own length and trailers are the server's to send.
	for _, n := range append([]string{"trailer", "content-length"}, connectionSpecificFields...) {
		m[n] = knownField{name: n, skip: true}
	}
	return m
}()

var statusTexts = func() (s [1000]string) {
	for i := 100; i < len(s); i++ {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func statusText(code int) string { return statusTexts[code] }
