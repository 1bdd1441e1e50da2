package proxy

import (
	"bytes"
	"strconv"

	"github.com/valyala/fasthttp"
)

// grpcLocalReply gives the proxy's or a filter's own answer to a gRPC
// request the shape a gRPC client reads, as Envoy does with its local
// replies: HTTP status 200 and a trailers-only response, content-type
// application/grpc, grpc-status (the one the filter gave, else the one
// the HTTP status maps to) and the body as grpc-message. A filter's own
// grpc-status header is kept, and so is an answer that already has that
// shape (one given it before, or a filter's own). Other requests are left
// alone.
//
// Metrics, traces and the access log record the HTTP status the answer
// stands for (503 for no healthy upstream, 403 for a denial), so that a
// failed gRPC call counts as the failure it is.
func (x *exchange) grpcLocalReply() {
	resp := &x.Ctx.Response
	if !isGRPC(x.Ctx.Request.Header.ContentType()) ||
		resp.StatusCode() == fasthttp.StatusOK && isGRPC(resp.Header.ContentType()) {
		return
	}
	x.grpcFrom = resp.StatusCode()
	h := &resp.Header
	if len(h.Peek("grpc-status")) == 0 {
		code, ok := x.LocalGRPCStatus()
		if !ok {
			code = grpcStatusOf(resp.StatusCode())
		}
		var buf [10]byte
		h.SetBytesV("grpc-status", strconv.AppendUint(buf[:0], uint64(code), 10))
	}
	if msg := bytes.TrimSuffix(resp.Body(), []byte("\n")); len(msg) > 0 && !x.Ctx.IsHead() {
		x.scratch = percentEncode(x.scratch[:0], msg)
		h.SetBytesV("grpc-message", x.scratch)
	}
	resp.SetStatusCode(fasthttp.StatusOK)
	h.SetContentType("application/grpc")
	resp.ResetBody()
}

// isGRPC reports whether a content type is gRPC's: application/grpc,
// alone or with a +suffix or parameters (not gRPC-Web).
func isGRPC(ct []byte) bool {
	const grpc = "application/grpc"
	if len(ct) < len(grpc) || !bytes.EqualFold(ct[:len(grpc)], []byte(grpc)) {
		return false
	}
	return len(ct) == len(grpc) || ct[len(grpc)] == '+' || ct[len(grpc)] == ';'
}

// grpcStatusOf maps an HTTP status to a gRPC status, as gRPC's HTTP
// mapping and Envoy do.
func grpcStatusOf(status int) uint32 {
	switch status {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// percentEncode appends msg to dst with the bytes a grpc-message may not
// hold as they are (outside printable ASCII, and '%') percent-encoded.
func percentEncode(dst, msg []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range msg {
		if c < ' ' || c > '~' || c == '%' {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
