package wasm

import (
	"bytes"
	"encoding/binary"
	"iter"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

var (
	pMethod    = []byte(":method")
	pPath      = []byte(":path")
	pAuthority = []byte(":authority")
	pScheme    = []byte(":scheme")
	pStatus    = []byte(":status")
	hHost      = []byte("host")
	sHTTP      = []byte("http")
	sHTTPS     = []byte("https")
)

// collect gathers the fields of a map into in.kv, pseudo-headers first.
// Keys are as fasthttp holds them; serialize lower-cases them. Trailer
// values, once received, are listed among the headers too: fasthttp keeps
// them in one table, and telling them apart would cost an allocation per
// call.
func (in *instance) collect(mt abi.MapType) abi.Status {
	in.kv = in.kv[:0]
	switch mt {
	case abi.MapHTTPRequestHeaders:
		x := in.httpExchange()
		if x == nil {
			return abi.StatusNotFound
		}
		req := &x.Ctx.Request
		in.kv = append(in.kv,
			kv{pMethod, req.Header.Method()},
			kv{pScheme, scheme(x)},
			kv{pAuthority, req.Host()},
			kv{pPath, req.URI().RequestURI()})
		for k, v := range req.Header.All() {
			if bytes.EqualFold(k, hHost) {
				continue
			}
			in.kv = append(in.kv, kv{k, v})
		}
	case abi.MapHTTPResponseHeaders:
		x := in.httpExchange()
		if x == nil {
			return abi.StatusNotFound
		}
		in.collectResponse(&x.Ctx.Response)
	case abi.MapHTTPRequestTrailers, abi.MapHTTPResponseTrailers:
		x := in.httpExchange()
		if x == nil {
			return abi.StatusNotFound
		}
		if mt == abi.MapHTTPRequestTrailers {
			h := &x.Ctx.Request.Header
			for k := range h.Trailers() {
				if v := h.PeekBytes(k); v != nil {
					in.kv = append(in.kv, kv{k, v})
				}
			}
		} else {
			h := &x.Ctx.Response.Header
			for k := range h.Trailers() {
				if v := h.PeekBytes(k); v != nil {
					in.kv = append(in.kv, kv{k, v})
				}
			}
		}
	case abi.MapHTTPCallResponseHeaders:
		c := in.callResp
		if c == nil {
			return abi.StatusNotFound
		}
		if c.err == nil {
			in.collectResponse(c.resp)
		}
	case abi.MapHTTPCallResponseTrailers:
		if in.callResp == nil {
			return abi.StatusNotFound
		}
	case abi.MapGRPCCallInitialMetadata, abi.MapGRPCCallTrailingMetadata:
		return in.collectGRPC(mt)
	default:
		return abi.StatusBadArgument
	}
	return abi.StatusOK
}

// fieldCount is the number of fields collect gathers from a stream's map,
// which a callback passes to the guest, counted without gathering them.
func (in *instance) fieldCount(mt abi.MapType) int {
	x := in.httpExchange()
	if x == nil {
		return 0
	}
	switch mt {
	case abi.MapHTTPRequestHeaders:
		h := &x.Ctx.Request.Header
		n := 4 + h.Len() // the pseudo-headers, and every field but Host
		if len(h.Host()) > 0 {
			n--
		}
		return n
	case abi.MapHTTPResponseHeaders:
		return 1 + x.Ctx.Response.Header.Len()
	}
	if in.collect(mt) != abi.StatusOK {
		return 0
	}
	return len(in.kv)
}

func (in *instance) collectResponse(resp *fasthttp.Response) {
	in.kv = append(in.kv, kv{pStatus, strconv.AppendInt(in.status[:0], int64(resp.StatusCode()), 10)})
	for k, v := range resp.Header.All() {
		in.kv = append(in.kv, kv{k, v})
	}
}

type trailerHeader interface{ Trailers() iter.Seq[[]byte] }

func isTrailer(h trailerHeader, k []byte) bool {
	for t := range h.Trailers() {
		if bytes.EqualFold(t, k) {
			return true
		}
	}
	return false
}

func scheme(x *filter.Exchange) []byte {
	if (x.Conn != nil && x.Conn.TLS != nil) || x.Ctx.IsTLS() {
		return sHTTPS
	}
	return sHTTP
}

// serialize writes kvs in the ABI's map format into dst: the number of
// pairs, then each pair's key and value lengths, then each key and value
// followed by a NUL. Keys are lower-cased. An empty map is empty.
func serialize(dst []byte, kvs []kv) []byte {
	dst = dst[:0]
	if len(kvs) == 0 {
		return dst
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(kvs)))
	for _, e := range kvs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e.k)))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e.v)))
	}
	for _, e := range kvs {
		for _, c := range e.k {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		dst = append(dst, 0)
		dst = append(dst, e.v...)
		dst = append(dst, 0)
	}
	return dst
}

// byteSize is what proxy_get_header_map_size answers, as Envoy's
// HeaderMap::byteSize: the sum of the names' and values' lengths, not
// the size of the serialized map.
func byteSize(kvs []kv) int {
	n := 0
	for _, e := range kvs {
		n += len(e.k) + len(e.v)
	}
	return n
}

// parseMap decodes a map in the ABI's format, appending to dst. The
// result aliases b. It accepts the empty forms (no bytes, a single NUL,
// a zero count) and rejects anything that does not add up.
func parseMap(b []byte, dst []kv) ([]kv, bool) {
	if len(b) == 0 || (len(b) == 1 && b[0] == 0) {
		return dst, true
	}
	if len(b) < 4 {
		return dst, false
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if 4+8*n > uint64(len(b)) {
		return dst, false
	}
	sizes := b[4 : 4+8*n]
	data := b[4+8*n:]
	for i := uint64(0); i < n; i++ {
		kl := uint64(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := uint64(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if kl+vl+2 > uint64(len(data)) || data[kl] != 0 || data[kl+1+vl] != 0 {
			return dst, false
		}
		dst = append(dst, kv{data[:kl], data[kl+1 : kl+1+vl]})
		data = data[kl+vl+2:]
	}
	return dst, true
}

func hostGetHeaderMapPairs(in *instance, a []uint64) abi.Status {
	if st := in.collect(abi.MapType(u32(a[0]))); st != abi.StatusOK {
		return st
	}
	in.scratch = serialize(in.scratch, in.kv)
	return in.copyOut(in.scratch, u32(a[1]), u32(a[2]))
}

func hostGetHeaderMapSize(in *instance, a []uint64) abi.Status {
	if st := in.collect(abi.MapType(u32(a[0]))); st != abi.StatusOK {
		return st
	}
	if !in.mem.WriteUint32Le(u32(a[1]), uint32(byteSize(in.kv))) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

func hostGetHeaderMapValue(in *instance, a []uint64) abi.Status {
	mt := abi.MapType(u32(a[0]))
	key, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	var v []byte
	found := false
	switch mt {
	case abi.MapHTTPRequestHeaders, abi.MapHTTPRequestTrailers:
		x := in.httpExchange()
		if x == nil {
			return abi.StatusNotFound
		}
		if mt == abi.MapHTTPRequestHeaders && len(key) > 0 && key[0] == ':' {
			v, found = requestPseudo(x, key)
		} else {
			v = x.Ctx.Request.Header.PeekBytes(key)
			found = v != nil
		}
	case abi.MapHTTPResponseHeaders, abi.MapHTTPResponseTrailers:
		x := in.httpExchange()
		if x == nil {
			return abi.StatusNotFound
		}
		v, found = in.responseValue(&x.Ctx.Response, key)
	case abi.MapHTTPCallResponseHeaders, abi.MapHTTPCallResponseTrailers:
		c := in.callResp
		if c == nil || c.err != nil || mt == abi.MapHTTPCallResponseTrailers {
			return abi.StatusNotFound
		}
		v, found = in.responseValue(c.resp, key)
	case abi.MapGRPCCallInitialMetadata, abi.MapGRPCCallTrailingMetadata:
		v, found = in.grpcMetaValue(mt, key)
	default:
		return abi.StatusBadArgument
	}
	if !found {
		return abi.StatusNotFound
	}
	// v is host memory, so the allocation inside copyOut cannot move it.
	return in.copyOut(v, u32(a[3]), u32(a[4]))
}

func (in *instance) responseValue(resp *fasthttp.Response, key []byte) ([]byte, bool) {
	if bytes.Equal(key, pStatus) {
		return strconv.AppendInt(in.status[:0], int64(resp.StatusCode()), 10), true
	}
	if len(key) > 0 && key[0] == ':' {
		return nil, false
	}
	v := resp.Header.PeekBytes(key)
	return v, v != nil
}

func requestPseudo(x *filter.Exchange, key []byte) ([]byte, bool) {
	req := &x.Ctx.Request
	switch string(key) {
	case ":method":
		return req.Header.Method(), true
	case ":path":
		return req.URI().RequestURI(), true
	case ":authority":
		return req.Host(), true
	case ":scheme":
		return scheme(x), true
	}
	return nil, false
}

// mapOp is a change to one field of a map.
type mapOp uint8

const (
	opAdd mapOp = iota
	opReplace
	opRemove
)

func hostAddHeaderMapValue(in *instance, a []uint64) abi.Status     { return in.mapWrite(a, opAdd) }
func hostReplaceHeaderMapValue(in *instance, a []uint64) abi.Status { return in.mapWrite(a, opReplace) }
func hostRemoveHeaderMapValue(in *instance, a []uint64) abi.Status  { return in.mapWrite(a, opRemove) }

func (in *instance) mapWrite(a []uint64, op mapOp) abi.Status {
	mt := abi.MapType(u32(a[0]))
	key, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	var val []byte
	if op != opRemove {
		if val, ok = in.mem.Read(u32(a[3]), u32(a[4])); !ok {
			return abi.StatusInvalidMemoryAccess
		}
	}
	switch mt {
	case abi.MapHTTPRequestHeaders, abi.MapHTTPRequestTrailers,
		abi.MapHTTPResponseHeaders, abi.MapHTTPResponseTrailers:
	case abi.MapHTTPCallResponseHeaders, abi.MapHTTPCallResponseTrailers,
		abi.MapGRPCCallInitialMetadata, abi.MapGRPCCallTrailingMetadata:
		return abi.StatusBadArgument
	default:
		return abi.StatusBadArgument
	}
	x := in.httpExchange()
	if x == nil {
		return abi.StatusNotFound
	}
	if mt == abi.MapHTTPRequestHeaders {
		in.cur.routeCleared.Store(true) // as Envoy: a request header change clears the route cache
	}
	return writeField(x, mt, key, val, op)
}

// headerWriter is what request and response headers have in common for
// writing.
type headerWriter interface {
	AddBytesKV(key, value []byte)
	SetBytesKV(key, value []byte)
	DelBytes(key []byte)
}

// applyOp applies one change to a header map.
func applyOp[H headerWriter](h H, op mapOp, key, val []byte) {
	switch op {
	case opAdd:
		h.AddBytesKV(key, val)
	case opReplace:
		h.SetBytesKV(key, val)
	case opRemove:
		h.DelBytes(key)
	}
}

// applyTrailerOp applies one change to a trailer map, declaring the
// trailer first when it is new.
func applyTrailerOp[H interface {
	headerWriter
	trailerHeader
	AddTrailerBytes(key []byte) error
}](h H, op mapOp, key, val []byte) abi.Status {
	if op != opRemove && !isTrailer(h, key) {
		if err := h.AddTrailerBytes(key); err != nil {
			return abi.StatusBadArgument
		}
	}
	applyOp(h, op, key, val)
	return abi.StatusOK
}

// writeField applies one change to a map of the exchange. Pseudo-headers
// rewrite the request line or the status; removing one does nothing.
func writeField(x *filter.Exchange, mt abi.MapType, key, val []byte, op mapOp) abi.Status {
	if len(key) == 0 {
		return abi.StatusBadArgument
	}
	if key[0] == ':' {
		if op == opRemove {
			return abi.StatusOK
		}
		return setPseudo(x, mt, key, val)
	}
	switch mt {
	case abi.MapHTTPRequestHeaders:
		applyOp(&x.Ctx.Request.Header, op, key, val)
	case abi.MapHTTPResponseHeaders:
		applyOp(&x.Ctx.Response.Header, op, key, val)
	case abi.MapHTTPRequestTrailers:
		return applyTrailerOp(&x.Ctx.Request.Header, op, key, val)
	case abi.MapHTTPResponseTrailers:
		return applyTrailerOp(&x.Ctx.Response.Header, op, key, val)
	}
	return abi.StatusOK
}

func setPseudo(x *filter.Exchange, mt abi.MapType, key, val []byte) abi.Status {
	switch mt {
	case abi.MapHTTPRequestHeaders:
		req := &x.Ctx.Request
		switch string(key) {
		case ":method":
			req.Header.SetMethodBytes(val)
		case ":path":
			req.SetRequestURIBytes(val)
		case ":authority":
			req.Header.SetHostBytes(val)
			req.URI().SetHostBytes(val)
		case ":scheme":
			req.URI().SetSchemeBytes(val)
		default:
			return abi.StatusBadArgument
		}
	case abi.MapHTTPResponseHeaders:
		if string(key) != ":status" {
			return abi.StatusBadArgument
		}
		code, err := strconv.Atoi(string(val))
		if err != nil || code < 100 || code > 999 {
			return abi.StatusBadArgument
		}
		x.Ctx.Response.SetStatusCode(code)
	default:
		return abi.StatusBadArgument
	}
	return abi.StatusOK
}

func hostSetHeaderMapPairs(in *instance, a []uint64) abi.Status {
	mt := abi.MapType(u32(a[0]))
	b, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	switch mt {
	case abi.MapHTTPRequestHeaders, abi.MapHTTPRequestTrailers,
		abi.MapHTTPResponseHeaders, abi.MapHTTPResponseTrailers:
	default:
		return abi.StatusBadArgument
	}
	x := in.httpExchange()
	if x == nil {
		return abi.StatusNotFound
	}
	if mt == abi.MapHTTPRequestHeaders {
		in.cur.routeCleared.Store(true)
	}
	pairs, ok := parseMap(b, in.pairs[:0])
	in.pairs = pairs[:0]
	if !ok {
		return abi.StatusBadArgument
	}
	// Remove every field the map holds now (keys copied first: removing
	// moves fasthttp's storage), then add the new ones.
	in.keys = in.keys[:0]
	if st := in.collect(mt); st != abi.StatusOK {
		return st
	}
	for _, e := range in.kv {
		if len(e.k) > 0 && e.k[0] != ':' {
			in.keys = append(in.keys, e.k...)
			in.keys = append(in.keys, 0)
		}
	}
	in.kv = in.kv[:0]
	for rest := in.keys; len(rest) > 0; {
		i := bytes.IndexByte(rest, 0)
		if st := writeField(x, mt, rest[:i], nil, opRemove); st != abi.StatusOK {
			return st
		}
		rest = rest[i+1:]
	}
	for _, e := range pairs {
		if st := writeField(x, mt, e.k, e.v, opAdd); st != abi.StatusOK {
			return st
		}
	}
	return abi.StatusOK
}
