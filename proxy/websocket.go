package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/route"
)

// WebSocketIdleTimeout closes a relayed WebSocket connection on which
// neither side has sent anything for this long.
var WebSocketIdleTimeout = 10 * time.Minute

// maxUpgradeHead bounds the upstream's answer to an upgrade request.
const maxUpgradeHead = 16 << 10

// isWebSocketUpgrade reports whether req asks to become a WebSocket. It
// must be asked before the hop-by-hop headers are removed.
func isWebSocketUpgrade(req *fasthttp.Request) bool {
	h := &req.Header
	if !h.IsHTTP11() || !h.IsGet() {
		return false
	}
	return bytes.EqualFold(h.Peek("Upgrade"), []byte("websocket")) && tokenListHas(h.Peek("Connection"), "upgrade")
}

// tokenListHas reports whether a comma-separated header value holds token,
// ignoring case.
func tokenListHas(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), []byte(token)) {
			return true
		}
	}
	return false
}

// websocket passes an upgrade request to an endpoint of the route's
// cluster on a connection of its own. When the endpoint agrees (101), the
// downstream connection is taken over and bytes are copied both ways
// until either side closes or both are idle for WebSocketIdleTimeout; the
// relay lives on its own, through reloads, once the request has been
// logged. Any other answer goes back as an ordinary response.
func (x *exchange) websocket(rt *route.Route) {
	ctx := x.Ctx
	req := &ctx.Request
	t := rt.PickTarget()
	x.stats = t.Stats
	x.Cluster = t.Cluster.Name
	ep := t.Cluster.Pick(ctx)
	if ep == nil {
		x.localError(fasthttp.StatusServiceUnavailable, filter.FlagNoHealthyUpstream, "no_healthy_upstream")
		return
	}
	x.UpstreamAddr = ep.Addr
	x.scratch = rt.RewriteRequest(req, x.scratch)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")

	deadline := time.Now().Add(rt.Timeout)
	dctx, cancel := context.WithDeadline(context.Background(), deadline)
	up, err := ep.Dial(dctx)
	cancel()
	if err != nil {
		x.upstreamError(err)
		return
	}
	_ = up.SetDeadline(deadline)
	// Only the head goes: an upgrade request has no body, and the bytes
	// after its head belong to the relay.
	req.Header.SetRequestURIBytes(req.URI().RequestURI())
	bw := bufio.NewWriterSize(up, 4<<10)
	if err := req.Header.Write(bw); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = up.Close()
		x.upstreamError(err)
		return
	}
	br := bufio.NewReaderSize(up, maxUpgradeHead)
	head, err := peekHead(br)
	if err != nil {
		_ = up.Close()
		x.upstreamError(err)
		return
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) && !bytes.HasPrefix(head, []byte("HTTP/1.1 101\r")) {
		// Refused: the answer goes back as it is, body and all.
		resp := &ctx.Response
		resp.Header.SetNoDefaultContentType(true)
		err := resp.ReadLimitBody(br, 1<<20)
		_ = up.Close()
		if err != nil {
			x.upstreamError(err)
			return
		}
		resp.Header.ResetConnectionClose()
		return
	}
	_ = up.SetDeadline(time.Time{})
	ctx.Response.SetStatusCode(fasthttp.StatusSwitchingProtocols)
	ctx.HijackSetNoResponse(true)
	idle := WebSocketIdleTimeout
	ctx.Hijack(func(down net.Conn) {
		// The head is still in br's buffer: send it, then relay.
		if _, err := down.Write(head); err != nil {
			_ = up.Close()
			return
		}
		_, _ = br.Discard(len(head))
		relay(down, up, br, idle)
	})
}

var errUpgradeHead = errors.New("upstream answer to an upgrade is too large")

// peekHead returns the status line and headers at the front of br without
// consuming them.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		// Look at what has arrived before asking for more: the upstream
		// may send the whole head and then wait for the client.
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+4], nil
		}
		if len(b) >= br.Size() {
			return nil, errUpgradeHead
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if b, _ := br.Peek(br.Buffered()); bytes.Contains(b, []byte("\r\n\r\n")) {
				continue
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errUpgradeHead
			}
			return nil, err
		}
	}
}

// relay copies bytes both ways until one side ends, then closes both. A
// side that has nothing to say is not idle while the other talks.
func relay(down, up net.Conn, upR io.Reader, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = down.Close()
			_ = up.Close()
		})
	}
	pipe := func(dst io.Writer, src net.Conn, r io.Reader) {
		defer closeBoth()
		buf := make([]byte, 16<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			n, err := r.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				return
			}
		}
	}
	done := make(chan struct{})
	go func() {
		pipe(down, up, upR)
		close(done)
	}()
	pipe(up, down, down)
	<-done
}
