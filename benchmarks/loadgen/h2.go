package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
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
	tr *http2.Transport
}

func newH2Group(r *runner, st *stats) *h2Group {
	g := &h2Group{r: r, st: st}
	g.tr = &http2.Transport{
		AllowHTTP:          true, // h2c with prior knowledge for http:// targets
		DisableCompression: true,
		DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
			ep := r.endpointByAddr(addr)
			if ep == nil {
				return nil, fmt.Errorf("dialing %s: not a target of this run", addr)
			}
			return r.dialTCP(ctx, ep, g.st, time.Now().Add(r.cfg.timeout()))
		},
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
// transport dials its own connection on the first request.
func (c *h2Client) connect(ctx context.Context) error {
	r := c.g.r
	for _, ep := range r.endpoints {
		conn, err := r.dialTCP(ctx, ep, c.g.st, time.Now().Add(r.cfg.timeout()))
		if err != nil {
			return err
		}
		_ = conn.Close()
	}
	return nil
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
