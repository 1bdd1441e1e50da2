package h3_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/h3"
	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// BenchmarkH3 measures whole HTTP/3 requests over loopback QUIC, quic-go's
// server and client included: 32 requests in flight on one connection.
func BenchmarkH3(b *testing.B) {
	p := prototest.NewPKI(b)
	ts, err := tlsconf.NewServer(config.ListenerTLS{Certificates: []config.CertificateFiles{{CertFile: p.CertFile, KeyFile: p.KeyFile}}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := h3.NewServer(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentType("text/plain")
		ctx.Response.SetBodyString("hello")
	}, ts, h3.Options{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(pc) }()
	defer srv.Shutdown(b.Context())
	tr := &http3.Transport{TLSClientConfig: p.ClientTLS()}
	defer tr.Close()
	c := &http.Client{Transport: tr}
	target := "https://" + pc.LocalAddr().String() + "/api/v1/items"
	if resp, err := c.Get(target); err != nil {
		b.Fatal(err)
	} else {
		resp.Body.Close()
	}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(target)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
