// Package h3 serves HTTP/3 over QUIC (quic-go) with the same
// fasthttp.RequestHandler that serves HTTP/1.1 and HTTP/2, through the
// adapter of package h2: every request stream becomes a pooled
// fasthttp.RequestCtx whose connection reports the QUIC connection's
// addresses, TLS state and peer identity.
package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// DefaultMaxConcurrentStreams bounds the request streams of a connection
// when Options leave it unset.
const DefaultMaxConcurrentStreams = 250

// Options configure a Server. The zero value of each field means its default.
type Options struct {
	// Allow0RTT accepts requests in TLS early data, which an attacker can
	// replay. Off unless asked for.
	Allow0RTT bool
	// MaxConcurrentStreams bounds the request streams a client may open at
	// once on one connection.
	MaxConcurrentStreams int64
	// MaxHeaderBytes bounds the header section of a request. Zero means
	// quic-go's default.
	MaxHeaderBytes int
	// IdleTimeout closes a connection with nothing to do. Zero means 60s.
	IdleTimeout time.Duration
	// Logger receives the adapter's logs; nil means none.
	Logger fasthttp.Logger
	// Flows, when set, receives a flow record of every connection once it
	// has closed, naming Listener, while flows have a sink.
	Flows    *telemetry.Pipeline
	Listener string
}

// Server serves HTTP/3 with a fasthttp.RequestHandler.
type Server struct {
	adapter *Adapter
	tls     *tlsconf.Server
	srv     *http3.Server
}

// NewServer returns a server that hands every request to h, with the
// certificates and client authentication of t.
func NewServer(h fasthttp.RequestHandler, t *tlsconf.Server, opts Options) *Server {
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	s := &Server{adapter: NewAdapter(h, "HTTP/3", opts.Logger), tls: t}
	s.srv = &http3.Server{
		TLSConfig: t.Config(),
		QUICConfig: &quic.Config{
			Allow0RTT:          opts.Allow0RTT,
			MaxIncomingStreams: opts.MaxConcurrentStreams,
			MaxIdleTimeout:     opts.IdleTimeout,
		},
		Handler:        s,
		MaxHeaderBytes: opts.MaxHeaderBytes,
		IdleTimeout:    opts.IdleTimeout,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			conn := &Conn{qc: c, srv: t}
			if opts.Flows != nil {
				start := time.Now()
				context.AfterFunc(c.Context(), func() { conn.emitFlow(opts.Flows, opts.Listener, start) })
			}
			return context.WithValue(ctx, connKey{}, conn)
		},
	}
	return s
}

// emitFlow emits the flow record of the connection, which has closed:
// the bytes are the QUIC packets' (UDP's headers left out), as quic-go
// counts them.
func (c *Conn) emitFlow(p *telemetry.Pipeline, listener string, start time.Time) {
	st := c.qc.ConnectionStats()
	f := telemetry.ConnFlow{Listener: listener, Source: c.qc.RemoteAddr(), Destination: c.qc.LocalAddr(), Start: start,
		BytesIn: int64(st.BytesReceived), BytesOut: int64(st.BytesSent), CloseReason: closeReason(context.Cause(c.qc.Context()))}
	cs := c.qc.ConnectionState().TLS
	if cs.HandshakeComplete {
		f.TLSVersion, f.TLSCipher = cs.Version, cs.CipherSuite
		f.SourceIdentity, f.DestinationIdentity = c.identity().SPIFFE()
	}
	p.EmitFlow(&f)
}

// closeReason names why a QUIC connection ended, as flow records do.
func closeReason(err error) string {
	var app *quic.ApplicationError
	var tr *quic.TransportError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	switch {
	case errors.As(err, &idle), errors.As(err, &hs):
		return "timeout"
	case errors.As(err, &app):
		if app.Remote {
			return "peer_closed"
		}
		return "local_close"
	case errors.As(err, &tr) && tr.ErrorCode == quic.NoError:
		if tr.Remote {
			return "peer_closed"
		}
		return "local_close"
	case errors.Is(err, quic.ErrServerClosed):
		return "local_close"
	}
	return "error"
}

// Serve serves QUIC on pc until Shutdown.
func (s *Server) Serve(pc net.PacketConn) error {
	err := s.srv.Serve(pc)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, quic.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown sends GOAWAY on every connection and waits for their requests
// to finish, until ctx is done; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// ServeHTTP implements http.Handler for quic-go's server.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(*Conn)
	if c == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	s.adapter.Serve(c, w, r)
}

type connKey struct{}

// Conn stands for a QUIC connection where the request handler expects a
// net.Conn: it reports the addresses, the TLS state and the peer identity,
// computed once per connection. Reading, writing and closing it do nothing;
// the request's streams carry the data.
type Conn struct {
	qc  *quic.Conn
	srv *tlsconf.Server

	once sync.Once
	id   tlsconf.Identity
}

var errNoStream = errors.New("h3: a QUIC connection is not read or written as a byte stream")

func (c *Conn) Read([]byte) (int, error)         { return 0, errNoStream }
func (c *Conn) Write([]byte) (int, error)        { return 0, errNoStream }
func (c *Conn) Close() error                     { return nil }
func (c *Conn) LocalAddr() net.Addr              { return c.qc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr             { return c.qc.RemoteAddr() }
func (c *Conn) SetDeadline(time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Handshake reports success: QUIC completed it before the first request
// (or is completing it, for a request in 0-RTT data).
func (c *Conn) Handshake() error { return nil }

// ConnectionState returns the connection's TLS state.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.qc.ConnectionState().TLS }

func (c *Conn) identity() *tlsconf.Identity {
	cs := c.qc.ConnectionState().TLS
	if !cs.HandshakeComplete {
		// A request in 0-RTT data: the client's certificate, if any, has
		// not been seen yet.
		id := c.srv.Identify(&cs)
		return &id
	}
	c.once.Do(func() { c.id = c.srv.Identify(&cs) })
	return &c.id
}

// TLSInfo returns the connection's TLS facts.
func (c *Conn) TLSInfo() *filter.TLSInfo { return c.identity().Info }

// XFCC returns the X-Forwarded-Client-Cert value for the connection's
// verified client certificate, or nil.
func (c *Conn) XFCC() []byte { return c.identity().XFCC }
