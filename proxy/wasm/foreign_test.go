package wasm

import (
	"bytes"
	"compress/zlib"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// aeadArgs lays out the arguments of wasmgate_aes_gcm_seal and _open.
func aeadArgs(key, nonce, aad, data []byte) []byte {
	var a []byte
	a = binary.LittleEndian.AppendUint32(a, uint32(len(key)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(nonce)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(aad)))
	return append(append(append(append(a, key...), nonce...), aad...), data...)
}

// TestForeignAESGCM checks the host's AES-GCM against Go's crypto/cipher
// for every key size, and the statuses of arguments it refuses.
func TestForeignAESGCM(t *testing.T) {
	seal, open := foreignFuncs["wasmgate_aes_gcm_seal"], foreignFuncs["wasmgate_aes_gcm_open"]
	in := &instance{}
	nonce, aad, plain := bytes.Repeat([]byte{7}, 12), []byte("x-secret"), []byte("4111-1111-1111-1111")
	for _, n := range []int{16, 24, 32} {
		key := bytes.Repeat([]byte{byte(n)}, n)
		block, _ := aes.NewCipher(key)
		ref, _ := cipher.NewGCM(block)
		want := ref.Seal(nil, nonce, plain, aad)
		got, st := seal(in, aeadArgs(key, nonce, aad, plain))
		if st != abi.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("AES-%d seal: %x %v, want %x", n*8, got, st, want)
		}
		back, st := open(in, aeadArgs(key, nonce, aad, want))
		if st != abi.StatusOK || !bytes.Equal(back, plain) {
			t.Fatalf("AES-%d open: %q %v", n*8, back, st)
		}
		tampered := append([]byte(nil), want...)
		tampered[0] ^= 1
		if _, st := open(in, aeadArgs(key, nonce, aad, tampered)); st != abi.StatusParseFailure {
			t.Errorf("AES-%d: a tampered ciphertext gave %v", n*8, st)
		}
		if _, st := open(in, aeadArgs(key, nonce, []byte("x-other"), want)); st != abi.StatusParseFailure {
			t.Errorf("AES-%d: other additional data gave %v", n*8, st)
		}
	}
	key := bytes.Repeat([]byte{1}, 32)
	for name, args := range map[string][]byte{
		"short":            {1, 2, 3},
		"key of 20 bytes":  aeadArgs(key[:20], nonce, aad, plain),
		"nonce of 8 bytes": aeadArgs(key, nonce[:8], aad, plain),
		"lengths past the end": func() []byte {
			a := aeadArgs(key, nonce, aad, nil)
			binary.LittleEndian.PutUint32(a[8:], 1<<31)
			return a
		}(),
	} {
		if _, st := seal(in, args); st != abi.StatusBadArgument {
			t.Errorf("seal, %s: %v", name, st)
		}
	}
	if _, st := open(in, aeadArgs(key, nonce, aad, []byte("short"))); st != abi.StatusBadArgument {
		t.Errorf("open of less than a tag: %v", st)
	}
}

// sealHeaderArgs makes wasmgate_seal_header's arguments.
func sealHeaderArgs(mt abi.MapType, key, nonce, name, prefix []byte) []byte {
	var a []byte
	for _, n := range []int{int(mt), len(key), len(nonce), len(name), len(prefix)} {
		a = binary.LittleEndian.AppendUint32(a, uint32(n))
	}
	return append(append(append(append(a, key...), nonce...), name...), prefix...)
}

// TestForeignSealHeader: wasmgate_seal_header writes a header's sealed
// form in place (prefix, then base64url of nonce and the AES-GCM of the
// value with the name as additional data), says EMPTY for a header the
// request lacks, clears the route cache, and refuses what is malformed.
func TestForeignSealHeader(t *testing.T) {
	seal := foreignFuncs["wasmgate_seal_header"]
	key, nonce := bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{9}, 12)
	name, prefix := []byte("x-secret"), []byte("enc:v1:k1:")
	in := &instance{}
	if _, st := seal(in, sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, name, prefix)); st != abi.StatusNotFound {
		t.Errorf("outside a stream: %v, want NOT_FOUND", st)
	}
	x := newExchange("http://example.com/", "X-Secret", "4111-1111-1111-1111")
	in.cur = &stream{x: x}
	if _, st := seal(in, sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, name, prefix)); st != abi.StatusOK {
		t.Fatalf("seal: %v", st)
	}
	got := string(x.Ctx.Request.Header.Peek("x-secret"))
	encoded, ok := strings.CutPrefix(got, string(prefix))
	if !ok {
		t.Fatalf("sealed value %q lacks the prefix", got)
	}
	raw, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil || !bytes.Equal(raw[:12], nonce) {
		t.Fatalf("sealed value %q: %v", got, err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	if plain, err := aead.Open(nil, raw[:12], raw[12:], name); err != nil || string(plain) != "4111-1111-1111-1111" {
		t.Errorf("opened %q, %v", plain, err)
	}
	if !in.cur.routeCleared.Load() {
		t.Error("a request header sealed in place did not clear the route cache")
	}
	if _, st := seal(in, sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, []byte("x-absent"), prefix)); st != abi.StatusEmpty {
		t.Errorf("absent header: %v, want EMPTY", st)
	}
	for what, args := range map[string][]byte{
		"short":          {1, 2},
		"map type":       sealHeaderArgs(abi.MapHTTPCallResponseHeaders, key, nonce, name, prefix),
		"key size":       sealHeaderArgs(abi.MapHTTPRequestHeaders, key[:20], nonce, name, prefix),
		"nonce size":     sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce[:8], name, prefix),
		"no name":        sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, nil, prefix),
		"pseudo-header":  sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, []byte(":path"), prefix),
		"CR LF prefix":   sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, name, []byte("a\r\nb: c")),
		"trailing bytes": append(sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, name, prefix), 0),
	} {
		if _, st := seal(in, args); st != abi.StatusBadArgument {
			t.Errorf("%s: %v, want BAD_ARGUMENT", what, st)
		}
	}
}

// BenchmarkForeignAESGCM is the host's side of sealing one header value.
func BenchmarkForeignAESGCM(b *testing.B) {
	seal := foreignFuncs["wasmgate_aes_gcm_seal"]
	in := &instance{}
	args := aeadArgs(bytes.Repeat([]byte{1}, 32), make([]byte, 12), []byte("x-secret"), []byte("4111-1111-1111-1111"))
	b.ReportAllocs()
	for b.Loop() {
		if _, st := seal(in, args); st != abi.StatusOK {
			b.Fatal(st)
		}
	}
}

// TestEnvoyForeignFunctions calls Envoy's foreign functions from a module
// built with the public proxy-wasm Go SDK, as a filter written for Envoy
// would: compress and uncompress (against a stream C zlib made),
// set_envoy_filter_state, declare_property, clear_route_cache, and a name
// the host lacks.
func TestEnvoyForeignFunctions(t *testing.T) {
	m := newTestManager(t)
	f := factoryOf(t, prepare(t, m, testPlugin("f", "features")), "f")
	call := func(name string, arg []byte) (string, *filter.Exchange) {
		t.Helper()
		x := newExchange("http://example.com/", "x-foreign", name, "x-foreign-arg", hex.EncodeToString(arg))
		run(t, f, x)
		return string(x.Ctx.Request.Header.Peek("x-foreign-result")), x
	}
	unhex := func(s string) []byte {
		t.Helper()
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("result %q", s)
		}
		return b
	}

	text := bytes.Repeat([]byte("hello wasm "), 40)
	got, _ := call("compress", text)
	z, err := zlib.NewReader(bytes.NewReader(unhex(got)))
	if err != nil {
		t.Fatalf("compress gave no zlib stream: %v", err)
	}
	if back, err := io.ReadAll(z); err != nil || !bytes.Equal(back, text) {
		t.Fatalf("compress: %q, %v", back, err)
	}
	// zlib.compress(b"hello hello hello hello") in CPython, which is C
	// zlib, as Envoy uses.
	if got, _ := call("uncompress", unhex("789ccb48cdc9c957c8402701680308b1")); string(unhex(got)) != "hello hello hello hello" {
		t.Errorf("uncompress of C zlib's stream: %q", got)
	}
	if got, _ := call("uncompress", []byte("not zlib")); !failed(got, "serialization", abi.StatusSerializationFailure) {
		t.Errorf("uncompress of garbage: %q", got)
	}

	var args []byte
	args = protowire.AppendTag(args, 1, protowire.BytesType)
	args = protowire.AppendString(args, "envoy.example.key")
	args = protowire.AppendTag(args, 2, protowire.BytesType)
	args = protowire.AppendString(args, "value-1")
	args = protowire.AppendTag(args, 3, protowire.VarintType)
	args = protowire.AppendVarint(args, 1)
	if got, x := call("set_envoy_filter_state", args); got != "" || string(x.FilterState["envoy.example.key"]) != "value-1" {
		t.Errorf("set_envoy_filter_state: %q, state %q", got, x.FilterState)
	}
	if got, _ := call("set_envoy_filter_state", []byte{0xff}); !failed(got, "bad argument", abi.StatusBadArgument) {
		t.Errorf("set_envoy_filter_state of garbage: %q", got)
	}

	var decl []byte
	decl = protowire.AppendTag(decl, 1, protowire.BytesType)
	decl = protowire.AppendString(decl, "my_property")
	decl = protowire.AppendTag(decl, 3, protowire.VarintType)
	decl = protowire.AppendVarint(decl, 1)
	if got, _ := call("declare_property", decl); got != "" {
		t.Errorf("declare_property: %q", got)
	}
	if got, _ := call("expr_create", []byte("request.path")); !failed(got, "not found", abi.StatusNotFound) {
		t.Errorf("a function the host lacks: %q", got)
	}

	// clear_route_cache marks the stream as proxy_clear_route_cache does.
	s := &stream{}
	in := &instance{cur: s}
	if _, st := foreignFuncs["clear_route_cache"](in, nil); st != abi.StatusOK || !s.RouteCacheCleared() {
		t.Errorf("clear_route_cache: %v, cleared %v", st, s.RouteCacheCleared())
	}
}

// failed reports whether a result the features module wrote is the
// proxy-wasm Go SDK's error for a status: "error:" and the status's text,
// or its number for the statuses that SDK does not name.
func failed(result, text string, st abi.Status) bool {
	return strings.HasPrefix(result, "error:") &&
		(strings.Contains(result, text) || strings.HasSuffix(result, "status code: "+strconv.Itoa(int(st))))
}

// TestUncompressBound checks that uncompress stops at the plugin's
// max_body_bytes, where Envoy's inflates without bound.
func TestUncompressBound(t *testing.T) {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write(make([]byte, 2<<20)) // 2 MiB of zeros: a few KiB compressed
	w.Close()
	in := &instance{curP: &plugin{maxBody: 1 << 20}}
	if _, st := foreignFuncs["uncompress"](in, b.Bytes()); st != abi.StatusSerializationFailure {
		t.Errorf("2 MiB past a 1 MiB bound: %v", st)
	}
	in.curP.maxBody = 4 << 20
	if out, st := foreignFuncs["uncompress"](in, b.Bytes()); st != abi.StatusOK || len(out) != 2<<20 {
		t.Errorf("2 MiB within a 4 MiB bound: %d bytes, %v", len(out), st)
	}
}

// TestDeclaredCallbacks checks wasmgate_callbacks: a configuration whose
// filter declares that it needs the request headers alone is not called
// for the response (no x-seen-status, no "-end" on the body), while the
// same module configured otherwise is; a declaration outside a root
// context is refused.
func TestDeclaredCallbacks(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m,
		testPlugin("all", "features", func(p *config.Plugin) { p.Config = config.RawConfig("all") }),
		testPlugin("some", "features", func(p *config.Plugin) { p.Config = config.RawConfig("request-headers-only") }),
	)
	for _, tc := range []struct {
		plugin string
		called bool
	}{{"all", true}, {"some", false}} {
		x := newExchange("http://example.com/")
		run(t, factoryOf(t, set, tc.plugin), x)
		if got := string(x.Ctx.Request.Header.Peek("x-config")); got == "" {
			t.Errorf("%s: the request headers callback did not run", tc.plugin)
		}
		seen := len(x.Ctx.Response.Header.Peek("x-seen-status")) > 0
		ended := bytes.HasSuffix(x.Ctx.Response.Body(), []byte("-end"))
		if seen != tc.called || ended != tc.called {
			t.Errorf("%s: response headers called %v, response body called %v; want %v", tc.plugin, seen, ended, tc.called)
		}
	}
	if _, st := foreignFuncs["wasmgate_callbacks"](&instance{cur: &stream{}}, []byte{1, 0, 0, 0}); st != abi.StatusBadArgument {
		t.Errorf("declared in a request's context: %v", st)
	}
	if _, st := foreignFuncs["wasmgate_callbacks"](&instance{}, []byte{1}); st != abi.StatusBadArgument {
		t.Errorf("declared with one byte: %v", st)
	}
}

// FuzzForeignSealHeader: whatever its arguments, wasmgate_seal_header
// neither panics nor answers other than OK, EMPTY or BAD_ARGUMENT in a
// request, and a header it writes holds no control character.
func FuzzForeignSealHeader(f *testing.F) {
	key, nonce := bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{9}, 12)
	f.Add(sealHeaderArgs(abi.MapHTTPRequestHeaders, key, nonce, []byte("x-secret"), []byte("enc:v1:k1:")))
	f.Add(sealHeaderArgs(abi.MapHTTPResponseHeaders, key[:16], nonce, []byte("x-secret"), nil))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, args []byte) {
		x := newExchange("http://example.com/", "X-Secret", "4111-1111-1111-1111")
		x.Ctx.Response.Header.Set("x-secret", "v")
		in := &instance{cur: &stream{x: x}}
		_, st := foreignFuncs["wasmgate_seal_header"](in, args)
		switch st {
		case abi.StatusOK, abi.StatusEmpty, abi.StatusBadArgument:
		default:
			t.Fatalf("status %v", st)
		}
		for _, v := range [][]byte{x.Ctx.Request.Header.Peek("x-secret"), x.Ctx.Response.Header.Peek("x-secret")} {
			if !validHeaderValue(v) {
				t.Fatalf("header value %q", v)
			}
		}
	})
}
