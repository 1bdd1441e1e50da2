package h2

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// Defaults for unset Options.
const (
	DefaultMaxConcurrentStreams = 250
	DefaultStreamWindow         = 1 << 20
	DefaultConnectionWindow     = 4 << 20
	DefaultIdleTimeout          = 60 * time.Second
)

// Options configure a Server. The zero value of each field means its default.
type Options struct {
	// MaxConcurrentStreams bounds the streams a client may open at once on
	// one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds the decoded header list of a request
	// (SETTINGS_MAX_HEADER_LIST_SIZE). Zero means 64 KiB.
	MaxHeaderBytes int
	// StreamWindow and ConnectionWindow are the flow-control windows the
	// proxy grants: how much request body it buffers per stream and per
	// connection before the client must wait.
	StreamWindow     int32
	ConnectionWindow int32
	// MaxReadFrameSize is the largest frame accepted. Zero means 16 KiB.
	MaxReadFrameSize uint32
	// IdleTimeout closes a connection with no open stream.
	IdleTimeout time.Duration
	// CountError, if set, is called with the name of every protocol error a
	// client causes (a flood of resets, a bad frame, ...).
	CountError func(errType string)
	// Logger receives the adapter's logs; nil means none.
	Logger fasthttp.Logger
}

// Server serves HTTP/2 connections with a fasthttp.RequestHandler.
//
// A flood of streams that a client opens and resets at once (the "rapid
// reset" attack) is bounded by x/net/http2: handlers beyond
// MaxConcurrentStreams wait in a queue of at most four times that many,
// and a client that overflows it gets GOAWAY ENHANCE_YOUR_CALM.
type Server struct {
	adapter *Adapter
	h2      *http2.Server
	base    *http.Server

	mu     sync.Mutex
	conns  sync.WaitGroup
	closed bool
}

// NewServer returns a server that hands every stream to h.
func NewServer(h fasthttp.RequestHandler, opts Options) *Server {
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if opts.StreamWindow == 0 {
		opts.StreamWindow = DefaultStreamWindow
	}
	if opts.ConnectionWindow == 0 {
		opts.ConnectionWindow = DefaultConnectionWindow
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes == 0 {
		opts.MaxHeaderBytes = 64 << 10
	}
	s := &Server{
		adapter: NewAdapter(h, "HTTP/2", opts.Logger),
		h2: &http2.Server{
			MaxConcurrentStreams:         opts.MaxConcurrentStreams,
			MaxUploadBufferPerStream:     opts.StreamWindow,
			MaxUploadBufferPerConnection: opts.ConnectionWindow,
			MaxReadFrameSize:             opts.MaxReadFrameSize,
			IdleTimeout:                  opts.IdleTimeout,
			CountError:                   opts.CountError,
		},
		base: &http.Server{MaxHeaderBytes: opts.MaxHeaderBytes, ErrorLog: nil},
	}
	// Registers the graceful shutdown of every connection with base.
	_ = http2.ConfigureServer(s.base, s.h2)
	return s
}

// ServeConn serves one connection that speaks HTTP/2 from its first byte
// (a TLS connection that negotiated h2, or h2c with prior knowledge) until
// it closes. It has the signature of fasthttp.ServeHandler, for
// fasthttp.Server.NextProto.
func (s *Server) ServeConn(c net.Conn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return c.Close()
	}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()
	s.h2.ServeConn(c, &http2.ServeConnOpts{
		BaseConfig: s.base,
		Handler:    &connHandler{a: s.adapter, conn: c},
	})
	return nil
}

// Shutdown sends GOAWAY on every connection, lets their open streams
// finish and waits for the connections to close, until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.base.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connHandler serves the streams of one connection.
type connHandler struct {
	a    *Adapter
	conn net.Conn
}

func (h *connHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.a.Serve(h.conn, w, r)
}
