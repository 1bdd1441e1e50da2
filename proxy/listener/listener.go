// Package listener accepts the proxy's downstream connections: it binds a
// listener's socket, speaks its protocols (cleartext HTTP/1.1 with gathered
// writes, TLS, HTTP/2 by ALPN or h2c, HTTP/3 on the UDP port of the same
// address), bounds its reads, and hands every request of every protocol
// to the one handler it serves. A TCP listener (tcp_proxy) hands it
// connections instead (ServeTCP).
//
// A Listener is one generation of a configured listener. A reload that
// changes a listener's settings builds a new generation at the same
// address: it takes the socket over (no second socket is bound, and no
// connection is refused during the switch), new connections go to it,
// and the old generation drains its own and stops. SO_REUSEPORT is set
// only when the configuration asks for it (reuse_port), so that a port
// another process holds is an error at start rather than shared by
// accident.
package listener

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// Handler is what a listener serves: the proxy's request path.
type Handler struct {
	// Serve serves every request, whatever its protocol.
	Serve fasthttp.RequestHandler
	// Error answers an HTTP/1.1 request that could not be read.
	Error func(ctx *fasthttp.RequestCtx, err error)
	// WriteStalled, when set, counts a connection closed because a write
	// to it made no progress for the write timeout.
	WriteStalled func()
	// Sockets, when set, wraps the listener's socket before TLS and the
	// listener's own layers see its connections, so that what it returns
	// sees the bytes on the wire (the proxy's flow records). nil leaves the
	// socket as it is.
	Sockets func(net.Listener) net.Listener
	// Flows, when set, receives the flow records of the listener's HTTP/3
	// connections, which have no socket of their own to wrap.
	Flows *telemetry.Pipeline
}

// Listener is one generation of a configured listener.
type Listener struct {
	cfg   config.Listener
	sock  *socket
	gen   *generation
	front *front
	srv   *fasthttp.Server // nil until Serve
	tcp   *tcpConns        // a TCP listener's connections; nil until ServeTCP
	done  chan struct{}    // closed when the HTTP/1.1 server returns
	// retiring closes each HTTP/1.1 connection after its response.
	retiring atomic.Bool
	// conns counts the HTTP/1.1 server's open connections (fasthttp's own
	// count is one short once Serve has returned).
	conns atomic.Int64
}

// New binds c's address, or takes over the socket of prev, the running
// generation of the same listener, when the address is the same (as
// configured, or as bound: "127.0.0.1:0" then its port). It also
// loads the TLS material and binds the HTTP/3 socket, so that a listener
// that cannot serve fails here. The listener serves nothing until Serve;
// a listener that is never served must be shut down all the same.
func New(c config.Listener, certs []config.Certificate, prev *Listener, mesh tlsconf.Mesh) (*Listener, error) {
	var sock *socket
	var gen *generation
	if prev != nil && (prev.cfg.Address == c.Address || prev.Addr().String() == c.Address) {
		sock = prev.sock
		gen = sock.join()
	}
	if gen == nil {
		var err error
		if sock, err = bind(c.Address, c.ReusePort); err != nil {
			return nil, err
		}
		gen = sock.join()
	}
	f, err := newFront(c, sock.ln.Addr(), certs, mesh)
	if err != nil {
		_ = gen.Close()
		return nil, err
	}
	return &Listener{cfg: c, sock: sock, gen: gen, front: f, done: make(chan struct{})}, nil
}

// Config returns the configuration the listener was built from.
func (l *Listener) Config() config.Listener { return l.cfg }

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.sock.ln.Addr() }

// Same reports whether c asks for nothing that l does not already do, so
// that a reload keeps l as it is.
func (l *Listener) Same(c config.Listener) bool {
	a := l.cfg
	return a.Address == c.Address && a.MaxRequestHeaderBytes == c.MaxRequestHeaderBytes &&
		a.IdleTimeout == c.IdleTimeout && a.MaxRequestBodyBytes == c.MaxRequestBodyBytes &&
		a.HeaderReadTimeout == c.HeaderReadTimeout && a.BodyReadTimeout == c.BodyReadTimeout &&
		a.WriteTimeout == c.WriteTimeout &&
		sameProtocols(a, c)
}

// SetCertificates makes a kept TLS listener serve the certificates it
// names as the configuration has them now.
func (l *Listener) SetCertificates(certs []config.Certificate) error {
	if l.front.tls == nil {
		return nil
	}
	return l.front.tls.SetCertificates(certs)
}

// OpenConnections counts the listener's open HTTP/1.1 and HTTP/2
// connections, or a TCP listener's connections.
func (l *Listener) OpenConnections() int {
	if l.tcp != nil {
		return l.tcp.count()
	}
	return int(l.conns.Load())
}

// connState counts open connections: a hijacked one (WebSocket) lives on
// by itself.
func (l *Listener) connState(_ net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateNew:
		l.conns.Add(1)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		l.conns.Add(-1)
	}
}

// Serve starts serving h, the one handler of the listener. log receives
// the listener's own errors.
func (l *Listener) Serve(h Handler, log *zap.Logger) {
	c := l.cfg
	l.srv = &fasthttp.Server{
		ErrorHandler:                 h.Error,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               c.MaxRequestHeaderBytes,
		IdleTimeout:                  c.IdleTimeout.Or(DefaultIdleTimeout),
		ReadTimeout:                  c.HeaderReadTimeout.Or(DefaultHeaderReadTimeout),
		HeaderReceived:               headerReceived(c),
		StreamRequestBody:            true,
		MaxRequestBodySize:           maxBodySize(c.MaxRequestBodyBytes),
		CloseOnShutdown:              true,
		DisablePreParseMultipartForm: true,
		Logger:                       fasthttpLogger{log},
		ConnState:                    l.connState,
	}
	var ln net.Listener = l.gen
	if h.Sockets != nil {
		ln = h.Sockets(ln)
	}
	write := c.WriteTimeout.Or(DefaultWriteTimeout)
	if c.TLS == nil {
		ln = gatherListener{Listener: ln, slack: readSlack(c), write: write, stalled: h.WriteStalled}
	} else {
		ln = progressListener{Listener: ln, timeout: write, stalled: h.WriteStalled}
	}
	serve := func(ctx *fasthttp.RequestCtx) {
		h.Serve(ctx)
		if l.retiring.Load() {
			ctx.SetConnectionClose()
		}
	}
	// start installs the handler, with what the front adds to it.
	ln = l.front.start(serve, log, l.srv, ln, h.Flows)
	// Last: fasthttp reads only requests whose framing h1 has checked.
	ln = h1.NewListener(ln)
	l.sock.serve(l.gen)
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(ln); err != nil {
			log.Error("listener stopped", zap.String("listener", c.Name), zap.Error(err))
		}
	}()
}

// Shutdown stops accepting connections (the socket stays open while a
// newer generation holds it), asks HTTP/2 and HTTP/3 clients to go away,
// and waits for the requests in flight until ctx is done; then it closes
// what is left.
func (l *Listener) Shutdown(ctx context.Context) error {
	if l.tcp != nil {
		return l.tcp.stop(l, ctx, ctx)
	}
	if l.srv == nil {
		_ = l.gen.Close()
		l.front.shutdown(ctx)
		return nil
	}
	fronts := make(chan struct{})
	go func() { l.front.shutdown(ctx); close(fronts) }()
	err := l.srv.ShutdownWithContext(ctx)
	_ = l.gen.Close()
	<-fronts
	<-l.done
	return err
}

// Drain starts a replaced generation's retirement at once, while requests
// of the old snapshot may still run: it stops accepting (its successor
// has the socket) and closes each HTTP/1.1 connection after its next
// response. Retire finishes the job.
func (l *Listener) Drain() {
	l.retiring.Store(true)
	_ = l.gen.Close()
}

// retirePoll is how often Retire looks whether the connections it waits
// for have ended.
const retirePoll = 20 * time.Millisecond

// Retire stops a replaced generation without cutting a request short: it
// stops accepting (a newer generation has the socket), closes each
// HTTP/1.1 keep-alive connection after its next response (Connection:
// close), sends HTTP/2 and HTTP/3 clients GOAWAY, and lets connections end
// on their own (an idle one at its idle timeout) until gentle is done.
// Then it shuts down what is left as Shutdown does, bounded by hard.
func (l *Listener) Retire(gentle, hard context.Context) error {
	if l.tcp != nil {
		return l.tcp.stop(l, gentle, hard)
	}
	if l.srv == nil {
		return l.Shutdown(hard)
	}
	l.Drain()
	fronts := make(chan struct{})
	go func() { l.front.shutdown(hard); close(fronts) }()
	tick := time.NewTicker(retirePoll)
	defer tick.Stop()
wait:
	for l.conns.Load() > 0 {
		select {
		case <-gentle.Done():
			break wait
		case <-tick.C:
		}
	}
	err := l.srv.ShutdownWithContext(hard)
	<-fronts
	<-l.done
	return err
}

func maxBodySize(n int64) int {
	if n <= 0 || n > int64(^uint(0)>>1) {
		return int(^uint(0) >> 1)
	}
	return int(n)
}

type fasthttpLogger struct{ log *zap.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.log.Debug(fmt.Sprintf(format, args...))
}
