// Package testaddr gives tests loopback addresses for a server that binds
// them itself: another process, or one that must come back on the same
// address after a restart.
//
// A port found by binding port 0 and closing the listener comes from the
// kernel's ephemeral range, where the next outgoing connection of any test
// in any package may take it before the server binds it. The ports given
// here lie below that range, where only an explicit bind takes a port, and
// each is reserved for the test that got it, across the test binaries that
// `go test ./...` runs at once, by a lock on a file named after it.
package testaddr

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The ports drawn from: [low, the ephemeral range's start).
const low = 10000

var (
	mu    sync.Mutex
	given = map[int]bool{} // by this process, for its whole life
)

// Free returns "127.0.0.1:PORT" with a port that no listener holds now,
// that no other test holds through this package, and that this process
// has not given before. The reservation ends with tb.
func Free(tb testing.TB) string {
	tb.Helper()
	high := ephemeralStart()
	if high-low < 1000 {
		tb.Fatalf("testaddr: the ephemeral port range starts at %d, leaving too few ports below it", high)
	}
	dir := filepath.Join(os.TempDir(), "wasmgate-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		tb.Fatalf("testaddr: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := low + rand.IntN(high-low)
		if given[port] {
			continue
		}
		lock, ok := reserve(dir, port)
		if !ok {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		given[port] = true
		tb.Cleanup(func() { lock.Close() })
		return addr
	}
	tb.Fatalf("testaddr: no free port found in [%d, %d)", low, high)
	return ""
}

// reserve takes port's lock file, or reports that another test holds it.
func reserve(dir string, port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768 // Linux's default, and below the IANA range elsewhere
	}
	var lo, hi int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}

// FreeN returns n addresses from Free.
func FreeN(tb testing.TB, n int) []string {
	tb.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = Free(tb)
	}
	return out
}
