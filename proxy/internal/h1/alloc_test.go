//go:build !race

package h1

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// typical is a request as a browser or an SDK sends it.
var typical = []byte("GET /api/v1/users/42?fields=name,email HTTP/1.1\r\nHost: api.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\nAccept: application/json\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nConnection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef0123456789abcdef\r\nX-Request-Id: 5b3c4f0e-9a43-4b2e-8d1f-3f2b8c6d7e90\r\n\r\n")

func TestFeedAllocs(t *testing.T) {
	chunked := []byte("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	var f Framer
	if n := testing.AllocsPerRun(100, func() {
		f.Feed(typical)
		f.Feed(chunked)
	}); n != 0 || f.Err() != nil {
		t.Fatalf("%v allocations per request pair (violation %v), want 0", n, f.Err())
	}
}

func BenchmarkFeed(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(typical)))
	var f Framer
	for b.Loop() {
		if f.Feed(typical) != len(typical) {
			b.Fatal(f.Err())
		}
	}
}

// BenchmarkFasthttpHeader parses the same request as BenchmarkFeed with
// fasthttp, for scale: the framer's cost is read against it.
func BenchmarkFasthttpHeader(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(typical)))
	var h fasthttp.RequestHeader
	r := bytes.NewReader(typical)
	br := bufio.NewReader(r)
	for b.Loop() {
		r.Reset(typical)
		br.Reset(r)
		if err := h.Read(br); err != nil {
			b.Fatal(err)
		}
	}
}
