// Command upstream is the origin server of the side-by-side benchmarks. It
// answers GET /64 with a 64-byte body and GET /16k with a 16 KiB body, over
// keep-alive connections, each response in one write. Every scenario, direct
// or proxied, ends at one instance of it, so its cost is the same in each.
//
// The origin shares a core with the load generator, so whatever it spends
// per request is taken from the load the proxies see. On Linux it is
// therefore one event loop serving every connection from one epoll set, with
// the responses built ahead and only their Date refreshed, once a second:
// about as little work per request as the kernel allows, so that the proxy
// under test, not the origin, bounds what a run measures. Elsewhere it
// serves each connection from a goroutine; the framing is the same.
package main

import (
	"bytes"
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"
)

// Payload sizes, in bytes, of the two bodies served.
const (
	smallBody = 64
	largeBody = 16 << 10
)

// maxRequest bounds the bytes of one request head the origin buffers; a
// longer head is answered 431 and the connection closed.
const maxRequest = 16 << 10

// response is one prebuilt answer. Its Date is rewritten in place when the
// second changes.
type response struct {
	buf     []byte
	dateAt  int  // offset of the Date value, len(http.TimeFormat) bytes
	closing bool // the connection closes after it
}

// responses holds every answer the origin gives.
type responses struct {
	small, large, notFound, badRequest, tooLarge, bodyTooLarge, notImplemented response
	all                                                                        []*response
	second                                                                     int64
}

func newResponses() *responses {
	r := &responses{}
	r.small = build(200, "application/octet-stream", bytes.Repeat([]byte("a"), smallBody), false)
	r.large = build(200, "application/octet-stream", bytes.Repeat([]byte("b"), largeBody), false)
	r.notFound = build(404, "text/plain; charset=utf-8", []byte("not found"), false)
	r.badRequest = build(400, "text/plain; charset=utf-8", []byte("bad request"), true)
	r.tooLarge = build(431, "text/plain; charset=utf-8", []byte("request header fields too large"), true)
	r.bodyTooLarge = build(413, "text/plain; charset=utf-8", []byte("request body too large"), true)
	r.notImplemented = build(501, "text/plain; charset=utf-8", []byte("transfer codings other than chunked are not supported"), true)
	r.all = []*response{&r.small, &r.large, &r.notFound, &r.badRequest, &r.tooLarge, &r.bodyTooLarge, &r.notImplemented}
	r.tick(time.Now())
	return r
}

func build(status int, contentType string, body []byte, closing bool) response {
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nServer: upstream\r\nDate: "...)
	at := len(b)
	b = append(b, http.TimeFormat...) // placeholder of the right length
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, contentType...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if closing {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	return response{buf: b, dateAt: at, closing: closing}
}

// tick refreshes every Date when now is in a later second than the last.
func (r *responses) tick(now time.Time) {
	s := now.Unix()
	if s == r.second {
		return
	}
	r.second = s
	var d [len(http.TimeFormat)]byte
	date := now.UTC().AppendFormat(d[:0], http.TimeFormat)
	for _, resp := range r.all {
		copy(resp.buf[resp.dateAt:], date)
	}
}

// answer picks the response to a complete request.
func (r *responses) answer(q request) *response {
	switch {
	case q.err == errTooLarge:
		return &r.tooLarge
	case q.err == errBodyLarge:
		return &r.bodyTooLarge
	case q.err == errCoding:
		return &r.notImplemented
	case q.err != nil:
		return &r.badRequest
	case string(q.path) == "/64":
		return &r.small
	case string(q.path) == "/16k":
		return &r.large
	}
	return &r.notFound
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address (host:port)")
	flag.Parse()
	log.Printf("upstream listening on %s", *addr)
	// serve runs until it fails: it never returns nil.
	log.Fatalf("upstream: %v", serve(*addr, newResponses()))
}
