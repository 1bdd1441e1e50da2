package conntrack

import (
	"net"
	"testing"
)

// TestSet: CloseAll closes what is open and what comes after, and Wait
// returns once every connection is done.
func TestSet(t *testing.T) {
	var s Set
	a, peerA := net.Pipe()
	defer peerA.Close()
	if !s.Add(a) || s.Len() != 1 {
		t.Fatalf("add: len %d", s.Len())
	}
	s.CloseAll()
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("an open connection survived CloseAll")
	}
	b, peerB := net.Pipe()
	defer peerB.Close()
	if s.Add(b) {
		t.Error("a connection added after CloseAll was kept")
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Error("a connection refused after CloseAll is still open")
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	s.Done(a)
	<-done
	if s.Len() != 0 {
		t.Errorf("len %d after Done", s.Len())
	}
}
