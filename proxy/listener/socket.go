package listener

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reusePort is a net.ListenConfig.Control that sets SO_REUSEPORT: the one
// place the option is set.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// socket is a bound TCP address. It outlives the generations of a
// listener that serve it: the replacement of a changed listener at the
// same address takes the socket over, so that no connection is refused
// during a reload and no second socket is bound beside the first. One
// goroutine accepts and hands each connection to the newest generation.
type socket struct {
	ln net.Listener

	mu     sync.Mutex
	gens   []*generation // serving, oldest first
	refs   int           // generations that hold the socket
	closed bool
}

// bind binds a new socket for addr.
func bind(addr string, shared bool) (*socket, error) {
	var lc net.ListenConfig
	if shared {
		lc.Control = reusePort
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &socket{ln: ln}
	go s.accept()
	return s, nil
}

// join returns a new generation on the socket, not serving yet; nil when
// the socket is closed.
func (s *socket) join() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.refs++
	return &generation{s: s, conns: make(chan net.Conn), done: make(chan struct{})}
}

// serve makes g the generation that new connections go to.
func (s *socket) serve(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gens = append(s.gens, g)
}

// leave drops g; the socket closes with its last generation.
func (s *socket) leave(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	if s.refs--; s.refs == 0 && !s.closed {
		s.closed = true
		_ = s.ln.Close()
	}
}

// newest returns the generation that new connections go to, or nil.
func (s *socket) newest() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gens) == 0 {
		return nil
	}
	return s.gens[len(s.gens)-1]
}

func (s *socket) accept() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors, say: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.handOver(c)
	}
}

// handOver gives c to the newest generation, or closes it when none
// serves (the listener is stopping).
func (s *socket) handOver(c net.Conn) {
	for {
		g := s.newest()
		if g == nil {
			_ = c.Close()
			return
		}
		select {
		case g.conns <- c:
			return
		case <-g.done:
			// g stopped meanwhile: the next newest takes it.
		}
	}
}

// generation is the net.Listener that one fasthttp.Server of a listener
// serves: the connections the socket hands it.
type generation struct {
	s     *socket
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var _ net.Listener = (*generation)(nil)

func (g *generation) Accept() (net.Conn, error) {
	select {
	case c := <-g.conns:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

// Close stops the generation accepting; the socket stays open while
// another generation holds it.
func (g *generation) Close() error {
	g.once.Do(func() {
		close(g.done)
		g.s.leave(g)
	})
	return nil
}

func (g *generation) Addr() net.Addr { return g.s.ln.Addr() }
