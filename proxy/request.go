package proxy

// The request stage: what the proxy does to a request before the first
// filter sees it.

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"

	"github.com/valyala/fasthttp"
)

// prepareRequest makes the request fit to pass on, before the first
// filter sees it: the hop-by-hop headers, which describe the downstream
// connection only, go, and the request gets an id when it has none. The
// forwarding headers are the forwarded filter's (package native).
func (x *exchange) prepareRequest(ls *listenerSnap) {
	h := &x.Ctx.Request.Header
	seen := scanRequest(h, ls.requestIDKey)
	if len(seen.conn) > 0 {
		dropConnectionTokens(h, seen.conn, &x.scratch)
		seen = scanRequest(h, ls.requestIDKey)
	}
	has := seen.has
	// Copied before the headers change under the value.
	x.RequestID = append(x.RequestID[:0], seen.id...)
	if len(x.RequestID) == 0 {
		id := newRequestID(&x.idBuf)
		h.SetCanonical(ls.requestIDKey, id)
		x.RequestID = append(x.RequestID, id...)
	}
	del(h, has, hasKeepAlive, "Keep-Alive")
	del(h, has, hasProxyConnection, "Proxy-Connection")
	del(h, has, hasTE, "TE")
	del(h, has, hasTrailer, "Trailer")
	del(h, has, hasUpgrade, "Upgrade")
	if h.ContentLength() == 0 && len(h.Peek(fasthttp.HeaderContentLength)) > 0 && x.Protocol == "HTTP/1.1" &&
		!hasRawHeader(h.RawHeaders(), "content-length") {
		// fasthttp gives a request with neither Content-Length nor
		// Transfer-Encoding a Content-Length of 0. The client sent none,
		// so filters see none; the length is 0 all the same.
		h.Del(fasthttp.HeaderContentLength)
	}
}

// hasRawHeader reports whether raw, the header lines as an HTTP/1 request
// sent them, has a header named name (lower case).
func hasRawHeader(raw []byte, name string) bool {
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte{'\n'})
		k, _, ok := bytes.Cut(line, []byte{':'})
		if ok && len(k) == len(name) && bytes.EqualFold(k, []byte(name)) {
			return true
		}
	}
	return false
}

// Hop-by-hop headers, as bits.
const (
	hasKeepAlive = 1 << iota
	hasProxyConnection
	hasTE
	hasTrailer
	hasUpgrade
)

// requestScan is what one pass over a request's headers finds: which
// hop-by-hop headers it has (most have none, and a Del per name would scan
// every header each time), its Connection header and its request id. The
// values are the header's own: valid until the header changes.
type requestScan struct {
	has  uint8
	conn []byte // Connection
	id   []byte // the first request ID header
}

func scanRequest(h *fasthttp.RequestHeader, idKey []byte) requestScan {
	var s requestScan
	for k, v := range h.All() {
		if len(k) == len(idKey) && bytes.EqualFold(k, idKey) {
			if s.id == nil {
				s.id = v
			}
			continue
		}
		if len(k) < 2 {
			continue
		}
		switch k[0] | 0x20 {
		case 'c':
			if bytes.EqualFold(k, []byte("Connection")) {
				s.conn = v
			}
			continue
		case 'k', 'p', 't', 'u':
		default:
			continue
		}
		switch {
		case bytes.EqualFold(k, []byte("Keep-Alive")):
			s.has |= hasKeepAlive
		case bytes.EqualFold(k, []byte("Proxy-Connection")):
			s.has |= hasProxyConnection
		case bytes.EqualFold(k, []byte("TE")):
			s.has |= hasTE
		case bytes.EqualFold(k, []byte("Trailer")):
			s.has |= hasTrailer
		case bytes.EqualFold(k, []byte("Upgrade")):
			s.has |= hasUpgrade
		}
	}
	return s
}

// del removes a header the request was found to have.
func del(h *fasthttp.RequestHeader, has, bit uint8, name string) {
	if has&bit != 0 {
		h.Del(name)
	}
}

// dropConnectionTokens removes the headers that conn, the Connection
// header's value, names, and the Connection header itself: they describe
// the downstream connection only. Whether the client asked to close is
// kept. scratch is a buffer the caller owns.
func dropConnectionTokens(h *fasthttp.RequestHeader, conn []byte, scratch *[]byte) {
	closeConn := h.ConnectionClose()
	toks := append((*scratch)[:0], conn...)
	*scratch = toks
	for len(toks) > 0 {
		var tok []byte
		if i := bytes.IndexByte(toks, ','); i >= 0 {
			tok, toks = toks[:i], toks[i+1:]
		} else {
			tok, toks = toks, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			h.DelBytes(tok)
		}
	}
	h.Del("Connection")
	if closeConn {
		h.SetConnectionClose()
	}
}

// newRequestID writes a random UUID (version 4) into buf.
func newRequestID(buf *[36]byte) []byte {
	const hex = "0123456789abcdef"
	a, b := rand.Uint64(), rand.Uint64()
	var raw [16]byte
	for i := 0; i < 8; i++ {
		raw[i] = byte(a >> (8 * i))
		raw[8+i] = byte(b >> (8 * i))
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	j := 0
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf[j] = '-'
			j++
		}
		buf[j], buf[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
	return buf[:]
}

// requestBody is the downstream request's body stream, counted against the
// listener's limit when it has no declared length.
func (x *exchange) requestBody() io.Reader {
	if x.limit.active {
		return &x.limit
	}
	return x.Ctx.Request.BodyStream()
}

// limitedBody reads a body and fails once it is longer than allowed.
type limitedBody struct {
	src      io.Reader
	left     int64
	active   bool
	exceeded bool
}

var errBodyLimit = errors.New("request body over the listener's limit")

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, errBodyLimit
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1] // one byte past the limit tells it is over
	}
	n, err := l.src.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return 0, errBodyLimit
	}
	return n, err
}
