// Package conntrack keeps the open connections of a server that serves
// raw connections (a TCP listener, the mesh's TCP relay), so that
// stopping it can close what is left.
package conntrack

import (
	"net"
	"sync"
)

// Set is the open connections. The zero value is ready.
type Set struct {
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Add registers c, whose server calls Done when it is finished with it.
// Once CloseAll has begun it closes c instead and returns false.
func (s *Set) Add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	if s.open == nil {
		s.open = map[net.Conn]struct{}{}
	}
	s.open[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// Done unregisters c.
func (s *Set) Done(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Len counts the connections registered and not yet done.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// CloseAll closes every connection registered, and those added later.
// It does not wait for their servers: Wait does.
func (s *Set) CloseAll() {
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
}

// Wait waits until every connection added is done.
func (s *Set) Wait() { s.wg.Wait() }
