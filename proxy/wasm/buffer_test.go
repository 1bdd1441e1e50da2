package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestGetBufferBytesRange reads a body as Envoy's get_buffer_bytes
// serves ranges: cut short at the end, and empty (not an error) when the
// range starts past it.
func TestGetBufferBytesRange(t *testing.T) {
	s := inCallback(t)
	in := s.in
	s.body, s.bodyType = &filter.Body{B: []byte("0123456789")}, abi.BufferHTTPRequestBody
	const ptrAt, sizeAt = 512, 516
	for _, tc := range []struct {
		start, length uint64
		want          string
	}{
		{0, 4, "0123"},
		{6, 100, "6789"},
		{10, 5, ""},
		{11, 5, ""},
		{0xFFFFFFF0, 0x7FFFFFFF, ""},
	} {
		if status := hostGetBufferBytes(in, []uint64{uint64(abi.BufferHTTPRequestBody), tc.start, tc.length, ptrAt, sizeAt}); status != abi.StatusOK {
			t.Errorf("[%d, +%d): status %v, want OK", tc.start, tc.length, status)
			continue
		}
		ptr, _ := in.mem.ReadUint32Le(ptrAt)
		size, _ := in.mem.ReadUint32Le(sizeAt)
		got, _ := in.mem.Read(ptr, size)
		if string(got) != tc.want {
			t.Errorf("[%d, +%d): %q, want %q", tc.start, tc.length, got, tc.want)
		}
	}
}

// TestHeaderMapSize answers proxy_get_header_map_size as Envoy does: the
// sum of the names' and values' lengths (HeaderMap::byteSize), not the
// size of the map serialized.
func TestHeaderMapSize(t *testing.T) {
	in := inCallback(t).in
	// What the filter gets from proxy_get_header_map_pairs, summed.
	const ptrAt, lenAt = 520, 524
	if st := hostGetHeaderMapPairs(in, []uint64{uint64(abi.MapHTTPRequestHeaders), ptrAt, lenAt}); st != abi.StatusOK {
		t.Fatal(st)
	}
	ptr, _ := in.mem.ReadUint32Le(ptrAt)
	n, _ := in.mem.ReadUint32Le(lenAt)
	b, _ := in.mem.Read(ptr, n)
	pairs, ok := parseMap(append([]byte(nil), b...), nil)
	if !ok || len(pairs) < 4 {
		t.Fatalf("pairs: %v %d", ok, len(pairs))
	}
	want := 0
	for _, p := range pairs {
		want += len(p.k) + len(p.v)
	}
	const sizeAt = 512
	if st := hostGetHeaderMapSize(in, []uint64{uint64(abi.MapHTTPRequestHeaders), sizeAt}); st != abi.StatusOK {
		t.Fatal(st)
	}
	if got, _ := in.mem.ReadUint32Le(sizeAt); int(got) != want {
		t.Errorf("size %d, want %d", got, want)
	}
}

// inCallback returns a stream of the minimal module on a request, with
// its instance held as during one of its callbacks, so that a test can
// call host functions directly; all is released when the test ends.
func inCallback(t *testing.T) *stream {
	t.Helper()
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("direct", "minimal"))
	x := newExchange("http://example.com/direct")
	st, err := factoryOf(t, set, "direct").NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*stream)
	in := s.in
	in.mu.Lock()
	in.enterStream(s)
	t.Cleanup(func() {
		in.leave()
		in.mu.Unlock()
		s.Done(x)
	})
	return s
}
