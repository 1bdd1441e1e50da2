package proxy

import (
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/proxy/filter"
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

var _ filter.Decider = (*exchange)(nil)

// Decide emits a decision record of d and the request: an exchange is its
// own filter.Decider when decisions have a sink. The destination, unless d
// names one, is the request's cluster, or the route's only cluster before
// one is picked.
func (x *exchange) Decide(_ *filter.Exchange, d *filter.Decision) {
	tel := x.h.srv.tel
	if !tel.Enabled(telemetry.KindDecision) {
		return
	}
	r := tel.Acquire(telemetry.KindDecision)
	o, req := &r.Decision, &x.Ctx.Request
	r.Time = time.Now()
	o.Verdict = telemetry.Deny
	if d.Allowed {
		o.Verdict = telemetry.Allow
	}
	o.Source, o.Policy, o.Rule, o.Destination = d.Source, d.Policy, d.Rule, d.Destination
	if o.Destination == "" {
		o.Destination = x.Cluster
	}
	if o.Destination == "" && x.route != nil && len(x.route.Targets) == 1 {
		o.Destination = x.route.Targets[0].Cluster.Name
	}
	o.RequestID = append(o.RequestID, x.RequestID...)
	o.TraceID = x.span.AppendTraceID(o.TraceID)
	o.SourceAddr = x.conn.Remote.AppendTo(o.SourceAddr)
	o.SourceIdentity = append(o.SourceIdentity, x.peerIdentity()...)
	o.Method = append(o.Method, req.Header.Method()...)
	o.Authority = append(o.Authority, req.Header.Host()...)
	o.Path = append(o.Path, req.RequestURI()...)
	o.Reason = append(o.Reason, d.Reason...)
	tel.Emit(r)
}
