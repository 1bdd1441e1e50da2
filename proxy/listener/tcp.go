package listener

import (
	"context"
	"errors"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/internal/conntrack"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// ServeTCP starts serving a TCP listener (tcp_proxy): each connection,
// over TLS when the listener has TLS (the handshake is the serving
// goroutine's, on its first read or TLSInfo), goes to serve on a
// goroutine of its own, which must close it. sockets, when set, wraps the
// socket first, as Handler.Sockets does.
func (l *Listener) ServeTCP(serve func(net.Conn), sockets func(net.Listener) net.Listener, log *zap.Logger) {
	l.tcp = &tcpConns{done: make(chan struct{})}
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
			if !l.tcp.open.Add(c) {
				continue
			}
			go func() {
				defer l.tcp.open.Done(c)
				serve(c)
			}()
		}
	}()
}

// tcpConns are the open connections of a TCP listener.
type tcpConns struct {
	open conntrack.Set
	done chan struct{} // closed when the accept loop returns
}

func (t *tcpConns) count() int { return t.open.Len() }

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
			t.open.CloseAll()
			closed = true
		case <-hard.Done():
			t.open.CloseAll()
			return hard.Err()
		case <-tick.C:
		}
	}
	l.front.shutdown(hard)
	return nil
}
