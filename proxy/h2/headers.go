package h2

import (
	"slices"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/internal/headerval"
)

type blockKind uint8

const (
	blockIgnore   blockKind = iota // decoded only, to keep HPACK's state
	blockRequest                   // the headers of a new stream
	blockTrailers                  // the trailers of an open stream
)

// Pseudo-header fields seen in a request's header block.
const (
	pseudoMethod uint8 = 1 << iota
	pseudoScheme
	pseudoAuthority
	pseudoPath
)

// headerBlock is the state of the header block being read: a HEADERS
// frame and the CONTINUATION frames that follow it. It is the reader
// goroutine's.
type headerBlock struct {
	open      bool
	kind      blockKind
	id        uint32
	st        *stream // the new stream, for blockRequest
	endStream bool

	size    int // decoded size, as SETTINGS_MAX_HEADER_LIST_SIZE counts it
	encoded int // encoded size
	tooBig  bool
	errName string // the first malformation found: a stream error

	refuse      bool          // beyond MaxConcurrentStreams
	resetCode   http2.ErrCode // for an ignored block: the reset to send
	closedReuse bool          // a new request on a closed stream's id
	watchPseudo bool          // an ignored block whose fields tell closedReuse

	pseudo        uint8
	regular       bool
	connect       bool
	head          bool
	hostSet       bool
	expect        bool
	contentLength int64
	path          string
}

func (b *headerBlock) fail(name string) {
	if b.errName == "" {
		b.errName = name
	}
}

// beginBlock starts the header block of a HEADERS frame on stream id.
func (sc *serverConn) beginBlock(id uint32, endStream bool) error {
	hb := &sc.hb
	*hb = headerBlock{open: true, id: id, endStream: endStream, contentLength: -1}
	sc.trailer = sc.trailer[:0]
	sc.mu.Lock()
	st := sc.streams[id]
	switch {
	case st != nil:
		if st.remoteClosed {
			hb.resetCode = http2.ErrCodeStreamClosed
		} else {
			hb.kind = blockTrailers
		}
	case id <= sc.maxClientID:
		// Trailers of a stream we have reset are ignored; a request
		// (pseudo-header fields, or no END_STREAM) reuses an id.
		hb.closedReuse = !endStream
		hb.watchPseudo = true
	case sc.goAwaySent || sc.closing:
		sc.maxClientID = id // ignored: beyond our GOAWAY
	default:
		sc.maxClientID = id
		if len(sc.streams) >= sc.maxStreams {
			hb.refuse = true
		} else {
			hb.kind = blockRequest
		}
	}
	sc.mu.Unlock()
	if hb.kind == blockRequest {
		hb.st = acquireStream(sc, id)
	}
	sc.dec.SetEmitEnabled(hb.kind != blockIgnore || hb.watchPseudo)
	return nil
}

// blockFragment decodes a fragment of the header block.
func (sc *serverConn) blockFragment(p []byte, end bool) error {
	hb := &sc.hb
	hb.encoded += len(p)
	if hb.encoded > 2*sc.maxHeader+minMaxFrameSize {
		return connErr{http2.ErrCodeEnhanceYourCalm, "header_block_too_large"}
	}
	if _, err := sc.dec.Write(p); err != nil {
		return connErr{http2.ErrCodeCompression, "hpack_decode"}
	}
	if end {
		return sc.endBlock()
	}
	return nil
}

// onField receives each decoded field of the header block.
func (sc *serverConn) onField(f hpack.HeaderField) {
	hb := &sc.hb
	hb.size += len(f.Name) + len(f.Value) + 32
	if hb.size > sc.maxHeader {
		hb.tooBig = true
		sc.dec.SetEmitEnabled(false)
		return
	}
	if hb.errName != "" {
		return
	}
	name, value := f.Name, f.Value
	if hb.kind == blockIgnore {
		if len(name) > 0 && name[0] == ':' {
			hb.closedReuse = true
		}
		return
	}
	if hb.kind == blockTrailers {
		switch {
		case len(name) > 0 && name[0] == ':':
			hb.fail("trailer_pseudo")
		case !headerval.H2Name(name) || !validFieldValue(value):
			hb.fail("trailer_invalid")
		case connectionSpecific(name):
			hb.fail("trailer_connection_specific")
		default:
			sc.trailer = append(sc.trailer, name...)
			sc.trailer = append(sc.trailer, 0)
			sc.trailer = append(sc.trailer, value...)
			sc.trailer = append(sc.trailer, 0)
		}
		return
	}
	h := &hb.st.ctx.Request.Header
	if len(name) > 0 && name[0] == ':' {
		if hb.regular {
			hb.fail("pseudo_after_regular")
			return
		}
		var bit uint8
		switch name {
		case ":method":
			bit = pseudoMethod
			if !headerval.Token(value) {
				hb.fail("pseudo_method_invalid")
				return
			}
			h.SetMethod(value)
			hb.connect = value == "CONNECT"
			hb.head = value == "HEAD"
		case ":scheme":
			bit = pseudoScheme
			if value == "" {
				hb.fail("pseudo_scheme_empty")
				return
			}
		case ":authority":
			bit = pseudoAuthority
			if !validFieldValue(value) {
				hb.fail("pseudo_authority_invalid")
				return
			}
			h.SetHost(value)
		case ":path":
			bit = pseudoPath
			if !validFieldValue(value) {
				hb.fail("pseudo_path_invalid")
				return
			}
			hb.path = value
			h.SetRequestURI(value)
		default:
			hb.fail("pseudo_unknown")
			return
		}
		if hb.pseudo&bit != 0 {
			hb.fail("pseudo_duplicate")
			return
		}
		hb.pseudo |= bit
		return
	}
	hb.regular = true
	if !headerval.H2Name(name) {
		hb.fail("header_name_invalid")
		return
	}
	if !validFieldValue(value) {
		hb.fail("header_value_invalid")
		return
	}
	switch name {
	case "host":
		// :authority, when present, is the request's host.
		if hb.pseudo&pseudoAuthority == 0 {
			if hb.hostSet {
				hb.fail("header_host_duplicate")
				return
			}
			hb.hostSet = true
			h.SetHost(value)
		}
		return
	case "content-length":
		n, ok := parseContentLength(value)
		if !ok || hb.contentLength >= 0 && n != hb.contentLength {
			hb.fail("header_content_length")
			return
		}
		hb.contentLength = n
		return
	case "te":
		if value != "trailers" {
			hb.fail("header_te")
			return
		}
	case "expect":
		if headerval.EqualFold([]byte(value), "100-continue") {
			hb.expect = true
			return
		}
	default:
		if connectionSpecific(name) {
			hb.fail("header_connection_specific")
			return
		}
	}
	h.Add(name, value)
}

// endBlock acts on a complete header block.
func (sc *serverConn) endBlock() error {
	hb := &sc.hb
	hb.open = false
	if err := sc.dec.Close(); err != nil {
		return connErr{http2.ErrCodeCompression, "hpack_truncated"}
	}
	sc.dec.SetEmitEnabled(true)
	switch hb.kind {
	case blockRequest:
		return sc.endRequest()
	case blockTrailers:
		return sc.endTrailers()
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	switch {
	case hb.closedReuse:
		return connErr{http2.ErrCodeProtocol, "headers_on_closed_stream"}
	case hb.refuse:
		sc.appendRST(hb.id, http2.ErrCodeRefusedStream)
		sc.kickLocked()
	case hb.resetCode != 0:
		sc.srv.countError("headers_after_end_stream")
		if st := sc.streams[hb.id]; st != nil {
			sc.resetLocked(st, hb.resetCode)
		}
	}
	return nil
}

func (sc *serverConn) endRequest() error {
	hb := &sc.hb
	st := hb.st
	hb.st = nil
	name := hb.errName
	if name == "" && !hb.tooBig {
		const schemePath = pseudoScheme | pseudoPath
		switch {
		case hb.pseudo&pseudoMethod == 0:
			name = "pseudo_method_missing"
		case hb.connect:
			if hb.pseudo&schemePath != 0 || hb.pseudo&pseudoAuthority == 0 {
				name = "pseudo_connect"
			}
		case hb.pseudo&schemePath != schemePath:
			name = "pseudo_missing"
		case hb.path[0] != '/' && (hb.path != "*" || string(st.ctx.Request.Header.Method()) != "OPTIONS"):
			name = "pseudo_path_invalid"
		case hb.endStream && hb.contentLength > 0:
			name = "data_content_length"
		}
	}
	switch {
	case name != "":
		sc.srv.countError(name)
		st.release()
		sc.mu.Lock()
		sc.appendRST(hb.id, http2.ErrCodeProtocol)
		sc.kickLocked()
		sc.mu.Unlock()
		return nil
	case hb.tooBig:
		sc.srv.countError("header_list_too_large")
		st.release()
		sc.localResponse(hb.id, 431, hb.endStream)
		return nil
	case hb.connect:
		// No tunnels: CONNECT is not a method this server serves.
		st.release()
		sc.localResponse(hb.id, 405, hb.endStream)
		return nil
	}

	req := &st.ctx.Request
	req.Header.SetProtocol("HTTP/2")
	st.head = hb.head
	st.contentLength = hb.contentLength
	if hb.endStream {
		st.remoteClosed = true
		st.eof = true
		if hb.contentLength == 0 {
			// Only the client's: filters see the headers it sent, and a
			// request without a body has a length of 0 all the same.
			req.Header.SetContentLength(0)
		}
	} else {
		st.expectContinue = hb.expect
		req.SetBodyStream(&st.body, int(hb.contentLength))
	}

	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		st.release()
		return errConnClosing
	}
	st.sendWindow = sc.peerInitial
	st.recvTarget = sc.streamWindow
	if !sc.settingsAckd {
		// The client may still count on the initial window of RFC 9113.
		st.recvTarget = max(st.recvTarget, initialWindow)
	}
	st.recvWindow = int64(st.recvTarget)
	sc.streams[st.id] = st
	st.inMap = true
	sc.opened++
	return sc.startLocked(st)
}

func (sc *serverConn) endTrailers() error {
	hb := &sc.hb
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st := sc.streams[hb.id]
	if st == nil || st.remoteClosed {
		return nil
	}
	if !hb.endStream {
		hb.fail("trailers_without_end_stream")
	}
	if hb.errName == "" && hb.tooBig {
		hb.errName = "trailer_list_too_large"
	}
	if hb.errName == "" && st.contentLength >= 0 && st.received != st.contentLength {
		hb.errName = "data_content_length"
	}
	if hb.errName != "" {
		sc.srv.countError(hb.errName)
		sc.resetLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	st.trailers = append(st.trailers[:0], sc.trailer...)
	sc.endBodyLocked(st)
	return nil
}

// localResponse answers a stream that reaches no handler with status and
// no body.
func (sc *serverConn) localResponse(id uint32, status int, endStream bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		return
	}
	sc.block.b = sc.block.b[:0]
	_ = sc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	_ = sc.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "0"})
	sc.appendHeaderBlock(id, sc.block.b, true)
	if !endStream {
		sc.appendRST(id, http2.ErrCodeNo)
	}
	sc.kickLocked()
}

// connectionSpecificFields are the fields HTTP/2 does not have (RFC 9113,
// 8.2.2): a request with one is malformed, a response loses them.
var connectionSpecificFields = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}

// connectionSpecific reports whether name is a connection-specific field.
func connectionSpecific(name string) bool {
	return slices.Contains(connectionSpecificFields, name)
}

// validFieldValue applies RFC 9113, 8.2.1: no NUL, CR or LF, and no
// leading or trailing white space.
func validFieldValue(s string) bool {
	if s == "" {
		return true
	}
	if c := s[0]; c == ' ' || c == '\t' {
		return false
	}
	if c := s[len(s)-1]; c == ' ' || c == '\t' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0, '\r', '\n':
			return false
		}
	}
	return true
}

func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
