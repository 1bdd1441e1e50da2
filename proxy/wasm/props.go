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

// property appends the value at path to in.scratch and returns it.
func (in *instance) property(path []byte) ([]byte, abi.Status) {
	out := in.scratch[:0]
	p := in.p
	x := in.exchange()
	str := func(s string) ([]byte, abi.Status) { return append(out, s...), abi.StatusOK }
	byt := func(b []byte) ([]byte, abi.Status) { return append(out, b...), abi.StatusOK }
	num := func(n uint64) ([]byte, abi.Status) { return binary.LittleEndian.AppendUint64(out, n), abi.StatusOK }
	boolean := func(b bool) ([]byte, abi.Status) {
		if b {
			return append(out, 1), abi.StatusOK
		}
		return append(out, 0), abi.StatusOK
	}

	head, rest, _ := bytes.Cut(path, []byte{0})
	switch string(head) {
	case "plugin_name":
		return str(p.cfg.Name)
	case "plugin_root_id":
		return str(p.cfg.RootID)
	case "plugin_vm_id":
		return str(p.cfg.Name)
	case "node":
		n := p.m.opts.Node
		if n == nil {
			return nil, abi.StatusNotFound
		}
		return in.nodeProperty(out, n, rest)
	}
	if x == nil {
		return nil, abi.StatusNotFound
	}
	switch string(head) {
	case "route_name":
		if x.Route == "" && in.cur.f.route != "" {
			return str(in.cur.f.route)
		}
		return str(x.Route)
	case "cluster_name":
		return str(x.Cluster)
	case "listener_name":
		return str(x.Listener)
	case "xds":
		switch string(rest) {
		case "route_name":
			return str(x.Route)
		case "cluster_name":
			return str(x.Cluster)
		case "listener_name":
			return str(x.Listener)
		case "virtual_host_name":
			return str(x.VirtualHost)
		}
		return nil, abi.StatusNotFound
	case "request":
		req := &x.Ctx.Request
		switch string(rest) {
		case "path":
			return byt(req.URI().RequestURI())
		case "url_path":
			u := req.URI().RequestURI()
			if i := bytes.IndexByte(u, '?'); i >= 0 {
				u = u[:i]
			}
			return byt(u)
		case "query":
			u := req.URI().RequestURI()
			if i := bytes.IndexByte(u, '?'); i >= 0 {
				return byt(u[i+1:])
			}
			return out, abi.StatusOK
		case "host":
			return byt(req.Host())
		case "scheme":
			return byt(scheme(x))
		case "method":
			return byt(req.Header.Method())
		case "headers":
			if st := in.collect(abi.MapHTTPRequestHeaders); st != abi.StatusOK {
				return nil, st
			}
			return serialize(out, in.kv), abi.StatusOK
		case "referer":
			return byt(req.Header.Referer())
		case "useragent":
			return byt(req.Header.UserAgent())
		case "id":
			return byt(x.RequestID)
		case "protocol":
			return str(x.Protocol)
		case "time":
			return num(uint64(x.Start.UnixNano()))
		case "duration":
			if x.Start.IsZero() {
				return nil, abi.StatusNotFound
			}
			return num(uint64(time.Since(x.Start)))
		case "size":
			return num(uint64(len(req.Body())))
		case "total_size":
			return num(uint64(len(req.Body()) + req.Header.Len()))
		}
	case "response":
		resp := &x.Ctx.Response
		switch string(rest) {
		case "code":
			return num(uint64(resp.StatusCode()))
		case "code_details":
			return str(x.Details)
		case "flags":
			return num(uint64(x.Flags))
		case "headers":
			if st := in.collect(abi.MapHTTPResponseHeaders); st != abi.StatusOK {
				return nil, st
			}
			return serialize(out, in.kv), abi.StatusOK
		case "size":
			return num(uint64(len(resp.Body())))
		case "total_size":
			return num(uint64(len(resp.Body()) + resp.Header.Len()))
		case "grpc_status":
			if v := resp.Header.Peek("grpc-status"); v != nil {
				return byt(v)
			}
			return nil, abi.StatusNotFound
		}
	case "source", "destination":
		if x.Conn == nil {
			return nil, abi.StatusNotFound
		}
		ap := x.Conn.Remote
		if string(head) == "destination" {
			ap = x.Conn.Local
		}
		return addrProperty(out, ap, rest)
	case "upstream":
		if x.UpstreamAddr == "" {
			return nil, abi.StatusNotFound
		}
		ap, err := netip.ParseAddrPort(x.UpstreamAddr)
		if err != nil {
			if string(rest) == "address" {
				return str(x.UpstreamAddr)
			}
			return nil, abi.StatusNotFound
		}
		return addrProperty(out, ap, rest)
	case "connection":
		c := x.Conn
		if c == nil {
			return nil, abi.StatusNotFound
		}
		if string(rest) == "id" {
			return num(c.ID)
		}
		t := c.TLS
		if t == nil {
			if string(rest) == "mtls" {
				return boolean(false)
			}
			return nil, abi.StatusNotFound
		}
		switch string(rest) {
		case "mtls":
			return boolean(t.PeerPresented && t.PeerVerified)
		case "requested_server_name":
			return str(t.ServerName)
		case "tls_version":
			return str(t.Version)
		case "alpn":
			return str(t.ALPN)
		case "subject_local_certificate":
			return str(t.LocalSubject)
		case "subject_peer_certificate":
			return str(t.PeerSubject)
		case "uri_san_local_certificate":
			return first(out, t.LocalURISANs)
		case "uri_san_peer_certificate":
			return first(out, t.PeerURISANs)
		case "dns_san_local_certificate":
			return first(out, t.LocalDNSSANs)
		case "dns_san_peer_certificate":
			return first(out, t.PeerDNSSANs)
		case "sha256_peer_certificate_digest":
			return str(t.PeerSHA256)
		}
	default:
		// Anything else is filter state set by a plugin.
		if v, ok := x.FilterState[stateKey(path)]; ok {
			return byt(v)
		}
	}
	return nil, abi.StatusNotFound
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

// stateKey names the filter state entry of a property path: "wasm." and
// the path's segments joined by dots.
func stateKey(path []byte) string {
	var b strings.Builder
	b.Grow(len(filterStatePrefix) + len(path))
	b.WriteString(filterStatePrefix)
	for i, c := range path {
		if c == 0 {
			if i == len(path)-1 {
				break
			}
			c = '.'
		}
		b.WriteByte(c)
	}
	return b.String()
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
	head, _, _ := bytes.Cut(path, []byte{0})
	switch string(head) {
	case "request", "response", "source", "destination", "connection", "upstream",
		"node", "plugin_name", "plugin_root_id", "plugin_vm_id", "route_name",
		"cluster_name", "listener_name", "xds":
		return abi.StatusNotFound // read only
	}
	x.SetState(stateKey(path), append([]byte(nil), val...))
	return abi.StatusOK
}
