package proxy

import (
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// emitAccess sends the request's access record to the telemetry
// pipeline. It runs in finish, once the status is known.
func (x *exchange) emitAccess(tel *telemetry.Pipeline) {
	r := tel.Acquire(telemetry.KindAccess)
	a, req := &r.Access, &x.Ctx.Request
	r.Time = x.Start
	a.RequestID = append(a.RequestID, x.RequestID...)
	a.TraceID = x.span.AppendTraceID(a.TraceID)
	a.Method = append(a.Method, req.Header.Method()...)
	a.Authority = append(a.Authority, req.Header.Host()...)
	a.Path = append(a.Path, req.RequestURI()...)
	a.Protocol = x.Protocol
	a.Status = x.status
	a.Duration = time.Since(x.Start)
	if n := req.Header.ContentLength(); n > 0 {
		a.BytesReceived = int64(n)
	}
	if x.body.active {
		a.BytesSent = x.body.n
	} else {
		a.BytesSent = int64(len(x.Ctx.Response.Body()))
	}
	a.RemoteAddr = x.conn.Remote.AppendTo(a.RemoteAddr)
	a.SourceIdentity = append(a.SourceIdentity, x.peerIdentity()...)
	a.UserAgent = append(a.UserAgent, req.Header.UserAgent()...)
	a.Listener, a.VirtualHost, a.Route = x.Listener, x.VirtualHost, x.Route
	a.Cluster, a.UpstreamHost = x.Cluster, x.UpstreamAddr
	a.Flags = x.Flags.AppendTo(a.Flags)
	tel.Emit(r)
}

// peerIdentity is the SPIFFE ID of a verified client certificate, or "".
func (x *exchange) peerIdentity() string {
	if t := x.conn.TLS; t != nil && t.PeerVerified {
		for _, san := range t.PeerURISANs {
			if strings.HasPrefix(san, "spiffe://") {
				return san
			}
		}
	}
	return ""
}
