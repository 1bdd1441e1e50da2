package listener

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/h2"
	"github.com/wasmgate/wasmgate/proxy/h3"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// front is what a listener speaks besides cleartext HTTP/1.1: TLS, HTTP/2
// by ALPN or h2c, and HTTP/3 on the UDP port of the same address. Each
// listener has its own; it lives and dies with the listener.
type front struct {
	cfg    config.Listener
	tls    *tlsconf.Server // nil without TLS
	h2     *h2.Server      // nil without HTTP/2
	h3     *h3.Server      // nil without HTTP/3
	udp    net.PacketConn
	altSvc []byte
	cancel context.CancelFunc
}

// newFront loads the TLS material of c and binds its UDP socket, so that a
// listener that cannot serve fails Apply. addr is the bound TCP address.
func newFront(c config.Listener, addr net.Addr, certs []config.Certificate, mesh tlsconf.Mesh) (*front, error) {
	f := &front{cfg: c, cancel: func() {}}
	if c.TLS != nil {
		alpn := []string{"h2", "http/1.1"}
		switch {
		case c.TCPProxy != nil:
			alpn = nil // opaque bytes: no application protocol to agree on
		case c.HTTP2 != nil && c.HTTP2.Disabled:
			alpn = []string{"http/1.1"}
		}
		srv, err := tlsconf.NewServer(*c.TLS, alpn, certs, tlsconf.WithMesh(mesh))
		if err != nil {
			return nil, err
		}
		f.tls = srv
	}
	if c.HTTP3 != nil && c.HTTP3.Enabled {
		port := addr.(*net.TCPAddr).Port
		host, _, _ := net.SplitHostPort(c.Address)
		udp, err := listenUDP(net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("http3: %w", err)
		}
		f.udp = udp
		maxAge := c.HTTP3.AltSvcMaxAge.Or(24 * time.Hour)
		f.altSvc = fmt.Appendf(nil, `h3=":%d"; ma=%d`, port, int(maxAge/time.Second))
	}
	return f, nil
}

// listenUDP binds the HTTP/3 socket. QUIC has no accept queue to hand
// over: the replacement of a changed listener binds its UDP socket beside
// the old one's while the old one drains, so it always shares the port.
func listenUDP(addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: reusePort}
	return lc.ListenPacket(context.Background(), "udp", addr)
}

// sameProtocols reports whether two listener configurations speak alike,
// so that a reload may keep the running listener.
func sameProtocols(a, b config.Listener) bool {
	return reflect.DeepEqual(a.TLS, b.TLS) && reflect.DeepEqual(a.HTTP2, b.HTTP2) && reflect.DeepEqual(a.HTTP3, b.HTTP3) &&
		(a.TCPProxy == nil) == (b.TCPProxy == nil)
}

// start wires the front into the listener's fasthttp server and starts
// HTTP/3 and the certificate watchers. It returns the listener that the
// fasthttp server must serve.
func (f *front) start(handler fasthttp.RequestHandler, log *zap.Logger, srv *fasthttp.Server, ln net.Listener, flows *telemetry.Pipeline) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	c := f.cfg
	tcpHandler := handler
	if f.altSvc != nil {
		altSvc := f.altSvc
		tcpHandler = func(ctx *fasthttp.RequestCtx) {
			handler(ctx)
			ctx.Response.Header.SetBytesV("Alt-Svc", altSvc)
		}
	}
	srv.Handler = tcpHandler
	h2on := c.TLS != nil && (c.HTTP2 == nil || !c.HTTP2.Disabled) || c.HTTP2 != nil && c.HTTP2.H2C
	if h2on {
		opts := h2.Options{
			MaxHeaderBytes: c.MaxRequestHeaderBytes,
			IdleTimeout:    c.IdleTimeout.Or(DefaultIdleTimeout),
			Logger:         fasthttpLogger{log},
			CountError: func(kind string) {
				if ce := log.Check(zap.DebugLevel, "http2 protocol error"); ce != nil {
					ce.Write(zap.String("listener", c.Name), zap.String("error", kind))
				}
			},
		}
		if h := c.HTTP2; h != nil {
			opts.MaxConcurrentStreams = h.MaxConcurrentStreams
			opts.StreamWindow = h.InitialStreamWindow
			opts.ConnectionWindow = h.InitialConnectionWindow
			opts.MaxReadFrameSize = h.MaxReadFrameSize
		}
		f.h2 = h2.NewServer(tcpHandler, opts)
	}
	if f.tls != nil {
		if f.h2 != nil {
			srv.NextProto("h2", f.h2.ServeConn)
		}
		f.tls.Watch(ctx, func(err error) {
			log.Warn("reloading TLS certificates failed; the previous ones stay in use",
				zap.String("listener", c.Name), zap.Error(err))
		})
		tl := tlsconf.NewListener(ln, f.tls)
		tl.ReadSlack = readSlack(c)
		ln = tl
	} else if f.h2 != nil {
		ln = h2.NewCleartextListener(ln, f.h2, c.IdleTimeout.Or(60*time.Second))
	}
	if f.udp != nil {
		h := c.HTTP3
		f.h3 = h3.NewServer(handler, f.tls, h3.Options{
			Allow0RTT:            h.Allow0RTT,
			MaxConcurrentStreams: h.MaxConcurrentStreams,
			MaxHeaderBytes:       c.MaxRequestHeaderBytes,
			IdleTimeout:          c.IdleTimeout.Or(DefaultIdleTimeout),
			Logger:               fasthttpLogger{log},
			Flows:                flows,
			Listener:             c.Name,
		})
		go func() {
			if err := f.h3.Serve(f.udp); err != nil {
				log.Error("http3 listener stopped", zap.String("listener", c.Name), zap.Error(err))
			}
		}()
	}
	return ln
}

// shutdown stops HTTP/2 and HTTP/3 gracefully (GOAWAY, then open streams
// finish) and stops the watchers, until ctx is done.
func (f *front) shutdown(ctx context.Context) {
	if f == nil {
		return
	}
	f.cancel()
	done := make(chan struct{}, 2)
	n := 0
	if f.h2 != nil {
		n++
		go func() { _ = f.h2.Shutdown(ctx); done <- struct{}{} }()
	}
	if f.h3 != nil {
		n++
		go func() { _ = f.h3.Shutdown(ctx); done <- struct{}{} }()
	} else if f.udp != nil {
		_ = f.udp.Close()
	}
	for ; n > 0; n-- {
		<-done
	}
}
