package testaddr

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestFree: the addresses are distinct, below the ephemeral range, free
// to bind, and held against other tests until the test ends.
func TestFree(t *testing.T) {
	seen := map[string]bool{}
	var last string
	for range 20 {
		addr := Free(t)
		if seen[addr] {
			t.Fatalf("%s given twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < low || port >= ephemeralStart() {
			t.Fatalf("port %d is outside [%d, %d)", port, low, ephemeralStart())
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("binding %s: %v", addr, err)
		}
		l.Close()
		last = p
	}
	// Another test binary opening the same port's lock is refused.
	if f, ok := reserve(filepath.Join(os.TempDir(), "wasmgate-test-ports"), mustAtoi(t, last)); ok {
		f.Close()
		t.Fatalf("port %s was reserved twice", last)
	}
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
