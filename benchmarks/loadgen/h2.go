package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// h2Group is one HTTP/2 connection (per endpoint) shared by the streams of
// one Config.Connections slot. Its transport is safe for concurrent use.
type h2Group struct {
	r  *runner
	st *stats // counts the group's bytes on the wire
	tr *http.Transport
}

func newH2Group(r *runner, st *stats) *h2Group {
	g := &h2Group{r: r, st: st}
	// HTTP/2 only: by ALPN for https:// targets, with prior knowledge (h2c)
	// for http:// ones. HTTP/1.1 is left out so that a target that does not
	// speak HTTP/2 fails rather than being measured over HTTP/1.1.
	var protos http.Protocols
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	// Both dialers go through dialTCP, which counts the bytes and does the
	// TLS handshake with the endpoint's own configuration. The transport
	// would fall back to HTTP/1.1 on a TLS connection without ALPN h2, so
	// the dialer refuses one.
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		ep := r.endpointByAddr(addr)
		if ep == nil {
			return nil, fmt.Errorf("dialing %s: not a target of this run", addr)
		}
		conn, err := r.dialTCP(ctx, ep, g.st, time.Now().Add(r.cfg.timeout()))
		if err != nil {
			return nil, err
		}
		if tc, ok := conn.(*tls.Conn); ok {
			if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
				_ = conn.Close()
				return nil, fmt.Errorf("%s negotiated ALPN protocol %q, not h2", addr, p)
			}
		}
		return conn, nil
	}
	g.tr = &http.Transport{
		Protocols:          &protos,
		DisableCompression: true,
		DialContext:        dial,
		DialTLSContext:     dial,
	}
	return g
}

func (g *h2Group) close() { g.tr.CloseIdleConnections() }

// h2Client is one stream of an h2Group, driven by one worker.
type h2Client struct {
	g    *h2Group
	body []byte
}

var _ requester = (*h2Client)(nil)

func newH2Client(r *runner, _ *stats, g *h2Group) *h2Client {
	return &h2Client{g: g, body: r.cfg.Body}
}

// connect dials every endpoint once, with the handshake, and hangs up: the
// transport dials its own connection on the first request. On plain-text
// endpoints it checks that the server speaks h2c.
func (c *h2Client) connect(ctx context.Context) error {
	r := c.g.r
	for _, ep := range r.endpoints {
		deadline := time.Now().Add(r.cfg.timeout())
		conn, err := r.dialTCP(ctx, ep, c.g.st, deadline)
		if err != nil {
			return err
		}
		if ep.tls == nil {
			err = checkH2C(conn, ep.addr, deadline)
		}
		_ = conn.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// NoH2CError says that a plain-text endpoint does not speak HTTP/2 with
// prior knowledge (h2c).
type NoH2CError struct {
	Addr string
	// Answer is how the server answered the HTTP/2 preface.
	Answer string
}

func (e *NoH2CError) Error() string {
	return fmt.Sprintf("%s does not speak h2c (HTTP/2 without TLS): %s. Use -p h1; or an https:// URL for HTTP/2 by ALPN; "+
		"or enable h2c on the listener (in wasmgate: http2: {h2c: true})", e.Addr, e.Answer)
}

// checkH2C sends the HTTP/2 client preface and an empty SETTINGS frame on
// conn, and expects the server's SETTINGS frame first, as RFC 9113 has it.
func checkH2C(conn net.Conn, addr string, deadline time.Time) error {
	_ = conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{}) //nolint:errcheck
	if _, err := io.WriteString(conn, http2.ClientPreface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		return fmt.Errorf("sending the HTTP/2 preface to %s: %w", addr, err)
	}
	var head [9]byte
	n, err := io.ReadFull(conn, head[:])
	switch {
	case n >= 5 && string(head[:5]) == "HTTP/":
		return &NoH2CError{Addr: addr, Answer: "it answered the HTTP/2 preface in HTTP/1.1"}
	case err != nil && n == 0 && !isTimeout(err):
		return &NoH2CError{Addr: addr, Answer: "it closed the connection on the HTTP/2 preface"}
	case err != nil:
		return fmt.Errorf("reading the HTTP/2 settings of %s: %w", addr, err)
	case http2.FrameType(head[3]) != http2.FrameSettings:
		return &NoH2CError{Addr: addr, Answer: fmt.Sprintf("its first frame is not SETTINGS (%q)", head[:n])}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *h2Client) do(ctx context.Context, t *target, deadline time.Time) (int, error) {
	return roundTrip(ctx, c.g.tr, t, c.body, deadline, c.g.r.cfg.NewConnPerRequest)
}

func (c *h2Client) interrupt() {}
func (c *h2Client) close()     {}

// idleCloser is a round tripper whose idle connections can be closed.
type idleCloser interface {
	http.RoundTripper
	CloseIdleConnections()
}

// roundTrip sends one request of t's template through rt, reads the whole
// body and returns the status.
func roundTrip(ctx context.Context, rt idleCloser, t *target, body []byte, deadline time.Time, newConn bool) (int, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req := t.req.WithContext(ctx)
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", req.Method, t.url.Host, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if newConn {
		rt.CloseIdleConnections()
	}
	if err != nil {
		return 0, fmt.Errorf("reading response body: %w", err)
	}
	return resp.StatusCode, nil
}

func (r *runner) endpointByAddr(addr string) *endpoint {
	for _, ep := range r.endpoints {
		if ep.addr == addr {
			return ep
		}
	}
	return nil
}
