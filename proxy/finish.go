package proxy

import (
	"bytes"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/telemetry/tracing"
)

// The last stage: metrics, the filters' log callbacks, the request's
// span, its telemetry record and the access log, once the response has been handed to the server.

// finish records the request: metrics, access log, filter log and done
// callbacks. It runs once, when the response has been handed to the
// server (or, for a streamed body, when the body is done).
func (x *exchange) finish() {
	ctx := x.Ctx
	if x.Local() && !x.body.active {
		// A response filter's own answer, made after answered's turn
		// (not one made while a body streamed: that response is sent).
		x.grpcLocalReply()
	}
	if !x.serverSet {
		x.setServer()
	}
	if x.status == 0 {
		x.status = ctx.Response.StatusCode()
		if x.grpcFrom != 0 {
			x.status = x.grpcFrom
		}
		if x.stats != nil {
			x.stats.Observe(x.status, time.Since(x.Start))
		}
	}
	for i := len(x.streams) - 1; i >= 0; i-- {
		x.streams[i].OnLog(&x.Exchange)
	}
	for _, s := range x.streams {
		s.Done(&x.Exchange)
	}
	if x.Route != "" {
		x.span.SetRoute(x.Route, x.Cluster)
	}
	x.span.End(x.status)
	if tel := x.h.srv.tel; tel.Enabled(telemetry.KindAccess) {
		x.emitAccess(tel)
	}
	if red := x.h.srv.red; red != nil && x.Route != "" {
		red.Stats(x.Route, x.Cluster, x.peerIdentity()).Observe(x.status, time.Since(x.Start))
	}
	x.span = tracing.Span{}
	if e := x.entry; e != nil {
		e.Duration = time.Since(x.Start)
		e.Status = x.status
		e.Flags = x.Flags
		e.Details = x.Details
		e.Route, e.VirtualHost = x.Route, x.VirtualHost
		e.UpstreamClust, e.UpstreamHost = x.Cluster, x.UpstreamAddr
		// As the forwarded filter left it.
		e.XForwardedFor = append(e.XForwardedFor[:0], ctx.Request.Header.Peek("X-Forwarded-For")...)
		if x.body.active {
			e.BytesSent = x.body.n
		} else {
			e.BytesSent = int64(len(ctx.Response.Body()))
		}
		x.fillDynamic(e, false)
		x.snap.log.Log(e)
	}
	x.release()
}

// fillEntry copies the request's fields into the access log entry before
// filters and rewrites change them.
func (x *exchange) fillEntry() {
	e, req := x.entry, &x.Ctx.Request
	e.Start = x.Start
	e.Listener = x.Listener
	e.Protocol = x.Protocol
	e.RequestID = append(e.RequestID, x.RequestID...)
	e.RemoteAddr = x.conn.Remote.AppendTo(e.RemoteAddr)
	e.Method = append(e.Method, req.Header.Method()...)
	e.Authority = append(e.Authority, req.Header.Host()...)
	e.Path = append(e.Path, req.RequestURI()...)
	e.UserAgent = append(e.UserAgent, req.Header.UserAgent()...)
	if n := req.Header.ContentLength(); n > 0 {
		e.BytesReceived = int64(n)
	}
	x.fillDynamic(e, true)
}

var redacted = []byte("[redacted]")

// fillDynamic sets the access log's header and filter state fields: at
// the start the request headers, at the end the response headers and the
// filter state. At the end, header fields that a filter lists under a
// filter state key ending in ".redact" (comma-separated names) are
// replaced by "[redacted]".
func (x *exchange) fillDynamic(e *accesslog.Entry, start bool) {
	dyn := x.snap.log.Dynamic()
	for i, d := range dyn {
		var v []byte
		switch {
		case start && d.Source == accesslog.RequestHeader:
			v = x.Ctx.Request.Header.Peek(d.Name)
		case !start && d.Source == accesslog.ResponseHeader:
			v = x.Ctx.Response.Header.Peek(d.Name)
		case !start && d.Source == accesslog.FilterState:
			v = x.FilterState[d.Name]
		default:
			continue
		}
		if v != nil {
			e.SetDynamic(i, v)
		}
	}
	if start || len(x.FilterState) == 0 {
		return
	}
	for key, names := range x.FilterState {
		if !strings.HasSuffix(key, ".redact") {
			continue
		}
		for i, d := range dyn {
			if d.Source != accesslog.FilterState && listed(names, d.Name) {
				e.SetDynamic(i, redacted)
			}
		}
	}
}

// listed reports whether the comma-separated list holds name, ignoring
// case and spaces.
func listed(list []byte, name string) bool {
	for len(list) > 0 {
		item := list
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(name)) {
			return true
		}
	}
	return false
}
