package wasm

import (
	"bytes"
	"compress/zlib"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"io"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Foreign functions are what proxy_call_foreign_function offers: a
// host's extension point for work it does better than a guest. wasmgate
// offers those of Envoy's that a filter written for Envoy may call and
// that mean something here, and its own; NOT_FOUND for any other name, as
// Envoy answers for a name it lacks (its CEL expressions, expr_create and
// expr_evaluate, and its signing functions, are not here).
var foreignFuncs = map[string]func(in *instance, args []byte) ([]byte, abi.Status){
	// Envoy's.
	"clear_route_cache":      foreignClearRouteCache,
	"compress":               foreignCompress,
	"uncompress":             foreignUncompress,
	"set_envoy_filter_state": foreignSetFilterState,
	"declare_property":       foreignDeclareProperty,

	// wasmgate's: AES-GCM with the host's instructions. A guest's
	// software AES is tens of times slower, and reads key-dependent
	// tables, which leaks timing. The first-party encryption filter seals
	// with these, and in the guest on other hosts.
	"wasmgate_aes_gcm_seal": foreignAESGCM(true),
	"wasmgate_aes_gcm_open": foreignAESGCM(false),
	// wasmgate's: a header of the stream sealed in place, in one call
	// where the guest would make three (get, seal, replace) and encode.
	"wasmgate_seal_header": foreignSealHeader,

	// wasmgate's: the stream callbacks a root context's filter needs.
	"wasmgate_callbacks": foreignCallbacks,
}

// The stream callbacks, as bits of the set wasmgate_callbacks declares
// (the Go SDK's sdk.Callbacks).
const (
	cbRequestHeaders = 1 << iota
	cbRequestBody
	cbRequestTrailers
	cbResponseHeaders
	cbResponseBody
	cbResponseTrailers
	cbLog // proxy_on_done and proxy_on_log

	allCallbacks      = 1<<iota - 1
	callbacksDeclared = 1 << 31
	// cbNetwork marks a network filter's callbacks, which a connection's
	// context always has.
	cbNetwork = 1 << 30
)

// foreignCallbacks is wasmgate_callbacks: called in a root context with
// a set of callbacks (4 bytes, little-endian), it says that the filter of
// that configuration does nothing in the others, so that the host skips
// them for its requests: each would have cost a call into the guest only
// to continue. Requests already open keep every callback. BAD_ARGUMENT
// outside a root context or for other bytes.
func foreignCallbacks(in *instance, args []byte) ([]byte, abi.Status) {
	if len(args) != 4 || in.cur != nil {
		return nil, abi.StatusBadArgument
	}
	a := in.rootSet[in.curRoot]
	if a == nil {
		return nil, abi.StatusBadArgument
	}
	a.needs.Store(binary.LittleEndian.Uint32(args)&allCallbacks | callbacksDeclared)
	return nil, abi.StatusOK
}

// foreignClearRouteCache is proxy_clear_route_cache, as Envoy offers it to
// filters written before that function existed.
func foreignClearRouteCache(in *instance, _ []byte) ([]byte, abi.Status) {
	return nil, hostClearRouteCache(in, nil)
}

// foreignCompress compresses its argument in the zlib format (RFC 1950),
// as Envoy's does with zlib's compress().
func foreignCompress(in *instance, args []byte) ([]byte, abi.Status) {
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, zlib.DefaultCompression)
	if _, err := w.Write(args); err != nil || w.Close() != nil {
		return nil, abi.StatusSerializationFailure
	}
	return b.Bytes(), abi.StatusOK
}

// foreignUncompress undoes compress: SERIALIZATION_FAILURE for bytes that
// are not zlib, or that inflate past the plugin's max_body_bytes (Envoy
// sets no bound, which lets a guest's few bytes take the host's memory).
func foreignUncompress(in *instance, args []byte) ([]byte, abi.Status) {
	r, err := zlib.NewReader(bytes.NewReader(args))
	if err != nil {
		return nil, abi.StatusSerializationFailure
	}
	limit := int64(defaultMaxBodyBytes)
	if in.curP != nil {
		limit = int64(in.curP.maxBody)
	}
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil || int64(len(out)) > limit {
		return nil, abi.StatusSerializationFailure
	}
	return out, abi.StatusOK
}

// foreignSetFilterState is Envoy's set_envoy_filter_state: a serialized
// SetEnvoyFilterStateArguments (path 1, value 2, span 3) sets the
// request's filter state under path, with no prefix (unlike
// proxy_set_property, whose keys start with "wasm."), for the access log
// and the other filters. Outside a request it is NOT_FOUND.
func foreignSetFilterState(in *instance, args []byte) ([]byte, abi.Status) {
	var path, value []byte
	err := eachField(args, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		if typ == protowire.BytesType {
			switch num {
			case 1:
				path = v
			case 2:
				value = v
			}
		}
		return true
	})
	if err != nil || len(path) == 0 {
		return nil, abi.StatusBadArgument
	}
	x := in.exchange()
	if x == nil {
		return nil, abi.StatusNotFound
	}
	x.SetState(string(path), value)
	return nil, abi.StatusOK
}

// foreignDeclareProperty is Envoy's declare_property: a serialized
// DeclarePropertyArguments (name 1, readonly 2, type 3, schema 4, span 5)
// that declares a property the guest then sets. Here every property may
// be set without being declared, so a well-formed declaration is
// accepted and nothing more; its type is not enforced.
func foreignDeclareProperty(in *instance, args []byte) ([]byte, abi.Status) {
	var name []byte
	err := eachField(args, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		if num == 1 && typ == protowire.BytesType {
			name = v
		}
		return true
	})
	if err != nil || len(name) == 0 {
		return nil, abi.StatusBadArgument
	}
	return nil, abi.StatusOK
}

func hostCallForeignFunction(in *instance, a []uint64) abi.Status {
	name, ok := in.mem.Read(u32(a[0]), u32(a[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	fn := foreignFuncs[string(name)]
	if fn == nil {
		return abi.StatusNotFound
	}
	args, ok := in.mem.Read(u32(a[2]), u32(a[3]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	out, st := fn(in, args)
	if st != abi.StatusOK {
		return st
	}
	return in.copyOut(out, u32(a[4]), u32(a[5]))
}

// foreignAESGCM seals (or opens) with AES-GCM. Its arguments, integers
// little-endian:
//
//	u32 key length (16, 24 or 32) | u32 nonce length (12) | u32 AAD length |
//	key | nonce | AAD | plaintext (to seal) or ciphertext and tag (to open)
//
// It returns the ciphertext and its 16-byte tag, or the plaintext:
// BAD_ARGUMENT for arguments not so made, PARSE_FAILURE for a ciphertext
// that does not authenticate.
func foreignAESGCM(seal bool) func(in *instance, args []byte) ([]byte, abi.Status) {
	return func(in *instance, args []byte) ([]byte, abi.Status) {
		if len(args) < 12 {
			return nil, abi.StatusBadArgument
		}
		kn := binary.LittleEndian.Uint32(args)
		nn := binary.LittleEndian.Uint32(args[4:])
		an := binary.LittleEndian.Uint32(args[8:])
		rest := args[12:]
		if (kn != 16 && kn != 24 && kn != 32) || nn != gcmNonceSize ||
			uint64(kn)+uint64(nn)+uint64(an) > uint64(len(rest)) {
			return nil, abi.StatusBadArgument
		}
		key, nonce := rest[:kn], rest[kn:kn+nn]
		aad, data := rest[kn+nn:kn+nn+an], rest[kn+nn+an:]
		aead := in.aeads.get(key)
		// The result goes to a buffer of the instance: copyOut copies it
		// into the guest before the next call can reuse it.
		if seal {
			in.foreignOut = aead.Seal(in.foreignOut[:0], nonce, data, aad)
			return in.foreignOut, abi.StatusOK
		}
		if len(data) < aead.Overhead() {
			return nil, abi.StatusBadArgument
		}
		out, err := aead.Open(in.foreignOut[:0], nonce, data, aad)
		if err != nil {
			return nil, abi.StatusParseFailure
		}
		in.foreignOut = out
		return out, abi.StatusOK
	}
}

const gcmNonceSize = 12

// foreignSealHeader seals the value of one header of the effective
// stream with AES-GCM and writes it back as prefix followed by the
// unpadded base64url of nonce and ciphertext, as the encryption filter's
// sealed form. Its arguments: the map type, then the lengths of the key,
// the nonce, the header's name (lower-case; also the additional data)
// and the prefix, each a little-endian u32, then those bytes. OK with no
// bytes: sealed; EMPTY: the stream has no such header; NOT_FOUND outside
// an HTTP stream; BAD_ARGUMENT for anything malformed. A request header
// change clears the route cache, as proxy_replace_header_map_value's.
func foreignSealHeader(in *instance, args []byte) ([]byte, abi.Status) {
	if len(args) < 20 {
		return nil, abi.StatusBadArgument
	}
	mt := abi.MapType(binary.LittleEndian.Uint32(args))
	kn := uint64(binary.LittleEndian.Uint32(args[4:]))
	nn := uint64(binary.LittleEndian.Uint32(args[8:]))
	hn := uint64(binary.LittleEndian.Uint32(args[12:]))
	pn := uint64(binary.LittleEndian.Uint32(args[16:]))
	rest := args[20:]
	if (kn != 16 && kn != 24 && kn != 32) || nn != gcmNonceSize || hn == 0 ||
		kn+nn+hn+pn != uint64(len(rest)) || (mt != abi.MapHTTPRequestHeaders && mt != abi.MapHTTPResponseHeaders) {
		return nil, abi.StatusBadArgument
	}
	key, nonce := rest[:kn], rest[kn:kn+nn]
	name, prefix := rest[kn+nn:kn+nn+hn], rest[kn+nn+hn:]
	if name[0] == ':' || !validHeaderValue(prefix) {
		return nil, abi.StatusBadArgument
	}
	x := in.httpExchange()
	if x == nil {
		return nil, abi.StatusNotFound
	}
	var value []byte
	if mt == abi.MapHTTPRequestHeaders {
		value = x.Ctx.Request.Header.PeekBytes(name)
	} else {
		value = x.Ctx.Response.Header.PeekBytes(name)
	}
	if value == nil {
		return nil, abi.StatusEmpty
	}
	aead := in.aeads.get(key)
	// nonce || ciphertext, then the header's new value after it, in the
	// instance's buffer: the value is read from the header before it is
	// replaced.
	sealed := aead.Seal(append(in.foreignOut[:0], nonce...), nonce, value, name)
	n := len(sealed)
	out := append(sealed, prefix...)
	out = base64.RawURLEncoding.AppendEncode(out, sealed)
	in.foreignOut = out[:0]
	if mt == abi.MapHTTPRequestHeaders {
		in.cur.routeCleared.Store(true)
	}
	return nil, writeField(x, mt, name, out[n:], opReplace)
}

// validHeaderValue reports whether b may be part of a header value: no
// control characters but tab.
func validHeaderValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// aeadCache keeps an instance's AES-GCM ciphers by key, so that a filter
// sealing with the same few keys request after request does not expand
// its key every time. A guest runs one call at a time: no lock.
type aeadCache struct {
	entries [4]struct {
		key  []byte
		aead cipher.AEAD
	}
	next int
}

func (c *aeadCache) get(key []byte) cipher.AEAD {
	for i := range c.entries {
		if e := &c.entries[i]; e.aead != nil && bytes.Equal(e.key, key) {
			return e.aead
		}
	}
	block, _ := aes.NewCipher(key) // the length was checked
	aead, _ := cipher.NewGCM(block)
	e := &c.entries[c.next]
	c.next = (c.next + 1) % len(c.entries)
	e.key, e.aead = append(e.key[:0], key...), aead
	return aead
}
