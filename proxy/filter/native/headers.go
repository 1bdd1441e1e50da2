package native

import (
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// Headers is the header mutation filter: on the way in it applies the
// request_headers mutations, on the way out the response_headers ones
// (the virtual host's, then the route's, each time). By default it is the
// last filter of a chain, so it changes the request after every plugin
// and the response before them.
type Headers struct {
	headersOnly
	Request, Response Mutation
}

var _ filter.HeadersOnly = (*Headers)(nil)

// NewHeaders returns the filter of a virtual host's and a route's
// mutations, or nil when they change nothing.
func NewHeaders(vc *config.VirtualHost, rc *config.Route) *Headers {
	h := &Headers{
		Request:  CompileMutation(vc.RequestHeaders, rc.RequestHeaders),
		Response: CompileMutation(vc.ResponseHeaders, rc.ResponseHeaders),
	}
	if h.Request.Empty() && h.Response.Empty() {
		return nil
	}
	return h
}

func (h *Headers) Name() string { return config.NativeHeaders }

// NewStream returns the filter itself: it keeps no state per request.
func (h *Headers) NewStream(*filter.Exchange) (filter.Stream, error) { return h, nil }

func (h *Headers) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	h.Request.ApplyRequest(&x.Ctx.Request.Header)
	return filter.Continue
}

func (h *Headers) OnResponseHeaders(x *filter.Exchange, _ bool) filter.Status {
	h.Response.ApplyResponse(&x.Ctx.Response.Header)
	return filter.Continue
}

// Mutation is a compiled header mutation: each configured mutation in turn
// (the virtual host's, then the route's), and within one, remove, then
// set, then add.
type Mutation struct {
	ops []headerOp
}

type opKind uint8

const (
	opRemove opKind = iota
	opSet
	opAdd
)

type headerOp struct {
	kind  opKind
	name  []byte
	value []byte
}

// CompileMutation compiles mutations, applied in the order given.
func CompileMutation(ms ...config.HeaderMutation) Mutation {
	var m Mutation
	for _, c := range ms {
		for _, name := range c.Remove {
			m.ops = append(m.ops, headerOp{kind: opRemove, name: []byte(name)})
		}
		for _, h := range c.Set {
			m.ops = append(m.ops, headerOp{kind: opSet, name: []byte(h.Name), value: []byte(h.Value)})
		}
		for _, h := range c.Add {
			m.ops = append(m.ops, headerOp{kind: opAdd, name: []byte(h.Name), value: []byte(h.Value)})
		}
	}
	return m
}

// Empty reports whether the mutation changes nothing.
func (m *Mutation) Empty() bool { return len(m.ops) == 0 }

// ApplyRequest applies the mutation to request headers.
func (m *Mutation) ApplyRequest(h *fasthttp.RequestHeader) { apply(m, h) }

// ApplyResponse applies the mutation to response headers.
func (m *Mutation) ApplyResponse(h *fasthttp.ResponseHeader) { apply(m, h) }

// headers is what request and response headers have in common for
// writing.
type headers interface {
	DelBytes(key []byte)
	SetBytesKV(key, value []byte)
	AddBytesKV(key, value []byte)
}

func apply[H headers](m *Mutation, h H) {
	for i := range m.ops {
		op := &m.ops[i]
		switch op.kind {
		case opRemove:
			h.DelBytes(op.name)
		case opSet:
			h.SetBytesKV(op.name, op.value)
		case opAdd:
			h.AddBytesKV(op.name, op.value)
		}
	}
}
