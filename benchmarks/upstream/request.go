package main

import (
	"bytes"
	"errors"
)

var (
	errMalformed = errors.New("malformed request")
	errTooLarge  = errors.New("request head too large")
	errChunked   = errors.New("chunked request body")
	errBodyLarge = errors.New("request body too large")
)

// maxBody bounds the request body the origin buffers; a longer one is
// answered 413 and the connection closed.
const maxBody = 1 << 20

// request is what the origin needs of one request: its path, whether the
// connection stays open after it, and whether it could be read at all.
type request struct {
	path  []byte // aliases the read buffer
	close bool
	err   error // when set, the connection closes after the answer
}

// next frames the first request in buf. It returns the request and the
// bytes it spans, head and body; n is 0 when buf does not yet hold all of
// it. A request that cannot be framed comes back with err set and n = len(buf).
func next(buf []byte) (q request, n int) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) > maxRequest {
			return request{err: errTooLarge, close: true}, len(buf)
		}
		return request{}, 0
	}
	if end > maxRequest {
		return request{err: errTooLarge, close: true}, len(buf)
	}
	head := buf[:end+2]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, target, ok1 := bytes.Cut(line, []byte(" "))
	path, version, ok2 := bytes.Cut(target, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(path) == 0 || !bytes.HasPrefix(version, []byte("HTTP/1.")) {
		return request{err: errMalformed, close: true}, len(buf)
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	q = request{path: path, close: string(version) == "HTTP/1.0"}
	length := 0
	for len(rest) > 0 {
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(field, []byte(":"))
		if !ok {
			return request{err: errMalformed, close: true}, len(buf)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			l, ok := atoi(value)
			if !ok {
				return request{err: errMalformed, close: true}, len(buf)
			}
			if l > maxBody {
				return request{err: errBodyLarge, close: true}, len(buf)
			}
			length = l
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return request{err: errChunked, close: true}, len(buf)
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				q.close = true
			case bytes.EqualFold(value, []byte("keep-alive")):
				q.close = false
			}
		}
	}
	n = end + 4 + length
	if n > len(buf) {
		return request{}, 0
	}
	return q, n
}

// atoi parses a non-negative decimal that fits comfortably in an int.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 12 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// answers frames every complete request at the front of in and appends the
// response to each to out. It returns out, the bytes consumed, and whether
// the connection closes after the last of them; no request is read past one
// that closes the connection.
func (r *responses) answers(in []byte, out []*response) (_ []*response, consumed int, closing bool) {
	for consumed < len(in) {
		q, n := next(in[consumed:])
		if n == 0 {
			break
		}
		consumed += n
		resp := r.answer(q)
		out = append(out, resp)
		if q.close || resp.closing {
			return out, consumed, true
		}
	}
	return out, consumed, false
}
