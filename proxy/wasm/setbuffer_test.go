package wasm

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// TestSetBufferBytesAsEnvoy calls proxy_set_buffer_bytes on a request
// body as Envoy's Buffer::copyFrom answers it: from the start, length
// bytes are replaced (0 prepends, more than the body replaces it all); at
// or past the end, the bytes are appended whatever the length; anywhere
// else is BAD_ARGUMENT and the body is left as it was.
func TestSetBufferBytesAsEnvoy(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("setbuffer", "minimal", func(p *config.Plugin) { p.PoolSize = 1 }))
	x := newExchange("http://example.com/")
	st, err := factoryOf(t, set, "setbuffer").NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*stream)
	defer s.Done(x)
	in := s.in
	const at = 512 // guest memory the new bytes are read from
	for _, tc := range []struct {
		start, length uint32
		want          string
		status        abi.Status
	}{
		{0, 0, "XYhello", abi.StatusOK},
		{0, 2, "XYllo", abi.StatusOK},
		{0, 0x7FFFFFFF, "XY", abi.StatusOK},
		{5, 0, "helloXY", abi.StatusOK},
		{5, 3, "helloXY", abi.StatusOK},
		{9, 0, "helloXY", abi.StatusOK},
		{0x7FFFFFFF, 0, "helloXY", abi.StatusOK},
		{2, 1, "hello", abi.StatusBadArgument},
		{4, 0, "hello", abi.StatusBadArgument},
	} {
		body := &filter.Body{B: []byte("hello")}
		in.mu.Lock()
		if !in.mem.Write(at, []byte("XY")) {
			in.mu.Unlock()
			t.Fatal("cannot write guest memory")
		}
		s.inCallback, s.body, s.bodyType = true, body, abi.BufferHTTPRequestBody
		in.enterStream(s)
		got := hostSetBufferBytes(in, []uint64{uint64(abi.BufferHTTPRequestBody), uint64(tc.start), uint64(tc.length), at, 2})
		in.leave()
		s.inCallback, s.body = false, nil
		in.mu.Unlock()
		if got != tc.status || string(body.B) != tc.want {
			t.Errorf("set_buffer_bytes(start %d, length %d, \"XY\") on \"hello\": %v, %q; want %v, %q", tc.start, tc.length, got, body.B, tc.status, tc.want)
		}
	}
}
