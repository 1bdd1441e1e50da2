// Package h2 serves HTTP/2, over TLS (ALPN h2) and in cleartext (h2c with
// prior knowledge), with the same fasthttp.RequestHandler that serves
// HTTP/1.1: every stream becomes a pooled fasthttp.RequestCtx, so routing,
// filters and clusters are written once.
//
// The connection state machine, flow control, scheduling and write
// batching are this package's (see README.md); frame headers, control
// frames and HPACK are decoded and encoded with golang.org/x/net/http2's
// Framer and hpack package. The Adapter, which serves requests that arrive
// through net/http's interfaces, is package h3's.
package h2

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Defaults for unset Options.
const (
	DefaultMaxConcurrentStreams = 250
	DefaultStreamWindow         = 1 << 20
	DefaultConnectionWindow     = 4 << 20
	DefaultIdleTimeout          = 60 * time.Second
	DefaultMaxHeaderBytes       = 64 << 10
)

// Options configure a Server. The zero value of each field means its default.
type Options struct {
	// MaxConcurrentStreams bounds the streams a client may open at once on
	// one connection (SETTINGS_MAX_CONCURRENT_STREAMS). It also bounds the
	// handlers that run at once for one connection: streams a client opens
	// and resets while their handlers still run wait in a queue of at most
	// four times that many, and a client that overflows it gets GOAWAY
	// ENHANCE_YOUR_CALM (the "rapid reset" attack).
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds the decoded header list of a request
	// (SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113 does: name,
	// value and 32 bytes per field). A request over it is answered 431
	// without reaching the handler. Zero means 64 KiB.
	MaxHeaderBytes int
	// StreamWindow and ConnectionWindow are the flow-control windows the
	// proxy grants: how much request body it buffers per stream and per
	// connection before the client must wait.
	StreamWindow     int32
	ConnectionWindow int32
	// MaxReadFrameSize is the largest frame accepted. Zero means 16 KiB.
	MaxReadFrameSize uint32
	// IdleTimeout closes a connection with no open stream (GOAWAY, then
	// close). It also bounds how long a write to the client may block.
	IdleTimeout time.Duration
	// SettingsTimeout is how long the client has to acknowledge the
	// server's SETTINGS: past it the connection ends with GOAWAY
	// SETTINGS_TIMEOUT (RFC 9113 §6.5.3). Zero means 10 seconds.
	SettingsTimeout time.Duration
	// CountError, if set, is called with the name of every protocol error a
	// client causes (a flood of resets, a bad frame, ...). It may be
	// called from several goroutines at once.
	CountError func(errType string)
	// Logger receives the server's logs; nil means none.
	Logger fasthttp.Logger
}

// Server serves HTTP/2 connections with a fasthttp.RequestHandler. It is
// safe for concurrent use: ServeConn is called once per connection, from
// the connection's own goroutine.
type Server struct {
	handler fasthttp.RequestHandler
	opts    Options
	logger  fasthttp.Logger
	workers workerPool

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	wg     sync.WaitGroup
	closed bool
}

// NewServer returns a server that hands every stream to h.
func NewServer(h fasthttp.RequestHandler, opts Options) *Server {
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if opts.StreamWindow <= 0 {
		opts.StreamWindow = DefaultStreamWindow
	}
	if opts.ConnectionWindow <= 0 {
		opts.ConnectionWindow = DefaultConnectionWindow
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	switch {
	case opts.MaxReadFrameSize == 0:
		opts.MaxReadFrameSize = minMaxFrameSize
	case opts.MaxReadFrameSize < minMaxFrameSize:
		opts.MaxReadFrameSize = minMaxFrameSize
	case opts.MaxReadFrameSize > maxMaxFrameSize:
		opts.MaxReadFrameSize = maxMaxFrameSize
	}
	if opts.CountError == nil {
		opts.CountError = func(string) {}
	}
	logger := opts.Logger
	if logger == nil {
		logger = nopLogger{}
	}
	return &Server{
		handler: h,
		opts:    opts,
		logger:  logger,
		conns:   map[*serverConn]struct{}{},
	}
}

// ServeConn serves one connection that speaks HTTP/2 from its first byte
// (a TLS connection that negotiated h2, or h2c with prior knowledge) until
// it closes and the handlers of its streams have returned. It has the
// signature of fasthttp.ServeHandler, for fasthttp.Server.NextProto, and
// returns nil: a connection's end is not an error of the server.
func (s *Server) ServeConn(c net.Conn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return c.Close()
	}
	sc := newServerConn(s, c)
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
		s.wg.Done()
	}()
	sc.serve()
	return nil
}

// Shutdown sends GOAWAY on every connection, lets their open streams
// finish and waits for the connections to close. When ctx is done first,
// the remaining connections are closed at once and ctx's error returned.
// Connections handed to ServeConn after Shutdown are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	// No stream starts once every connection is closing: the workers
	// may go.
	defer s.workers.stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sc := range s.conns {
			sc.forceClose()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) countError(name string) { s.opts.CountError(name) }

// maxIdleWorkers bounds the goroutines kept waiting for a stream.
const maxIdleWorkers = 1024

// workerPool runs stream handlers on reused goroutines: a goroutine that
// has served a stream waits for the next one instead of exiting, so a
// handler's grown stack is kept and no goroutine is created per request.
// Idle goroutines beyond maxIdleWorkers exit, and all of them once the
// server is shut down.
//
// The goroutine that went idle last serves the next stream: its stack is
// the one most likely still in the CPU's caches. (A channel would hand the
// stream to the goroutine idle longest.)
//
// Measured with a handler that uses about 30 KiB of stack (a proxy's
// handler uses several), BenchmarkServer costs 2.0 µs a request with
// reused goroutines and 6.5 µs with a new goroutine per stream, whose
// stack grows anew every time.
type workerPool struct {
	mu      sync.Mutex
	idle    []*worker // idle[len-1] went idle last
	stopped bool
}

// worker is an idle goroutine's mailbox: a stream to serve, or nil to
// exit.
type worker struct{ next chan *stream }

// stop ends the idle goroutines, and the others as they finish.
func (p *workerPool) stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}

func (p *workerPool) run(st *stream) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- st
		return
	}
	p.mu.Unlock()
	go p.work(st)
}

func (p *workerPool) work(st *stream) {
	w := &worker{next: make(chan *stream, 1)}
	for st != nil {
		st.serve()
		p.mu.Lock()
		if p.stopped || len(p.idle) >= maxIdleWorkers {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		st = <-w.next
	}
}
