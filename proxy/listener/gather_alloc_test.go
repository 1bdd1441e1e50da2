//go:build !race

package listener

import (
	"net"
	"testing"
)

// TestGatherWriteAllocs: holding a response's first write and sending it
// with the second in one writev allocates nothing.
func TestGatherWriteAllocs(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, _ := ln.Accept()
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	raw, _ := net.Dial("tcp", ln.Addr().String())
	c := &gatherConn{Conn: raw}
	a, b := make([]byte, 4096), make([]byte, 12000)
	n := testing.AllocsPerRun(200, func() {
		c.gather()
		c.Write(a)
		c.Write(b)
	})
	if n != 0 {
		t.Fatalf("a gathered response costs %v allocations, want 0", n)
	}
}
