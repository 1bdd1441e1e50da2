package main

import (
	"bytes"
	"errors"
)

var (
	errMalformed = errors.New("malformed request")
	errTooLarge  = errors.New("request head too large")
	errCoding    = errors.New("transfer coding other than chunked")
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
	length, chunked := 0, false
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
			if !bytes.EqualFold(value, []byte("chunked")) {
				return request{err: errCoding, close: true}, len(buf)
			}
			chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				q.close = true
			case bytes.EqualFold(value, []byte("keep-alive")):
				q.close = false
			}
		}
	}
	if chunked {
		length, err := chunks(buf[end+4:])
		switch {
		case err != nil:
			return request{err: err, close: true}, len(buf)
		case length == 0:
			return request{}, 0
		}
		return q, end + 4 + length
	}
	n = end + 4 + length
	if n > len(buf) {
		return request{}, 0
	}
	return q, n
}

// chunks returns the length of the chunked body at the front of b, trailers
// included, or 0 when b does not hold all of it yet.
func chunks(b []byte) (int, error) {
	at := 0
	for {
		eol := bytes.Index(b[at:], []byte("\r\n"))
		if eol < 0 {
			if len(b) > maxBody {
				return 0, errBodyLarge
			}
			return 0, nil
		}
		line := b[at : at+eol]
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // a chunk extension
		}
		size, ok := xtoi(bytes.TrimSpace(line))
		if !ok {
			return 0, errMalformed
		}
		at += eol + 2
		if size == 0 {
			// Trailer fields, if any, up to an empty line.
			for {
				eol := bytes.Index(b[at:], []byte("\r\n"))
				if eol < 0 {
					return 0, nil
				}
				at += eol + 2
				if eol == 0 {
					return at, nil
				}
			}
		}
		if at+size > maxBody {
			return 0, errBodyLarge
		}
		if len(b) < at+size+2 {
			return 0, nil
		}
		if !bytes.Equal(b[at+size:at+size+2], []byte("\r\n")) {
			return 0, errMalformed
		}
		at += size + 2
	}
}

// xtoi parses a chunk size: hexadecimal, non-negative, at most maxBody.
func xtoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | int(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | int(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
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
