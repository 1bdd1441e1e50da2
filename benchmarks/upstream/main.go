// Command upstream is the origin server of the side-by-side benchmarks: a
// fasthttp server that answers GET /64 with a 64-byte body and GET /16k with a
// 16 KiB body, over keep-alive connections. Every scenario, direct or
// proxied, ends at one instance of it, so its cost is the same in each.
package main

import (
	"bytes"
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

// Payload sizes, in bytes, of the two bodies served.
const (
	smallBody = 64
	largeBody = 16 << 10
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address (host:port)")
	flag.Parse()

	small := bytes.Repeat([]byte("a"), smallBody)
	large := bytes.Repeat([]byte("b"), largeBody)

	handler := func(ctx *fasthttp.RequestCtx) {
		var body []byte
		switch string(ctx.Path()) {
		case "/64":
			body = small
		case "/16k":
			body = large
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
			return
		}
		ctx.SetContentType("application/octet-stream")
		// SetBodyRaw does not copy: both bodies are immutable for the life
		// of the process.
		ctx.Response.SetBodyRaw(body)
	}

	srv := &fasthttp.Server{
		Handler:     handler,
		Name:        "upstream",
		IdleTimeout: 2 * time.Minute,
		// Room for the 16 KiB response whole, so that each response
		// leaves in one write, as a file from nginx or any origin that
		// gathers its writes does. With fasthttp's default 4 KiB buffer
		// the body went out in a second write: every proxy then read the
		// response in two pieces, and the extra writes and wake-ups on the
		// core the upstream shares with wrk capped every scenario well
		// below what the proxies could do.
		WriteBufferSize: largeBody + 4<<10,
	}
	log.Printf("upstream listening on %s", *addr)
	if err := srv.ListenAndServe(*addr); err != nil {
		log.Fatalf("upstream: %v", err)
	}
}
