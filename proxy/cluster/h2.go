package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/internal/sockio"
)

// h2Client sends requests to one endpoint over HTTP/2: h2 over TLS, or
// h2c with prior knowledge. Streams share its connections, which net/http's
// Transport, limited to HTTP/2, opens as needed.
type h2Client struct {
	tr     *http.Transport
	scheme string
	addr   string
	conns  atomic.Int64
}

func newH2Client(k poolKey, tlsConf *tls.Config) *h2Client {
	c := &h2Client{addr: k.addr, scheme: "http"}
	dialer := &net.Dialer{Timeout: k.connectTimeout}
	var protocols http.Protocols
	c.tr = &http.Transport{
		DisableCompression: true,
		IdleConnTimeout:    k.idleTimeout,
		// Ping a connection that has been silent this long and drop it
		// when the ping is not answered: a dead peer is found before a
		// request waits on it.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second},
		// The endpoint's address, whatever the request's host.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, "tcp", c.addr)
			if err != nil {
				return nil, err
			}
			// The connection's one reader waits for frames most of its
			// life: sockio's reads save it the read that finds nothing
			// before each wait.
			return c.track(sockio.Wrap(raw)), nil
		},
	}
	if tlsConf != nil {
		c.scheme = "https"
		conf := tlsConf.Clone()
		conf.NextProtos = []string{"h2"}
		c.tr.TLSClientConfig = conf
		c.tr.TLSHandshakeTimeout = k.connectTimeout
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	c.tr.Protocols = &protocols
	return c
}

func (c *h2Client) track(conn net.Conn) net.Conn {
	c.conns.Add(1)
	return &h2Conn{Conn: conn, n: &c.conns}
}

// h2Conn counts itself out of its client's connections once closed.
type h2Conn struct {
	net.Conn
	n    *atomic.Int64
	once sync.Once
}

func (c *h2Conn) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.Conn.Close()
}

// do sends req and reads the response headers into resp. A body is left
// streaming in s, and the response's trailers are added to resp.Header as
// trailers when it ends; closing s ends the exchange, resetting the stream
// if it is still open. timeout bounds the exchange up to the response
// headers: a gRPC stream lives as long as its peers keep it.
func (c *h2Client) do(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) error {
	ctx, cancel := context.WithCancel(context.Background())
	x := &h2Exchange{cancel: cancel}
	hr := c.newRequest(req)
	n := req.Header.ContentLength()
	switch {
	case req.IsBodyStream():
		x.body.src = req.BodyStream()
		hr.Body = &x.body
		hr.ContentLength = int64(n)
		if n < 0 {
			hr.ContentLength = -1
		}
	case len(req.Body()) > 0:
		x.body.src = bytes.NewReader(req.Body())
		hr.Body = &x.body
		hr.ContentLength = int64(len(req.Body()))
	}
	hr = hr.WithContext(ctx)

	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		cancel()
	})
	res, err := c.tr.RoundTrip(hr)
	timer.Stop()
	if err != nil {
		x.finish()
		if timedOut.Load() {
			return fasthttp.ErrTimeout
		}
		return err
	}
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(res.StatusCode)
	for k, vs := range res.Header {
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	if res.Body == http.NoBody {
		x.finish()
		resp.Header.SetContentLength(0)
		return nil
	}
	x.res, x.resp = res, resp
	resp.SetBodyStream(x, int(res.ContentLength))
	*s = Body{resp: resp, active: true}
	return nil
}

// newRequest converts req's request line and headers for the transport.
func (c *h2Client) newRequest(req *fasthttp.Request) *http.Request {
	hr := &http.Request{
		Method:     string(req.Header.Method()),
		URL:        &url.URL{Scheme: c.scheme, Host: c.addr, Opaque: string(req.RequestURI())},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     make(http.Header, 8),
		Host:       string(req.Header.Host()),
	}
	grpc := false
	for k, v := range req.Header.All() {
		switch {
		case hopByHop(k):
			continue
		case len(k) == 12 && bytes.EqualFold(k, []byte("content-type")):
			grpc = bytes.HasPrefix(v, []byte("application/grpc"))
		}
		name := string(k)
		hr.Header[name] = append(hr.Header[name], string(v))
	}
	if grpc {
		// gRPC needs trailers, and says so.
		hr.Header["Te"] = []string{"trailers"}
	}
	return hr
}

// stream opens an exchange whose request body is read from body as the
// transport sends it, for gRPC calls that filters make
// (filter.StreamCluster).
func (c *h2Client) stream(ctx context.Context, req *fasthttp.Request, body io.Reader, resp *fasthttp.Response) (io.ReadCloser, error) {
	hr := c.newRequest(req)
	rc, ok := body.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(body)
	}
	hr.Body, hr.ContentLength = rc, -1
	if br, ok := body.(*bytes.Reader); ok {
		hr.ContentLength = int64(br.Len())
	}
	res, err := c.tr.RoundTrip(hr.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(res.StatusCode)
	for k, vs := range res.Header {
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	if res.Body == http.NoBody {
		return http.NoBody, nil
	}
	s := &h2Stream{res: res, resp: resp}
	// The transport watches ctx only until the response headers, and
	// again once it has sent the whole body: in between, closing the
	// response body is what resets the stream.
	s.stop = context.AfterFunc(ctx, func() { _ = res.Body.Close() })
	return s, nil
}

// h2Stream is the response body of a stream opened for a filter.
type h2Stream struct {
	res  *http.Response
	resp *fasthttp.Response
	stop func() bool
}

// Read reads the body; at its end the response's trailers are added to
// resp.Header as trailers.
func (s *h2Stream) Read(p []byte) (int, error) {
	n, err := s.res.Body.Read(p)
	if err == io.EOF {
		addTrailers(s.resp, s.res.Trailer)
	}
	return n, err
}

// Close ends the exchange: a stream still open is reset.
func (s *h2Stream) Close() error {
	s.stop()
	return s.res.Body.Close()
}

func addTrailers(resp *fasthttp.Response, tr http.Header) {
	for k, vs := range tr {
		if resp.Header.AddTrailer(k) != nil {
			continue
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
}

// call sends a request made by a filter and reads the whole response.
func (c *h2Client) call(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	var s Body
	if err := c.do(req, resp, timeout, &s); err != nil {
		return err
	}
	if !s.Active() {
		return nil
	}
	body, err := io.ReadAll(&s)
	_ = s.Close()
	if err != nil {
		return err
	}
	resp.SetBody(body)
	return nil
}

// hopByHop reports whether a request header describes the downstream
// connection (or is carried otherwise in HTTP/2) and is not forwarded.
func hopByHop(k []byte) bool {
	switch len(k) {
	case 2:
		return bytes.EqualFold(k, []byte("te"))
	case 4:
		return bytes.EqualFold(k, []byte("host"))
	case 7:
		return bytes.EqualFold(k, []byte("upgrade"))
	case 10:
		return bytes.EqualFold(k, []byte("connection")) || bytes.EqualFold(k, []byte("keep-alive"))
	case 14:
		return bytes.EqualFold(k, []byte("content-length"))
	case 16:
		return bytes.EqualFold(k, []byte("proxy-connection"))
	case 17:
		return bytes.EqualFold(k, []byte("transfer-encoding"))
	}
	return false
}

// h2Exchange is one request in flight on an HTTP/2 endpoint; it is the
// response's body stream.
type h2Exchange struct {
	cancel context.CancelFunc
	body   h2RequestBody
	res    *http.Response
	resp   *fasthttp.Response
	done   atomic.Bool
}

// Read reads the response body; at its end the response's trailers are
// added to resp.Header as trailers.
func (x *h2Exchange) Read(p []byte) (int, error) {
	n, err := x.res.Body.Read(p)
	if err == io.EOF {
		addTrailers(x.resp, x.res.Trailer)
	}
	return n, err
}

// Close ends the exchange: a stream still open is reset.
func (x *h2Exchange) Close() error {
	_ = x.res.Body.Close()
	x.finish()
	return nil
}

func (x *h2Exchange) finish() {
	if x.done.Swap(true) {
		return
	}
	x.cancel()
	x.body.detach()
}

// h2RequestBody hands the request body to the transport, which reads it
// on a goroutine of its own and may still be reading when the response has
// ended. detach makes sure it reads no more once the exchange is over:
// the body belongs to the downstream request, which is reused after.
type h2RequestBody struct {
	mu       sync.Mutex
	src      io.Reader
	detached bool
}

var errDetached = errors.New("the exchange has ended")

func (b *h2RequestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errDetached
	}
	return b.src.Read(p)
}

// Close is the transport's: it is done with the body. The body itself is
// the downstream request's to close.
func (b *h2RequestBody) Close() error { return nil }

// bodyAborter is a request body that can end a read waiting for its
// client: an HTTP/2 or HTTP/3 stream's, which a client may keep open.
type bodyAborter interface{ AbortBody() }

// detach stops reads of the source. A read in progress is ended when the
// source can be aborted, and waited for otherwise (an HTTP/1.1 client
// sends its whole body before it reads the response).
func (b *h2RequestBody) detach() {
	if b.src == nil {
		return
	}
	if a, ok := b.src.(bodyAborter); ok {
		a.AbortBody()
	}
	b.mu.Lock()
	b.detached = true
	b.mu.Unlock()
}
