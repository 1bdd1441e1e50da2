package wasm

import (
	"encoding/binary"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// FuzzHostFunctions calls every host function with pointers and lengths
// chosen by the fuzzer, from inside a stream context of a real instance.
// A host function must answer with a status, never crash, and never break
// the instance.
func FuzzHostFunctions(f *testing.F) {
	m := newTestManager(f)
	set := prepare(f, m, testPlugin("fuzz", "minimal", func(p *config.Plugin) {
		p.PoolSize = 1
		p.MemoryLimitMB = 4
		p.AllowedClusters = []string{"down"}
	}))
	fac := factoryOf(f, set, "fuzz")
	x := newExchange("http://example.com/fuzz?q=1", "x-a", "1", "x-b", "2")
	st, err := fac.NewStream(x)
	if err != nil {
		f.Fatal(err)
	}
	s := st.(*stream)
	in := s.in
	f.Cleanup(func() { s.Done(x) })

	for i := range hostFuncs {
		seed := make([]byte, 1+12*8)
		seed[0] = byte(i)
		binary.LittleEndian.PutUint64(seed[1:], 0)
		binary.LittleEndian.PutUint64(seed[9:], 1024)
		binary.LittleEndian.PutUint64(seed[17:], 5)
		binary.LittleEndian.PutUint64(seed[25:], 512)
		binary.LittleEndian.PutUint64(seed[33:], 516)
		f.Add(seed)
		seed2 := append([]byte(nil), seed...)
		binary.LittleEndian.PutUint64(seed2[9:], 0xFFFFFFF0)
		binary.LittleEndian.PutUint64(seed2[17:], 0x7FFFFFFF)
		f.Add(seed2)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		h := hostFuncs[int(data[0])%len(hostFuncs)]
		if h.name == "proxy_set_tick_period_milliseconds" {
			return // starts a timer; covered elsewhere
		}
		var stack [12]uint64
		rest := data[1:]
		for i := 0; i < h.params && len(rest) > 0; i++ {
			n := min(8, len(rest))
			var b [8]byte
			copy(b[:], rest[:n])
			v := binary.LittleEndian.Uint64(b[:])
			if i != h.i64 {
				v = uint64(uint32(v)) // an i32 as wazero hands it over
				if len(rest) > n && rest[n]&1 == 1 {
					v |= 0xdead << 32 // garbage in the upper half
				}
			}
			stack[i] = v
			rest = rest[n:]
		}
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.broken {
			t.Skip("instance replaced")
		}
		s.inCallback = true
		in.enterStream(s)
		status := h.fn(in, stack[:])
		in.leave()
		s.inCallback = false
		if abi.Status(uint32(status)) > abi.StatusUnimplemented {
			t.Fatalf("%s returned %d", h.name, status)
		}
		if in.broken {
			t.Fatalf("%s broke the instance", h.name)
		}
	})
}

// FuzzParseMap feeds arbitrary bytes to the map decoder and checks that
// what it accepts serializes back to an equivalent map.
func FuzzParseMap(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add(serialize(nil, []kv{{[]byte("a"), []byte("1")}, {[]byte("b"), []byte("22")}}))
	f.Add([]byte{1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, ok := parseMap(b, nil)
		if !ok {
			return
		}
		again, ok := parseMap(serialize(nil, kvs), nil)
		if !ok || len(again) != len(kvs) {
			t.Fatalf("round trip: %v %d != %d", ok, len(again), len(kvs))
		}
	})
}

// FuzzSplice checks buffer edits against a simple model.
func FuzzSplice(f *testing.F) {
	f.Add([]byte("hello"), uint32(0), uint32(0x7FFFFFFF), []byte("x"))
	f.Add([]byte("hello"), uint32(0x7FFFFFFF), uint32(0), []byte("x"))
	f.Add([]byte("hello"), uint32(0), uint32(0), []byte("x"))
	f.Fuzz(func(t *testing.T, b []byte, start, size uint32, v []byte) {
		n := uint64(len(b))
		st := min(uint64(start), n)
		end := min(st+uint64(size), n)
		want := string(b[:st]) + string(v) + string(b[end:])
		got := string(splice(append([]byte(nil), b...), uint64(start), uint64(size), v))
		if got != want {
			t.Fatalf("splice(%q, %d, %d, %q) = %q, want %q", b, start, size, v, got, want)
		}
	})
}
