package proxy

// Request mirroring: copies of a route's requests sent to other clusters,
// their answers dropped.

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// mirror sends a copy of the request, as the route's rewrites left it, to
// each of the route's mirrors that draws it, as Envoy's
// request_mirror_policies do: with "-shadow" added to its Host, on a
// goroutine of its own, bounded by the route's timeout and the mirror
// cluster's circuit breakers, its answer dropped. The request itself goes
// on at once. A streamed body of known length up to cluster.SmallBody is
// read whole first so that it can be sent twice; a longer one, or one a
// filter streams, is not copied (result skipped). It reports false when
// it answered the request instead: the client sent less body than it
// declared.
func (x *exchange) mirror(rt *route.Route) bool {
	req := &x.Ctx.Request
	for i := range rt.Mirrors {
		m := &rt.Mirrors[i]
		if !m.Roll() {
			continue
		}
		if x.reqFilter == nil && !x.bufferSmallBody(req) {
			return false
		}
		var g cluster.Guard
		if x.reqFilter != nil || req.IsBodyStream() || m.Cluster.Admit(&g) != nil {
			m.Stats.Count(metrics.MirrorSkipped)
			continue
		}
		ep := m.Cluster.Pick(x.Ctx)
		if ep == nil {
			g.Release()
			m.Stats.Count(metrics.MirrorSkipped)
			continue
		}
		c := fasthttp.AcquireRequest()
		req.CopyTo(c)
		host := shadowHost(c.Header.Host())
		c.URI().SetHostBytes(host)
		c.Header.SetHostBytes(host)
		if ep.TLS() {
			c.URI().SetScheme("https")
		} else {
			c.URI().SetScheme("http")
		}
		go sendMirror(m, ep, c, rt.Timeout, g)
	}
	return true
}

// sendMirror sends a mirror's copy of a request and drops the answer.
func sendMirror(m *route.Mirror, ep *cluster.Endpoint, req *fasthttp.Request, timeout time.Duration, g cluster.Guard) {
	resp := fasthttp.AcquireResponse()
	var body cluster.Body
	err := ep.Do(req, resp, timeout, &body)
	// A body too long to be read whole is not read at all: closing it
	// closes its connection.
	_ = body.Close()
	g.Release()
	if err != nil {
		m.Stats.Count(metrics.MirrorFailed)
	} else {
		m.Stats.Count(metrics.MirrorAnswered)
	}
	fasthttp.ReleaseRequest(req)
	fasthttp.ReleaseResponse(resp)
}

// shadowHost is host with "-shadow" after its name and before its port,
// if it has one: the Host of a mirror's copy, as Envoy names it.
func shadowHost(host []byte) []byte {
	name, port := host, []byte(nil)
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		name, port = host[:i], host[i:]
	}
	out := make([]byte, 0, len(host)+len("-shadow"))
	out = append(append(append(out, name...), "-shadow"...), port...)
	return out
}

// bufferSmallBody reads a streamed request body of known length up to
// cluster.SmallBody into memory, so that it can be sent more than once
// (retries, mirrors); a longer or chunked body is left streaming. It
// reports false, having answered 400, when the client sent less than it
// declared.
func (x *exchange) bufferSmallBody(req *fasthttp.Request) bool {
	if !req.IsBodyStream() {
		return true
	}
	n := req.Header.ContentLength()
	if n < 0 || n > cluster.SmallBody {
		return true
	}
	if body := req.Body(); len(body) != n {
		x.localError(fasthttp.StatusBadRequest, filter.FlagDownstreamProtocolError, "downstream_body_incomplete")
		x.Ctx.SetConnectionClose()
		return false
	}
	return true
}
