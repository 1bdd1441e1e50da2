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
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("range", "minimal"))
	x := newExchange("http://example.com/range")
	st, err := factoryOf(t, set, "range").NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*stream)
	defer s.Done(x)
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	s.body, s.bodyType = &filter.Body{B: []byte("0123456789")}, abi.BufferHTTPRequestBody
	in.enterStream(s)
	defer in.leave()
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
