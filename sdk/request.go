package sdk

import (
	"strconv"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Request is one HTTP request as a filter sees it: a view of what the
// host holds. Its methods call the host, so what they return is always
// current, including changes made by other filters. A Request is valid
// until the filter's OnLog returns; the SDK reuses it after.
type Request struct {
	id          uint32
	root        *rootContext
	data        any
	bodySize    uint32
	endOfStream bool
	resp        Response
	// isConn: the context is a connection's (a network filter's), not
	// a request's; conn is its view.
	isConn bool
	conn   Conn
}

// Response is the response to a Request, as a filter sees it.
type Response struct {
	r *Request
}

// ID returns the host's id of the request's context.
func (r *Request) ID() uint32 { return r.id }

// Data returns what SetData stored, or nil.
func (r *Request) Data() any { return r.data }

// SetData keeps per-request state for the filter's later callbacks.
func (r *Request) SetData(v any) { r.data = v }

// Header returns the request headers, pseudo-headers included. The
// request line is in ":method", ":path", ":authority" and ":scheme";
// setting ":path" or ":authority" rewrites what goes upstream.
func (r *Request) Header() Header { return Header{abi.MapHTTPRequestHeaders} }

// Trailer returns the request trailers (from OnRequestTrailers on).
func (r *Request) Trailer() Header { return Header{abi.MapHTTPRequestTrailers} }

// Method returns the request method.
func (r *Request) Method() string { return r.Header().Get(":method") }

// Path returns the request target: the path and the query.
func (r *Request) Path() string { return r.Header().Get(":path") }

// Authority returns the host the request is for.
func (r *Request) Authority() string { return r.Header().Get(":authority") }

// Scheme returns "http" or "https".
func (r *Request) Scheme() string { return r.Header().Get(":scheme") }

// EndOfStream reports whether the current callback saw the end of the
// request: true in OnRequestHeaders for a request without a body.
func (r *Request) EndOfStream() bool { return r.endOfStream }

// Body returns the body data of the current OnRequestBody callback.
func (r *Request) Body() ([]byte, error) { return body(abi.BufferHTTPRequestBody, r.bodySize) }

// SetBody replaces the body data of the current OnRequestBody callback.
// The host fixes Content-Length once the whole body has been seen.
func (r *Request) SetBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPRequestBody, 0, maxSize, b))
}

// AppendBody adds b after the body data of the current callback.
func (r *Request) AppendBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPRequestBody, maxSize, 0, b))
}

// PrependBody adds b before the body data of the current callback.
func (r *Request) PrependBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPRequestBody, 0, 0, b))
}

// Response returns the response to the request.
func (r *Request) Response() *Response { return &r.resp }

// Respond answers the request with a response made by the filter; the
// request does not go upstream. headers may be nil. It returns Pause so
// that a callback can end with `return r.Respond(...)`.
func (r *Request) Respond(status int, body []byte, headers Fields) Action {
	return respond(status, body, headers, "")
}

// RespondDetails is Respond with the reason the host records for the
// access log and its metrics (e.g. "authz_denied").
func (r *Request) RespondDetails(status int, body []byte, headers Fields, details string) Action {
	return respond(status, body, headers, details)
}

// Resume lets a request paused by the filter go on. It acts on the
// request of the callback it is called in, HTTP call callbacks included.
func (r *Request) Resume() error {
	return check("proxy_continue_stream", hostContinueStream(abi.StreamHTTPRequest))
}

// Close ends the request without an answer, as Envoy resets a stream:
// over HTTP/1.1 the connection closes, over HTTP/2 and HTTP/3 the stream
// is reset. The access log records 503 (details wasm_close_stream).
func (r *Request) Close() error {
	return check("proxy_close_stream", hostCloseStream(abi.StreamHTTPRequest))
}

// Request returns the request the response answers.
func (w *Response) Request() *Request { return w.r }

// Header returns the response headers; ":status" holds the status.
func (w *Response) Header() Header { return Header{abi.MapHTTPResponseHeaders} }

// Trailer returns the response trailers.
func (w *Response) Trailer() Header { return Header{abi.MapHTTPResponseTrailers} }

// Status returns the response status, or 0 when the host has none yet.
func (w *Response) Status() int {
	n, _ := strconv.Atoi(w.Header().Get(":status"))
	return n
}

// EndOfStream reports whether the current callback saw the end of the
// response.
func (w *Response) EndOfStream() bool { return w.r.endOfStream }

// Body returns the body data of the current OnResponseBody callback.
func (w *Response) Body() ([]byte, error) { return body(abi.BufferHTTPResponseBody, w.r.bodySize) }

// SetBody replaces the body data of the current OnResponseBody callback.
func (w *Response) SetBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPResponseBody, 0, maxSize, b))
}

// AppendBody adds b after the body data of the current callback.
func (w *Response) AppendBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPResponseBody, maxSize, 0, b))
}

// PrependBody adds b before the body data of the current callback.
func (w *Response) PrependBody(b []byte) error {
	return check("proxy_set_buffer_bytes", hostSetBuffer(abi.BufferHTTPResponseBody, 0, 0, b))
}

// Respond replaces the upstream's response with one made by the filter.
func (w *Response) Respond(status int, body []byte, headers Fields) Action {
	return respond(status, body, headers, "")
}

// Resume lets a response paused by the filter go on.
func (w *Response) Resume() error {
	return check("proxy_continue_stream", hostContinueStream(abi.StreamHTTPResponse))
}

// maxSize is the ABI's "to the end" for buffer offsets and sizes.
const maxSize = 1<<31 - 1

func body(t abi.BufferType, size uint32) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	b, st := hostGetBuffer(t, 0, size)
	if st == abi.StatusNotFound {
		return nil, nil
	}
	return b, check("proxy_get_buffer_bytes", st)
}

func respond(status int, body []byte, headers Fields, details string) Action {
	st := hostSendLocalResponse(uint32(status), details, body, encodeFields(headers), abi.NoGRPCStatus)
	if st != abi.StatusOK {
		logf(abi.LogLevelError, "sending a local response with status %d: %v", status, check("proxy_send_local_response", st))
	}
	return Pause
}

// Header is a live view of one of the host's header maps: the request's
// or the response's headers or trailers. Names are case-insensitive.
type Header struct {
	m abi.MapType
}

// Get returns the value of name, or "" when there is none. The host joins
// repeated fields as it chooses; use All to see each one.
func (h Header) Get(name string) string {
	v, _ := hostGetMapValue(h.m, name)
	return v
}

// Lookup returns the value of name and whether the field is present.
func (h Header) Lookup(name string) (string, bool) {
	v, st := hostGetMapValue(h.m, name)
	return v, st == abi.StatusOK
}

// Set replaces every value of name with value.
func (h Header) Set(name, value string) error {
	return check("proxy_replace_header_map_value", hostReplaceMapValue(h.m, name, value))
}

// Add adds a field, keeping the ones of the same name.
func (h Header) Add(name, value string) error {
	return check("proxy_add_header_map_value", hostAddMapValue(h.m, name, value))
}

// Del removes every field named name.
func (h Header) Del(name string) error {
	return check("proxy_remove_header_map_value", hostRemoveMapValue(h.m, name))
}

// All returns a copy of every field, in order.
func (h Header) All() (Fields, error) {
	b, st := hostGetMapPairs(h.m)
	if err := check("proxy_get_header_map_pairs", st); err != nil {
		return nil, err
	}
	return decodeFields(b)
}

// Replace replaces the whole map with f.
func (h Header) Replace(f Fields) error {
	return check("proxy_set_header_map_pairs", hostSetMapPairs(h.m, encodeFields(f)))
}
