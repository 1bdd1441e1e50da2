package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Gate is a TCP forwarder in front of an etcd endpoint that a test can
// cut and open again, to lose and regain a client's connection.
type Gate struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	open  bool
	conns map[net.Conn]struct{}
}

// NewGate forwards a loopback port to target (host:port). It is closed
// when the test ends.
func NewGate(t testing.TB, target string) *Gate {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{l: l, target: target, open: true, conns: map[net.Conn]struct{}{}}
	go g.serve()
	t.Cleanup(func() { l.Close(); g.Cut() })
	return g
}

// Endpoint is the gate's client URL.
func (g *Gate) Endpoint() string { return "http://" + g.l.Addr().String() }

// Cut closes every forwarded connection and refuses new ones until Open.
func (g *Gate) Cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = false
	for c := range g.conns {
		c.Close()
	}
	g.conns = map[net.Conn]struct{}{}
}

// Open lets connections through again.
func (g *Gate) Open() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
}

func (g *Gate) serve() {
	for {
		c, err := g.l.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		if !open {
			c.Close()
			continue
		}
		go g.forward(c)
	}
}

func (g *Gate) forward(c net.Conn) {
	u, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if !g.open {
		g.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	g.conns[c], g.conns[u] = struct{}{}, struct{}{}
	g.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
}
