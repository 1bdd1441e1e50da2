// Package h1 reads the framing of HTTP/1.1 requests strictly (RFC 9112)
// on the proxy's side of fasthttp.
//
// fasthttp reads some requests leniently where two readers can disagree
// on where a request ends (request smuggling): chunk data not followed by
// CRLF is taken as data and parsing goes on at the wrong offset, a request
// with both Content-Length and Transfer-Encoding keeps its connection, a
// request that ends its lines with a bare LF waits for more. A Conn reads
// every byte a client sends before fasthttp does, follows the framing of
// each request with a strict parser of its own, and lets fasthttp read
// only bytes it has found well framed. At the first violation fasthttp
// gets the bytes before it, then a read error, an *Error, whose status the
// proxy answers with before it closes the connection. fasthttp thus never
// reads a byte past a point where its reading and ours could differ: what
// goes upstream is framed as this package decided.
//
// The parser keeps a few bytes per connection and allocates nothing per
// request. It checks framing, not meaning: the request line's target and
// the header values are left to fasthttp and the request path.
package h1

import "fmt"

// Error is a request the proxy refuses because of how it is framed. The
// connection cannot be read further and is closed after the answer.
type Error struct {
	// Status is the answer: 400, or 501 for what the proxy does not
	// implement (CONNECT, a transfer coding other than chunked).
	Status int
	// Reason says what was wrong, for the answer's body and the logs.
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("malformed request: %s", e.Reason) }

func badRequest(reason string) *Error { return &Error{Status: 400, Reason: reason} }

// The parser's states. A connection reads requests one after another:
// request line, header fields, body (Content-Length bytes, or chunks and
// trailer fields), then the next request.
type state uint8

const (
	sLineStart   state = iota // before a request line: empty lines may come first
	sLineStartLF              // CR of an empty line before a request line
	sMethod
	sTarget
	sVersion
	sLineLF      // CR after the version
	sFieldStart  // the start of a header or trailer line
	sFieldsEndLF // CR of the empty line that ends the header or the trailers
	sName
	sValue
	sValueLF // CR at the end of a field line
	sBody    // Content-Length bytes
	sChunkSize
	sChunkExt
	sChunkSizeLF
	sChunkData
	sChunkDataCR
	sChunkDataLF
	sAwait  // after an Upgrade request: HTTP/1.1 again unless the answer is 101
	sTunnel // no longer HTTP/1.1 (101 Switching Protocols): bytes pass as they are
)

// field is a header the framing depends on.
type field uint8

const (
	fOther field = iota
	fContentLength
	fTransferEncoding
	fHost
	fConnection
	fUpgrade
)

// Limits of what the parser keeps of a name or value.
const (
	maxKept      = 24 // bytes of a field name, a Connection token or a Transfer-Encoding value
	maxHexDigits = 15 // of a chunk size; fasthttp reads no more on 64-bit platforms
	maxCLDigits  = 18 // of a Content-Length: below 2^63
)

// Framer follows the requests of one connection. The zero value expects a
// request line. It is used by one goroutine at a time.
type Framer struct {
	st  state
	err *Error

	// The request being read.
	method    [8]byte
	methodLen int
	version   [8]byte
	versionN  int
	targetN   int
	asterisk  bool // the target is "*"
	trailers  bool // reading trailer fields, not header fields
	hasCL     bool
	hasTE     bool
	chunked   bool
	hosts     int
	upgrade   bool // an Upgrade header
	connUp    bool // Connection lists "upgrade"
	left      int64
	hexDigits int

	// The field being read.
	fld     field
	name    [maxKept]byte
	nameLen int
	kept    [maxKept]byte // the value of Content-Length or Transfer-Encoding, or a Connection token
	keptLen int
	gap     bool // OWS inside a value that allows none (a token list item)
	digits  int

	// hold is where the header of the request being read ended in the
	// bytes of the current Feed, or -1: bytes past it are held back when a
	// later violation refuses the request.
	hold int
	// holding is true from the line of a chunked body's last chunk to the
	// end of its trailers: fasthttp takes any failure to read the
	// trailers' first byte for their end, so it must not see the last
	// chunk's line end until the trailers are whole (see Feed).
	// holdFrom is where the holding began in the bytes of the current
	// Feed (0: before them); held counts the bytes held.
	holding  bool
	holdNew  bool // the holding began in the current Feed
	holdFrom int
	held     int
	// observe, when set, is told where requests begin and end and which
	// bytes are body (see Split).
	observe func(ev event, off int)
}

// Err returns the violation that stopped the connection, or nil.
func (f *Framer) Err() *Error { return f.err }

// Tunnel says the connection no longer speaks HTTP/1.1: its bytes pass
// unread. The connection switched protocols, or was never HTTP/1.1.
func (f *Framer) Tunnel() { f.st = sTunnel }

// Tunneling reports whether the framer lets bytes pass unread.
func (f *Framer) Tunneling() bool { return f.st == sTunnel }

// Between reports whether the framer is between requests: a connection
// that ends here ends cleanly; one that ends anywhere else cut a request
// short.
func (f *Framer) Between() bool {
	switch f.st {
	case sLineStart, sLineStartLF, sAwait, sTunnel:
		return true
	}
	return false
}

// Awaiting reports whether the last request asked to upgrade and its
// answer has not been written yet.
func (f *Framer) Awaiting() bool { return f.st == sAwait }

// Answered tells the framer of an answer, by its first bytes, written
// while Awaiting: a 101 makes the connection a tunnel; anything else keeps
// it HTTP/1.1.
func (f *Framer) Answered(head []byte) {
	if f.st != sAwait {
		return
	}
	const switching = "HTTP/1.1 101"
	if len(head) >= len(switching) && string(head[:len(switching)]) == switching &&
		(len(head) == len(switching) || head[len(switching)] == ' ' || head[len(switching)] == '\r') {
		f.st = sTunnel
		return
	}
	f.st = sLineStart
}

// Feed reads b, the next bytes of the connection, and returns how many of
// them may be handed on. It hands on fewer than len(b) in two cases:
//
//   - a violation (Err is then set): the bytes before it are handed on, or,
//     when the violation lies in the body of a request whose header is in
//     b, or in the header's framing, the bytes before the header's last
//     line ends, so that the request is never complete;
//   - the end of a request that asks to upgrade: the bytes after it must
//     wait for Answered, and be fed again then;
//   - the trailers of a chunked body that are not whole yet (Holding is
//     then true): the bytes from the last chunk's line end on were read
//     but must be held until they are, and then handed on before the
//     bytes of the Feed that completes them.
func (f *Framer) Feed(b []byte) int {
	if f.err != nil {
		return 0
	}
	f.hold = -1
	f.holdFrom, f.holdNew = 0, false
	n := f.feed(b)
	if f.holding && f.err == nil && n == len(b) {
		f.held += len(b) - f.holdFrom
		if f.held > maxHeld {
			f.err = badRequest("trailers too large")
			return 0
		}
		return f.holdFrom
	}
	return n
}

// maxHeld bounds the trailers a Framer holds back.
const maxHeld = 64 << 10

// Holding reports whether, after the last Feed, the trailers of a chunked
// body are held back, and whether the holding began in that Feed. The
// bytes held before it are released by a Feed after which the holding
// either ended or began anew; a violation while holding refuses them.
func (f *Framer) Holding() (holding, began bool) { return f.holding, f.holdNew }

func (f *Framer) feed(b []byte) int {
	i := 0
	for i < len(b) {
		switch f.st {
		case sTunnel:
			return len(b)
		case sAwait:
			return i
		case sBody:
			n := int64(len(b) - i)
			if n > f.left {
				n = f.left
			}
			f.mark(evData, i)
			i += int(n)
			f.mark(evDataEnd, i)
			f.left -= n
			if f.left == 0 {
				f.endMessage(i)
			}
			continue
		case sChunkData:
			n := int64(len(b) - i)
			if n > f.left {
				n = f.left
			}
			f.mark(evData, i)
			i += int(n)
			f.mark(evDataEnd, i)
			f.left -= n
			if f.left == 0 {
				f.st = sChunkDataCR
			}
			continue
		case sValue:
			// Most values are read by no one here: skip them whole.
			if f.fld == fOther {
				j := i
				for j < len(b) && valueOK[b[j]] {
					j++
				}
				if i = j; i == len(b) {
					continue
				}
			}
		case sName:
			j := i
			for j < len(b) && tchar[b[j]] {
				if f.nameLen < maxKept {
					f.name[f.nameLen] = lower(b[j])
				}
				f.nameLen++
				j++
			}
			if i = j; i == len(b) {
				continue
			}
		case sTarget:
			if f.targetN > 0 {
				j := i
				for j < len(b) && targetOK[b[j]] {
					j++
				}
				f.targetN += j - i
				if i = j; i == len(b) {
					continue
				}
			}
		}
		if v := f.step(b[i], i); v != nil {
			return f.refuse(v, i)
		}
		i++
	}
	return len(b)
}

// refuse records a violation found at b[i] and returns how many bytes to
// hand on.
func (f *Framer) refuse(v *Error, i int) int {
	f.err = v
	if f.holding {
		i = min(i, f.holdFrom)
	}
	if f.hold >= 0 && f.hold < i {
		return f.hold
	}
	return i
}

// Events told to an observer.
type event uint8

const (
	evStart   event = iota // a request begins at off
	evHeadEnd              // its header ends just before off
	evData                 // body bytes begin at off
	evDataEnd              // and end just before off
	evEnd                  // the request ends just before off
)

func (f *Framer) mark(ev event, off int) {
	if f.observe != nil {
		f.observe(ev, off)
	}
}

func (f *Framer) endMessage(off int) {
	f.mark(evEnd, off)
	f.hold = -1
	f.holding, f.held = false, 0
	if f.upgrade && f.connUp {
		f.st = sAwait
		return
	}
	f.st = sLineStart
}

// startMessage resets what the framer knows of a request.
func (f *Framer) startMessage() {
	f.methodLen, f.versionN, f.targetN = 0, 0, 0
	f.asterisk = false
	f.trailers, f.hasCL, f.hasTE, f.chunked = false, false, false, false
	f.hosts = 0
	f.upgrade, f.connUp = false, false
	f.left, f.hexDigits = 0, 0
}

// step reads one byte in a state that reads byte by byte. i is its offset
// in the bytes being fed.
func (f *Framer) step(c byte, i int) *Error {
	switch f.st {
	case sLineStart:
		switch {
		case c == '\r':
			f.st = sLineStartLF
		case isTchar(c):
			f.startMessage()
			f.mark(evStart, i)
			f.st = sMethod
			return f.methodByte(c)
		default:
			return badRequest("a request must start with a method")
		}
	case sLineStartLF:
		if c != '\n' {
			return badRequest("CR without LF")
		}
		f.st = sLineStart
	case sMethod:
		if c == ' ' {
			if f.methodLen == len("CONNECT") && string(f.method[:7]) == "CONNECT" {
				return &Error{Status: 501, Reason: "CONNECT is not supported"}
			}
			f.st = sTarget
			return nil
		}
		if !isTchar(c) {
			return badRequest("invalid character in the method")
		}
		return f.methodByte(c)
	case sTarget:
		if c == ' ' {
			if f.targetN == 0 {
				return badRequest("no request target")
			}
			if f.asterisk && (f.methodLen != len("OPTIONS") || string(f.method[:7]) != "OPTIONS") {
				return badRequest("the asterisk form is for OPTIONS only")
			}
			f.st = sVersion
			return nil
		}
		if c <= ' ' || c == 0x7f {
			return badRequest("invalid character in the request target")
		}
		f.asterisk = f.targetN == 0 && c == '*'
		f.targetN++
	case sVersion:
		if c == '\r' {
			if !f.versionOK() {
				return badRequest("invalid HTTP version")
			}
			f.st = sLineLF
			return nil
		}
		if f.versionN == len(f.version) {
			return badRequest("invalid HTTP version")
		}
		f.version[f.versionN] = c
		f.versionN++
	case sLineLF:
		if c != '\n' {
			return badRequest("the request line must end with CRLF")
		}
		f.st = sFieldStart
	case sFieldStart:
		switch {
		case c == '\r':
			f.st = sFieldsEndLF
		case isTchar(c):
			f.nameLen, f.fld = 0, fOther
			f.keptLen, f.gap, f.digits = 0, false, 0
			f.st = sName
			f.nameByte(c)
		case c == ' ' || c == '\t':
			return badRequest("obsolete line folding")
		case c == '\n':
			return badRequest("bare LF")
		default:
			return badRequest("invalid character in a field name")
		}
	case sFieldsEndLF:
		if c != '\n' {
			return badRequest("CR without LF")
		}
		if f.trailers {
			f.endMessage(i + 1)
			return nil
		}
		// The header ends here: until the request ends, a violation
		// keeps this line from fasthttp.
		f.hold = max(i-1, 0)
		f.mark(evHeadEnd, i+1)
		return f.frame(i + 1)
	case sName:
		switch {
		case c == ':':
			return f.nameDone()
		case isTchar(c):
			f.nameByte(c)
		case c == ' ' || c == '\t':
			return badRequest("whitespace in a field name")
		default:
			return badRequest("invalid character in a field name")
		}
	case sValue:
		switch {
		case c == '\r':
			f.st = sValueLF
		case c == '\t' || c >= ' ' && c != 0x7f:
			return f.valueByte(c)
		case c == '\n':
			return badRequest("bare LF")
		default:
			return badRequest("control character in a field value")
		}
	case sValueLF:
		if c != '\n' {
			return badRequest("CR without LF")
		}
		if err := f.valueDone(); err != nil {
			return err
		}
		f.st = sFieldStart
	case sChunkSize:
		switch {
		case hexVal(c) >= 0:
			if f.hexDigits == maxHexDigits {
				return badRequest("chunk size too large")
			}
			f.left = f.left<<4 | int64(hexVal(c))
			f.hexDigits++
		case f.hexDigits == 0:
			return badRequest("invalid chunk size")
		case c == ';':
			f.st = sChunkExt
		case c == '\r':
			f.st = sChunkSizeLF
		default:
			return badRequest("invalid chunk size")
		}
	case sChunkExt:
		switch {
		case c == '\r':
			f.st = sChunkSizeLF
		case c == '\t' || c >= ' ' && c != 0x7f:
		default:
			return badRequest("control character in a chunk extension")
		}
	case sChunkSizeLF:
		if c != '\n' {
			return badRequest("the chunk size line must end with CRLF")
		}
		f.hexDigits = 0
		if f.left == 0 {
			f.trailers = true
			f.st = sFieldStart
			f.holding, f.holdNew, f.holdFrom, f.held = true, true, i, 0
			return nil
		}
		f.st = sChunkData
	case sChunkDataCR:
		if c != '\r' {
			return badRequest("chunk data not followed by CRLF")
		}
		f.st = sChunkDataLF
	case sChunkDataLF:
		if c != '\n' {
			return badRequest("chunk data not followed by CRLF")
		}
		f.st = sChunkSize
	}
	return nil
}

func (f *Framer) methodByte(c byte) *Error {
	if f.methodLen < len(f.method) {
		f.method[f.methodLen] = c
	}
	f.methodLen++
	return nil
}

// versionOK accepts HTTP/x.y; which versions are served is the request
// path's choice.
func (f *Framer) versionOK() bool {
	v := f.version[:f.versionN]
	return len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7])
}

func (f *Framer) http10() bool { return string(f.version[:f.versionN]) == "HTTP/1.0" }

func (f *Framer) nameByte(c byte) {
	if f.nameLen < maxKept {
		f.name[f.nameLen] = lower(c)
	}
	f.nameLen++
}

// nameDone identifies a field by its name.
func (f *Framer) nameDone() *Error {
	f.st = sValue
	if f.nameLen > maxKept {
		return nil
	}
	var buf [maxKept]byte
	name := buf[:f.nameLen]
	look := false
	for i, c := range f.name[:f.nameLen] {
		if c == '_' {
			look = true
			c = '-'
		}
		name[i] = c
	}
	switch string(name) {
	case "content-length":
		f.fld = fContentLength
	case "transfer-encoding":
		f.fld = fTransferEncoding
	case "host":
		f.fld = fHost
	case "connection":
		f.fld = fConnection
	case "upgrade":
		f.fld = fUpgrade
	}
	if f.fld == fOther {
		return nil
	}
	if look {
		return badRequest(fmt.Sprintf("field name %q looks like %s", string(f.name[:f.nameLen]), string(name)))
	}
	if f.trailers {
		return badRequest(string(name) + " in the trailers")
	}
	switch f.fld {
	case fContentLength:
		if f.hasCL {
			return badRequest("more than one Content-Length")
		}
		f.hasCL = true
	case fTransferEncoding:
		if f.hasTE {
			return badRequest("more than one Transfer-Encoding")
		}
		f.hasTE = true
	case fHost:
		f.hosts++
		if f.hosts > 1 {
			return badRequest("more than one Host")
		}
	case fUpgrade:
		f.upgrade = true
	}
	return nil
}

// valueByte reads a byte of a field value that is not CR, LF or another
// control character.
func (f *Framer) valueByte(c byte) *Error {
	ows := c == ' ' || c == '\t'
	switch f.fld {
	case fContentLength:
		switch {
		case ows:
			if f.digits > 0 {
				f.gap = true
			}
		case isDigit(c) && !f.gap:
			if f.digits == maxCLDigits {
				return badRequest("Content-Length too large")
			}
			f.left = f.left*10 + int64(c-'0')
			f.digits++
		default:
			return badRequest("invalid Content-Length")
		}
	case fTransferEncoding:
		if ows && f.keptLen == 0 {
			return nil
		}
		if f.keptLen < maxKept {
			f.kept[f.keptLen] = lower(c)
		}
		f.keptLen++
	case fConnection:
		switch {
		case c == ',':
			f.gap = false
			return f.connToken()
		case ows:
			if f.keptLen > 0 {
				f.gap = true
			}
		case isTchar(c) && !f.gap:
			if f.keptLen < maxKept {
				f.kept[f.keptLen] = lower(c)
			}
			f.keptLen++
		default:
			return badRequest("invalid Connection")
		}
	}
	return nil
}

// valueDone ends a field line.
func (f *Framer) valueDone() *Error {
	switch f.fld {
	case fContentLength:
		if f.digits == 0 {
			return badRequest("invalid Content-Length")
		}
	case fTransferEncoding:
		v := f.kept[:min(f.keptLen, maxKept)]
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		if f.keptLen > maxKept || string(v) != "chunked" {
			return &Error{Status: 501, Reason: "a transfer coding other than chunked"}
		}
		f.chunked = true
	case fConnection:
		return f.connToken()
	}
	return nil
}

// connToken reads one item of the Connection list.
func (f *Framer) connToken() *Error {
	n := f.keptLen
	f.keptLen, f.gap = 0, false
	if n == 0 || n > maxKept {
		return nil
	}
	switch string(f.kept[:n]) {
	case "upgrade":
		f.connUp = true
	case "host", "content-length", "transfer-encoding":
		// Removing the header as the list says would change how the
		// request is framed or routed.
		return badRequest("Connection names " + string(f.kept[:n]))
	}
	return nil
}

// frame decides how the request whose header ended just before off is
// framed, and what to read next.
func (f *Framer) frame(off int) *Error {
	switch {
	case f.hosts == 0:
		return badRequest("no Host header")
	case f.hasTE && f.hasCL:
		return badRequest("both Content-Length and Transfer-Encoding")
	case f.hasTE && f.http10():
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	case f.upgrade && f.connUp && (f.hasTE || f.left > 0):
		return badRequest("a body on a request to upgrade")
	}
	switch {
	case f.chunked:
		f.left = 0
		f.st = sChunkSize
	case f.left > 0:
		f.st = sBody
	default:
		f.endMessage(off)
	}
	return nil
}

// tchar is a token character (RFC 9110, section 5.6.2).
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTchar(c byte) bool { return tchar[c] }

// valueOK are the bytes of a field value other than its end: HTAB, SP,
// visible characters and obs-text. targetOK are those of a request target
// after its first byte.
var valueOK, targetOK = func() (v, t [256]bool) {
	for c := 0; c < 256; c++ {
		v[c] = c == '\t' || c >= ' ' && c != 0x7f
		t[c] = c > ' ' && c != 0x7f
	}
	return v, t
}()

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
