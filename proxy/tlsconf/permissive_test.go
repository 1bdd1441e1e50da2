package tlsconf_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// TestMeshPermissive: a permissive mesh listener serves mutual TLS and
// plain text on one port, sorted by the first byte, and a client that
// sends nothing holds up no other and is closed after the handshake
// timeout.
func TestMeshPermissive(t *testing.T) {
	r := newRoot(t, "wasmgate.local")
	srv, err := tlsconf.NewServer(config.ListenerTLS{Mesh: true, Permissive: true, HandshakeTimeout: config.Duration(500 * time.Millisecond)},
		[]string{"http/1.1"}, nil, tlsconf.WithMesh(newMesh(r.svid(t, "/ns/shop/sa/b"), r)))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(inner, srv)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if tc, ok := c.(*tlsconf.Conn); ok {
					if tc.Handshake() != nil {
						return
					}
					io.Copy(c, c) // dialMesh's round trip
					return
				}
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "plain "+line)
			}()
		}
	}()
	addr := inner.Addr().String()

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(plain, "GET / HTTP/1.1\n")
	got, err := bufio.NewReader(plain).ReadString('\n')
	if err != nil || got != "plain GET / HTTP/1.1\n" {
		t.Fatalf("plain text: %q %v", got, err)
	}

	c, err := dialMesh(t, addr, newMesh(r.svid(t, "/ns/shop/sa/a"), r), idB)
	if err != nil {
		t.Fatalf("mutual TLS beside plain text: %v", err)
	}
	c.Close()

	// The silent client is closed once the handshake timeout passed.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the silent client was not closed: %v", err)
	}
}
