package listener

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/internal/deadline"
)

// DefaultIdleTimeout closes a keep-alive connection that has waited this
// long for its next request, when the listener sets no idle_timeout.
const DefaultIdleTimeout = 60 * time.Second

// DefaultHeaderReadTimeout bounds reading a request's line and headers
// when the listener sets no header_read_timeout, as nginx's
// client_header_timeout does: a slowloris client is cut off by default. It
// also bounds the TLS handshake.
const DefaultHeaderReadTimeout = 60 * time.Second

// DefaultBodyReadTimeout bounds reading a request's body, from the end of
// its header, when the listener sets no body_read_timeout: a client that
// trickles a body is cut off (408) as one that trickles a header is. It
// bounds the bytes fasthttp reads before the handler runs (up to 8 KiB of
// a body with a Content-Length) as well as the rest.
const DefaultBodyReadTimeout = 60 * time.Second

// headerReceived sets the deadline of a request's body once its headers
// are in: body_read_timeout, or DefaultBodyReadTimeout (the header read
// timeout would otherwise go on bounding the body). A request without a
// body leaves the header's deadline in force: nothing more is read until
// the next request's idle wait sets its own, and a hijacked connection
// (WebSocket) sets its own before each read.
func headerReceived(c config.Listener) func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	body := c.BodyReadTimeout.Or(DefaultBodyReadTimeout)
	return func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		// -2: neither Content-Length nor chunked, which fasthttp reads
		// as no body on a request.
		if cl := h.ContentLength(); cl == 0 || cl == -2 {
			return fasthttp.RequestConfig{}
		}
		return fasthttp.RequestConfig{ReadTimeout: body}
	}
}

// readSlack is how late a listener's read deadlines (idle, header, body)
// may pass: deadline.SlackFor the shortest of them.
func readSlack(c config.Listener) time.Duration {
	shortest := c.IdleTimeout.Or(DefaultIdleTimeout)
	shortest = min(shortest, c.HeaderReadTimeout.Or(DefaultHeaderReadTimeout))
	shortest = min(shortest, c.BodyReadTimeout.Or(DefaultBodyReadTimeout))
	return deadline.SlackFor(shortest)
}
