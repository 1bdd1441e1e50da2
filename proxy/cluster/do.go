package cluster

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// SmallBody is the largest response body with a known length that Do reads
// whole; larger, chunked and read-to-close bodies stream.
const SmallBody = 64 << 10

// Body is an upstream response body being streamed, and the pooled
// connection it is read from. The caller owns a Body (it is meant to be
// embedded in per-request state and reused) and must Close it once Active.
type Body struct {
	resp *fasthttp.Response
	hc   *fasthttp.HostClient
	// conn is fasthttp's pooled connection, of a type it does not export.
	conn   any
	br     *bufio.Reader
	eof    bool
	active bool
}

// Active reports whether a body is being streamed.
func (s *Body) Active() bool { return s.active }

// Read reads the body.
func (s *Body) Read(p []byte) (int, error) {
	n, err := s.resp.BodyStream().Read(p)
	if err == io.EOF {
		s.eof = true
	}
	return n, err
}

// Close ends the body. The connection goes back to the pool when the body
// was read to its end and the upstream keeps the connection open;
// otherwise it is closed. It reports an error when the body did not end.
func (s *Body) Close() error {
	if !s.active {
		return nil
	}
	s.active = false
	_ = s.resp.CloseBodyStream()
	if s.hc != nil { // nil for an HTTP/2 stream, which owns no connection
		s.hc.ReleaseReader(s.br)
		reuse := s.eof && !s.resp.ConnectionClose()
		release(s.hc, s.conn, reuse)
	}
	s.resp, s.hc, s.conn, s.br = nil, nil, nil, nil
	if !s.eof {
		return errTruncated
	}
	return nil
}

var errTruncated = errors.New("upstream body did not end")

// Do sends req to the endpoint and reads the response into resp: the whole
// of a small body, or, into s, a stream of a larger one. timeout bounds the
// whole exchange, body included, as Envoy's route timeout does.
//
// A request that fails on a reused connection before any response byte,
// when its body is not a stream, is sent once more on a new connection:
// the upstream closed an idle connection as the request went out.
//
// The outcome feeds the cluster's outlier detection, and with circuit
// breakers a request waiting for a connection counts as pending.
func (e *Endpoint) Do(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) error {
	return e.do(e.pool, req, resp, timeout, s)
}

// DoMultiplexed is Do for a request that came in on HTTP/2 or HTTP/3: a
// cluster whose protocol is downstream sends it over HTTP/2 (what gRPC
// needs, trailers and all), where Do would use HTTP/1.1.
func (e *Endpoint) DoMultiplexed(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) error {
	return e.do(e.multiplexed(), req, resp, timeout, s)
}

func (e *Endpoint) do(p *pool, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration, s *Body) (err error) {
	defer func() { e.Observe(resp.StatusCode(), err) }()
	p.active.Add(1)
	p.requests.Add(1)
	defer p.active.Add(-1)
	if p.h2 != nil {
		return p.h2.do(req, resp, timeout, s)
	}
	deadline := time.Now().Add(timeout)
	// Writing a streamed body consumes and closes the stream, so ask
	// before the first attempt whether the request could be sent again.
	streamed := req.IsBodyStream()
	for attempt := 0; ; attempt++ {
		left := timeout
		if attempt > 0 {
			left = time.Until(deadline)
		}
		retry, err := roundTrip(p.client, req, resp, deadline, left, s, e.breakers)
		if err == nil || !retry || attempt > 0 || streamed {
			return err
		}
	}
}

// roundTrip makes one attempt, which must end by deadline, timeout from
// now. retry reports whether the attempt failed on a reused connection
// before the response began.
func roundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time, timeout time.Duration, s *Body, cs *clusterState) (retry bool, err error) {
	if timeout <= 0 {
		return false, fasthttp.ErrTimeout
	}
	if cs != nil {
		if err := cs.acquirePending(); err != nil {
			return false, err
		}
	}
	cc, err := hc.AcquireConn(timeout, false)
	if cs != nil {
		cs.pending.Add(-1)
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	reused := !cc.LastUseTime().IsZero()
	if err := setDeadline(conn, deadline, timeout); err != nil {
		hc.CloseConn(cc)
		return reused, err
	}
	x, hold := conn.(writeHolder)
	hold = hold && !req.IsBodyStream()
	if hold {
		x.holdWrites()
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if hold {
		x.awaitResponse()
	}
	if err != nil {
		hc.CloseConn(cc)
		return reused, timeoutErr(err)
	}

	resp.Reset()
	resp.Header.SetNoDefaultContentType(true) // pass on only what the upstream sent
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	br := hc.AcquireReader(conn)
	if err := resp.Header.Read(br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return reused && isClosedEarly(err), timeoutErr(err)
	}
	n := resp.Header.ContentLength()
	switch {
	case resp.SkipBody || noBody(resp.StatusCode()):
	case n >= 0 && n <= SmallBody:
		if err := resp.ReadBody(br, 0); err != nil {
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return false, timeoutErr(err)
		}
	default:
		resp.StreamBody = true
		if err := resp.ReadBody(br, 0); err != nil {
			hc.ReleaseReader(br)
			hc.CloseConn(cc)
			return false, timeoutErr(err)
		}
		*s = Body{resp: resp, hc: hc, conn: cc, br: br, active: true}
		return false, nil
	}
	hc.ReleaseReader(br)
	if resp.ConnectionClose() {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// release returns a connection held as any to the pool, or closes it.
func release(hc *fasthttp.HostClient, cc any, reuse bool) {
	if reuse {
		withConn((*fasthttp.HostClient).ReleaseConn, hc, cc)
	} else {
		withConn((*fasthttp.HostClient).CloseConn, hc, cc)
	}
}

// withConn calls a HostClient method on a connection held as any; C is
// inferred from the method expression, so the assertion names fasthttp's
// connection type without this package having to.
func withConn[C any](f func(*fasthttp.HostClient, C), hc *fasthttp.HostClient, cc any) {
	f(hc, cc.(C))
}

func noBody(status int) bool {
	return status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified
}

func isClosedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, net.ErrClosed) || isReset(err)
}

func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}
