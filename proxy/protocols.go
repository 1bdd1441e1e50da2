package proxy

import (
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// connIdentity is what a TLS connection (tlsconf.Conn, h3.Conn) tells the
// request path about itself; it is computed once per connection.
type connIdentity interface {
	TLSInfo() *filter.TLSInfo
}

// adaptConn completes what acquire knows of the request's connection: its
// TLS identity, and the protocol when an HTTP/2 or HTTP/3 front end made
// the request.
func (x *exchange) adaptConn(ctx *fasthttp.RequestCtx) {
	if x.Start.IsZero() {
		x.Start = time.Now() // HTTP/2 and HTTP/3 requests carry no server time
	}
	switch string(ctx.Request.Header.Protocol()) {
	case "HTTP/2":
		x.Protocol = "HTTP/2"
	case "HTTP/3":
		x.Protocol = "HTTP/3"
	}
	if ci, ok := ctx.Conn().(connIdentity); ok {
		x.conn.TLS = ci.TLSInfo()
	}
}

// copyTrailers passes the upstream's trailers on once its body has ended.
func (x *exchange) copyTrailers() {
	resp := &x.Ctx.Response
	for k := range x.up.Header.Trailers() {
		if resp.Header.AddTrailerBytes(k) == nil {
			resp.Header.SetBytesKV(k, x.up.Header.PeekBytes(k))
		}
	}
}

// setUpstreamScheme makes the request's scheme the endpoint's.
func setUpstreamScheme(ctx *fasthttp.RequestCtx, ep *cluster.Endpoint) {
	if ep.TLS() {
		ctx.Request.URI().SetScheme("https")
	} else if ctx.IsTLS() {
		ctx.Request.URI().SetScheme("http")
	}
}

// warnInsecure warns about every cluster that does not verify its
// endpoints' certificates, each time such a configuration is applied.
func (s *Server) warnInsecure(cfg *config.Config) {
	for _, name := range cluster.InsecureClusters(cfg) {
		s.log.Warn("cluster does not verify its endpoints' TLS certificates (insecure_skip_verify_i_know_what_i_am_doing): anyone on the path can read and change its traffic",
			zap.String("cluster", name))
	}
}
