package listener

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// ServeTCP starts serving a TCP listener (tcp_proxy): each connection,
// over TLS when the listener has TLS (the handshake is the serving
// goroutine's, on its first read or TLSInfo), goes to serve on a
// goroutine of its own, which must close it. sockets, when set, wraps the
// socket first, as Handler.Sockets does.
func (l *Listener) ServeTCP(serve func(net.Conn), sockets func(net.Listener) net.Listener, log *zap.Logger) {
	l.tcp = &tcpConns{open: map[net.Conn]struct{}{}, done: make(chan struct{})}
	var ln net.Listener = l.gen
	if sockets != nil {
		ln = sockets(ln)
	}
	if l.front.tls != nil {
		ln = tlsconf.NewListener(ln, l.front.tls)
	}
	l.sock.serve(l.gen)
	go func() {
		defer close(l.tcp.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Error("listener stopped", zap.String("listener", l.cfg.Name), zap.Error(err))
				}
				return
			}
			if !l.tcp.add(c) {
				_ = c.Close()
				continue
			}
			go func() {
				defer l.tcp.remove(c)
				serve(c)
			}()
		}
	}()
}

// tcpConns are the open connections of a TCP listener.
type tcpConns struct {
	mu      sync.Mutex
	open    map[net.Conn]struct{}
	closing bool
	done    chan struct{} // closed when the accept loop returns
}

func (t *tcpConns) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.open[c] = struct{}{}
	return true
}

func (t *tcpConns) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.open, c)
	t.mu.Unlock()
}

func (t *tcpConns) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// stop stops accepting, lets the open connections end by themselves
// until gentle is done, then closes those left; hard bounds the wait for
// their goroutines to see it.
func (t *tcpConns) stop(l *Listener, gentle, hard context.Context) error {
	_ = l.gen.Close()
	<-t.done
	tick := time.NewTicker(retirePoll)
	defer tick.Stop()
	closed := false
	for t.count() > 0 {
		var soft <-chan struct{}
		if !closed {
			soft = gentle.Done()
		}
		select {
		case <-soft:
			t.closeAll()
			closed = true
		case <-hard.Done():
			t.closeAll()
			return hard.Err()
		case <-tick.C:
		}
	}
	l.front.shutdown(hard)
	return nil
}

func (t *tcpConns) closeAll() {
	t.mu.Lock()
	t.closing = true
	for c := range t.open {
		_ = c.Close()
	}
	t.mu.Unlock()
}
