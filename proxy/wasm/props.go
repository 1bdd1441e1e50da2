package wasm

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Properties follow Envoy's attribute names. A path's segments are joined
// by NUL bytes. Strings are raw bytes, integers and timestamps 8 bytes
// little-endian (timestamps and durations in nanoseconds), booleans one
// byte, maps in the header-map format.

// filterStatePrefix is where proxy_set_property stores values in the
// exchange's filter state, as Envoy stores them under "wasm.".
const filterStatePrefix = "wasm."

func hostGetProperty(in *instance, a []uint64) abi.Status {
	path, ok := in.mem.Read(u32(a[0]), u32(a[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	in.keys = append(in.keys[:0], path...) // the path outlives allocation
	v, st := in.property(in.keys)
	if st != abi.StatusOK {
		return st
	}
	in.scratch = v
	return in.copyOut(v, u32(a[2]), u32(a[3]))
}

// propCtx is what a property's reader gets: the instance, the effective
// request (nil in a root context), the rest of the path after the table's
// key, and the buffer to append the value to.
type propCtx struct {
	in   *instance
	x    *filter.Exchange
	rest []byte
	out  []byte
}

func (c *propCtx) str(s string) ([]byte, abi.Status) { return append(c.out, s...), abi.StatusOK }
func (c *propCtx) byt(b []byte) ([]byte, abi.Status) { return append(c.out, b...), abi.StatusOK }
func (c *propCtx) num(n uint64) ([]byte, abi.Status) {
	return binary.LittleEndian.AppendUint64(c.out, n), abi.StatusOK
}
func (c *propCtx) boolean(b bool) ([]byte, abi.Status) {
	if b {
		return append(c.out, 1), abi.StatusOK
	}
	return append(c.out, 0), abi.StatusOK
}

// prop reads one property. needsStream: it reads the request, and is
// NOT_FOUND in a root context. needsHTTP: it reads the HTTP request or
// response, and is NOT_FOUND in a network filter's context too.
type prop struct {
	read        func(c *propCtx) ([]byte, abi.Status)
	needsStream bool
	needsHTTP   bool
}

// properties is the table of every property the host serves, by path
// (segments joined by NUL). Paths that take sub-keys of their own (node
// metadata, route and cluster metadata) are in propertyPrefixes, by their
// first segment. The README's compatibility table lists them with their
// Envoy equivalents.
var properties map[string]prop

// propertyPrefixes serve every path under their first segment.
var propertyPrefixes map[string]prop

// propertyHeads holds the first segment of every path the host serves,
// and of every prefix: a path under one of them belongs to the host.
var propertyHeads map[string]bool

func init() {
	s := func(f func(c *propCtx) ([]byte, abi.Status)) prop { return prop{read: f, needsStream: true} }
	tls := func(f func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status)) prop {
		return s(func(c *propCtx) ([]byte, abi.Status) {
			if c.x.Conn == nil || c.x.Conn.TLS == nil {
				return nil, abi.StatusNotFound
			}
			return f(c, c.x.Conn.TLS)
		})
	}
	peerPrincipal := tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) {
		if !t.PeerPresented || !t.PeerVerified {
			return nil, abi.StatusNotFound
		}
		return first(c.out, t.PeerURISANs)
	})
	localPrincipal := tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return first(c.out, t.LocalURISANs) })
	routeName := s(func(c *propCtx) ([]byte, abi.Status) {
		if c.x.Route == "" && c.in.cur.f.route != "" {
			return c.str(c.in.cur.f.route)
		}
		return c.str(c.x.Route)
	})
	clusterName := s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.Cluster) })
	listenerName := s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.Listener) })
	listenerDirection := s(func(c *propCtx) ([]byte, abi.Status) {
		var d uint64
		if meta := c.in.cur.f.meta; meta != nil {
			d = meta.directions[c.x.Listener]
		}
		return c.num(d)
	})
	requestURI := func(c *propCtx) []byte { return c.x.Ctx.Request.URI().RequestURI() }
	properties = map[string]prop{
		"plugin_name": {read: func(c *propCtx) ([]byte, abi.Status) { return c.str(c.in.pluginName()) }},
		"plugin_root_id": {read: func(c *propCtx) ([]byte, abi.Status) {
			if c.in.curP == nil {
				return nil, abi.StatusNotFound
			}
			return c.str(c.in.curP.cfg.RootID)
		}},
		"plugin_vm_id": {read: func(c *propCtx) ([]byte, abi.Status) { return c.str(c.in.vm.name) }},

		"route_name":                routeName,
		"cluster_name":              clusterName,
		"listener_name":             listenerName,
		"xds\x00route_name":         s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.Route) }),
		"xds\x00cluster_name":       clusterName,
		"xds\x00listener_name":      listenerName,
		"listener_direction":        listenerDirection,
		"xds\x00listener_direction": listenerDirection,
		"xds\x00virtual_host_name":  s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.VirtualHost) }),

		"request\x00path": s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(requestURI(c)) }),
		"request\x00url_path": s(func(c *propCtx) ([]byte, abi.Status) {
			u := requestURI(c)
			if i := bytes.IndexByte(u, '?'); i >= 0 {
				u = u[:i]
			}
			return c.byt(u)
		}),
		"request\x00query": s(func(c *propCtx) ([]byte, abi.Status) {
			u := requestURI(c)
			if i := bytes.IndexByte(u, '?'); i >= 0 {
				return c.byt(u[i+1:])
			}
			return c.out, abi.StatusOK
		}),
		"request\x00host":   s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(c.x.Ctx.Request.Host()) }),
		"request\x00scheme": s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(scheme(c.x)) }),
		"request\x00method": s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(c.x.Ctx.Request.Header.Method()) }),
		"request\x00headers": s(func(c *propCtx) ([]byte, abi.Status) {
			if st := c.in.collect(abi.MapHTTPRequestHeaders); st != abi.StatusOK {
				return nil, st
			}
			return serialize(c.out, c.in.kv), abi.StatusOK
		}),
		"request\x00referer":   s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(c.x.Ctx.Request.Header.Referer()) }),
		"request\x00useragent": s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(c.x.Ctx.Request.Header.UserAgent()) }),
		"request\x00id":        s(func(c *propCtx) ([]byte, abi.Status) { return c.byt(c.x.RequestID) }),
		"request\x00protocol":  s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.Protocol) }),
		"request\x00time":      s(func(c *propCtx) ([]byte, abi.Status) { return c.num(uint64(c.x.Start.UnixNano())) }),
		"request\x00duration": s(func(c *propCtx) ([]byte, abi.Status) {
			if c.x.Start.IsZero() {
				return nil, abi.StatusNotFound
			}
			return c.num(uint64(time.Since(c.x.Start)))
		}),
		"request\x00size": s(func(c *propCtx) ([]byte, abi.Status) { return c.num(uint64(len(c.x.Ctx.Request.Body()))) }),
		"request\x00total_size": s(func(c *propCtx) ([]byte, abi.Status) {
			req := &c.x.Ctx.Request
			return c.num(uint64(len(req.Body()) + req.Header.Len()))
		}),

		"response\x00code":         s(func(c *propCtx) ([]byte, abi.Status) { return c.num(uint64(c.x.Ctx.Response.StatusCode())) }),
		"response\x00code_details": s(func(c *propCtx) ([]byte, abi.Status) { return c.str(c.x.Details) }),
		"response\x00flags":        s(func(c *propCtx) ([]byte, abi.Status) { return c.num(uint64(c.x.Flags)) }),
		"response\x00headers": s(func(c *propCtx) ([]byte, abi.Status) {
			if st := c.in.collect(abi.MapHTTPResponseHeaders); st != abi.StatusOK {
				return nil, st
			}
			return serialize(c.out, c.in.kv), abi.StatusOK
		}),
		"response\x00size": s(func(c *propCtx) ([]byte, abi.Status) { return c.num(uint64(len(c.x.Ctx.Response.Body()))) }),
		"response\x00total_size": s(func(c *propCtx) ([]byte, abi.Status) {
			resp := &c.x.Ctx.Response
			return c.num(uint64(len(resp.Body()) + resp.Header.Len()))
		}),
		"response\x00grpc_status": s(func(c *propCtx) ([]byte, abi.Status) {
			if v := c.x.Ctx.Response.Header.Peek("grpc-status"); v != nil {
				return c.byt(v)
			}
			return nil, abi.StatusNotFound
		}),

		"source\x00address":      s(func(c *propCtx) ([]byte, abi.Status) { return connAddr(c, false, "address") }),
		"source\x00port":         s(func(c *propCtx) ([]byte, abi.Status) { return connAddr(c, false, "port") }),
		"destination\x00address": s(func(c *propCtx) ([]byte, abi.Status) { return connAddr(c, true, "address") }),
		"destination\x00port":    s(func(c *propCtx) ([]byte, abi.Status) { return connAddr(c, true, "port") }),
		// The mesh identities of the two ends: the verified peer
		// certificate's URI SAN (a SPIFFE ID), and the local one's.
		"source\x00principal":      peerPrincipal,
		"destination\x00principal": localPrincipal,
		"upstream\x00address":      s(func(c *propCtx) ([]byte, abi.Status) { return upstreamAddr(c, "address") }),
		"upstream\x00port":         s(func(c *propCtx) ([]byte, abi.Status) { return upstreamAddr(c, "port") }),

		"connection\x00id": s(func(c *propCtx) ([]byte, abi.Status) {
			if c.x.Conn == nil {
				return nil, abi.StatusNotFound
			}
			return c.num(c.x.Conn.ID)
		}),
		"connection\x00mtls": s(func(c *propCtx) ([]byte, abi.Status) {
			if c.x.Conn == nil {
				return nil, abi.StatusNotFound
			}
			t := c.x.Conn.TLS
			return c.boolean(t != nil && t.PeerPresented && t.PeerVerified)
		}),
		"connection\x00requested_server_name":     tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return c.str(t.ServerName) }),
		"connection\x00tls_version":               tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return c.str(t.Version) }),
		"connection\x00alpn":                      tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return c.str(t.ALPN) }),
		"connection\x00subject_local_certificate": tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return c.str(t.LocalSubject) }),
		"connection\x00subject_peer_certificate":  tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return c.str(t.PeerSubject) }),
		"connection\x00uri_san_local_certificate": localPrincipal,
		"connection\x00uri_san_peer_certificate":  peerPrincipal,
		"connection\x00dns_san_local_certificate": tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return first(c.out, t.LocalDNSSANs) }),
		"connection\x00dns_san_peer_certificate":  tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) { return first(c.out, t.PeerDNSSANs) }),
		"connection\x00sha256_peer_certificate_digest": tls(func(c *propCtx, t *filter.TLSInfo) ([]byte, abi.Status) {
			if t.PeerSHA256 == "" {
				return nil, abi.StatusNotFound
			}
			return c.str(t.PeerSHA256)
		}),
	}
	propertyPrefixes = map[string]prop{
		"node": {read: func(c *propCtx) ([]byte, abi.Status) {
			n := c.in.vm.m.opts.Node
			if n == nil {
				return nil, abi.StatusNotFound
			}
			return c.in.nodeProperty(c.out, n, c.rest)
		}},
		"route_metadata": s(func(c *propCtx) ([]byte, abi.Status) {
			meta := c.in.cur.f.meta
			if meta == nil {
				return nil, abi.StatusNotFound
			}
			name := c.x.Route
			if name == "" {
				name = c.in.cur.f.route
			}
			return metadataProperty(c, meta.routes[name])
		}),
		"cluster_metadata": s(func(c *propCtx) ([]byte, abi.Status) {
			meta := c.in.cur.f.meta
			if meta == nil {
				return nil, abi.StatusNotFound
			}
			return metadataProperty(c, meta.clusters[c.x.Cluster])
		}),
	}
	for k, pr := range properties {
		if strings.HasPrefix(k, "request\x00") || strings.HasPrefix(k, "response\x00") {
			pr.needsHTTP = true
			properties[k] = pr
		}
	}
	propertyHeads = make(map[string]bool, len(properties)+len(propertyPrefixes))
	for k := range properties {
		head, _, _ := strings.Cut(k, "\x00")
		propertyHeads[head] = true
	}
	for k := range propertyPrefixes {
		propertyHeads[k] = true
	}
}

// property appends the value at path to in.scratch and returns it.
func (in *instance) property(path []byte) ([]byte, abi.Status) {
	// In the instance, not on the stack: the readers take its address
	// through a function value, which would move it to the heap.
	c := &in.prop
	*c = propCtx{in: in, x: in.exchange(), out: in.scratch[:0]}
	pr, ok := properties[string(path)]
	if !ok {
		head, rest, _ := bytes.Cut(path, []byte{0})
		if pr, ok = propertyPrefixes[string(head)]; ok {
			c.rest = rest
		}
	}
	if !ok {
		// Anything else is filter state set by a plugin.
		if c.x != nil {
			if v, found := c.x.FilterState[string(in.stateKeyBytes(path))]; found {
				return c.byt(v)
			}
		}
		return nil, abi.StatusNotFound
	}
	if pr.needsStream && c.x == nil || pr.needsHTTP && c.x.Ctx == nil {
		return nil, abi.StatusNotFound
	}
	return pr.read(c)
}

// readOnly reports whether a property path belongs to the host (the
// table's), which proxy_set_property may not write.
func readOnly(path []byte) bool {
	head, _, _ := bytes.Cut(path, []byte{0})
	return propertyHeads[string(head)]
}

func connAddr(c *propCtx, local bool, field string) ([]byte, abi.Status) {
	if c.x.Conn == nil {
		return nil, abi.StatusNotFound
	}
	ap := c.x.Conn.Remote
	if local {
		ap = c.x.Conn.Local
	}
	return addrProperty(c.out, ap, []byte(field))
}

func upstreamAddr(c *propCtx, field string) ([]byte, abi.Status) {
	if c.x.UpstreamAddr == "" {
		return nil, abi.StatusNotFound
	}
	ap, err := netip.ParseAddrPort(c.x.UpstreamAddr)
	if err != nil {
		if field == "address" {
			return c.str(c.x.UpstreamAddr)
		}
		return nil, abi.StatusNotFound
	}
	return addrProperty(c.out, ap, []byte(field))
}

func first(out []byte, vs []string) ([]byte, abi.Status) {
	if len(vs) == 0 {
		return nil, abi.StatusNotFound
	}
	return append(out, vs[0]...), abi.StatusOK
}

func addrProperty(out []byte, ap netip.AddrPort, rest []byte) ([]byte, abi.Status) {
	if !ap.IsValid() {
		return nil, abi.StatusNotFound
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	switch string(rest) {
	case "address":
		return ap.AppendTo(out), abi.StatusOK
	case "port":
		return binary.LittleEndian.AppendUint64(out, uint64(ap.Port())), abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

func (in *instance) nodeProperty(out []byte, n *filter.Node, rest []byte) ([]byte, abi.Status) {
	sub, key, _ := bytes.Cut(rest, []byte{0})
	switch string(sub) {
	case "id":
		return append(out, n.ID...), abi.StatusOK
	case "metadata":
		if len(key) > 0 {
			v, ok := n.Metadata[string(key)]
			if !ok {
				return nil, abi.StatusNotFound
			}
			return append(out, v...), abi.StatusOK
		}
		in.kv = in.kv[:0]
		for k, v := range n.Metadata {
			in.kv = append(in.kv, kv{[]byte(k), []byte(v)})
		}
		return serialize(out, in.kv), abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

// stateKeyBytes names the filter state entry of a property path: "wasm."
// and the path's segments joined by dots. The name is built in the
// instance's key buffer, valid until the next call.
func (in *instance) stateKeyBytes(path []byte) []byte {
	b := append(in.keyBuf[:0], filterStatePrefix...)
	for i, c := range path {
		if c == 0 {
			if i == len(path)-1 {
				break
			}
			c = '.'
		}
		b = append(b, c)
	}
	in.keyBuf = b
	return b
}

// maxStateKeys bounds the filter state names an instance keeps, so that a
// plugin making up a new name on every request cannot grow it for ever.
const maxStateKeys = 256

// stateKey returns the name of path's filter state entry as a string.
// The names a plugin uses request after request are made once.
func (in *instance) stateKey(path []byte) string {
	b := in.stateKeyBytes(path)
	if k, ok := in.stateKeys[string(b)]; ok {
		return k
	}
	k := string(b)
	if len(in.stateKeys) < maxStateKeys {
		if in.stateKeys == nil {
			in.stateKeys = make(map[string]string)
		}
		in.stateKeys[k] = k
	}
	return k
}

func hostSetProperty(in *instance, a []uint64) abi.Status {
	path, ok1 := in.mem.Read(u32(a[0]), u32(a[1]))
	val, ok2 := in.mem.Read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return abi.StatusInvalidMemoryAccess
	}
	if len(path) == 0 {
		return abi.StatusBadArgument
	}
	x := in.exchange()
	if x == nil {
		return abi.StatusNotFound
	}
	if readOnly(path) {
		return abi.StatusNotFound
	}
	x.SetState(in.stateKey(path), val)
	return abi.StatusOK
}
