// Command hello is the smallest fasthttp server: it answers every request
// with 200 and a 13-byte body. It is the target of the side-by-side
// measurement of `wasmgate bench` and wrk in ../../README.md.
//
//	go run ./benchmarks/loadgen/internal/hello -addr 127.0.0.1:8089
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "address to listen on")
	flag.Parse()
	body := []byte("Hello, world!")
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}
	log.Fatal(fasthttp.ListenAndServe(*addr, h))
}
