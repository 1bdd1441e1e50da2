// Command forwarder is the floor for a Go proxy in the side-by-side
// benchmarks: a fasthttp server that hands every request, as received, to one
// fasthttp.HostClient with pooled keep-alive connections. It has no routing,
// filters, metrics or logging, so the distance between it and a full proxy
// is the price of those features.
package main

import (
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address (host:port)")
	upstream := flag.String("upstream", "127.0.0.1:9000", "upstream address (host:port)")
	maxConns := flag.Int("max-conns", 1024, "most upstream connections")
	flag.Parse()

	client := &fasthttp.HostClient{
		Addr:                *upstream,
		MaxConns:            *maxConns,
		MaxIdleConnDuration: time.Minute,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
	}

	handler := func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		// Connection is hop-by-hop: the client's choice must not close
		// the pooled upstream connection, nor the upstream's the client's.
		req.Header.Del("Connection")
		if err := client.Do(req, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			return
		}
		ctx.Response.Header.Del("Connection")
	}

	srv := &fasthttp.Server{
		Handler:     handler,
		Name:        "forwarder",
		IdleTimeout: 2 * time.Minute,
	}
	log.Printf("forwarder listening on %s, upstream %s", *addr, *upstream)
	if err := srv.ListenAndServe(*addr); err != nil {
		log.Fatalf("forwarder: %v", err)
	}
}
