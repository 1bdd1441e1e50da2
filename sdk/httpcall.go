package sdk

import (
	"errors"
	"strconv"
	"time"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// HTTPRequest is a request a plugin sends with HTTPCall.
type HTTPRequest struct {
	// Method defaults to GET.
	Method string
	// Path is the request target, with its query; it defaults to "/".
	Path string
	// Authority is the Host; it defaults to the cluster's name.
	Authority string
	Header    Fields
	Body      []byte
	Trailer   Fields
}

// HTTPResponse is the answer to an HTTPCall.
type HTTPResponse struct {
	Status  int
	Header  Fields
	Body    []byte
	Trailer Fields
}

// ErrCallFailed is the error an HTTPCall's callback gets when no response
// came back (the cluster was unreachable, the call timed out). The error
// wraps it with the host's reason when there is one.
var ErrCallFailed = errors.New("http call failed")

type pendingCall struct {
	stream *Request
	done   func(*HTTPResponse, error)
}

// HTTPCall sends req to an endpoint of cluster and calls done with the
// answer. It returns at once; done runs later, in a callback of its own.
// The plugin's configuration must allow the cluster (allowed_clusters).
//
// Called from a request's callback, done acts on that request: it may
// read and change its headers, Respond or Resume. The usual shape is to
// return Pause after HTTPCall and to Resume or Respond from done. If the
// request ends first, done is not called. For a call that must outlive the
// request (exporting telemetry from OnLog, say), make it inside
// InRootContext.
//
// timeout 0 is the host's default.
func HTTPCall(cluster string, req *HTTPRequest, timeout time.Duration, done func(*HTTPResponse, error)) error {
	if curRoot == nil {
		return errNoRoot
	}
	method, path, authority := req.Method, req.Path, req.Authority
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/"
	}
	if authority == "" {
		authority = cluster
	}
	h := make(Fields, 0, len(req.Header)+3)
	h = append(h, Field{":method", method}, Field{":path", path}, Field{":authority", authority})
	for _, f := range req.Header {
		if len(f[0]) > 0 && f[0][0] != ':' {
			h = append(h, f)
		}
	}
	id, st := hostHTTPCall(cluster, encodeFields(h), req.Body, encodeFields(req.Trailer), uint32(timeout.Milliseconds()))
	if err := check("proxy_http_call", st); err != nil {
		return err
	}
	calls[id] = &pendingCall{stream: curStream, done: done}
	return nil
}

func onHTTPCallResponse(root, id, nHeaders, bodySize, nTrailers uint32) {
	c := calls[id]
	if c == nil {
		return
	}
	delete(calls, id)
	if c.stream != nil {
		if streams.get(c.stream.id) != c.stream {
			return
		}
		if hostSetEffectiveContext(c.stream.id) != abi.StatusOK {
			return
		}
		enterStream(c.stream)
	} else if r := rootOf(root); r != nil {
		enterRoot(r)
	}
	defer leave()
	if nHeaders == 0 {
		err := ErrCallFailed
		if _, msg, st := hostGetStatus(); st == abi.StatusOK && msg != "" {
			err = errors.Join(ErrCallFailed, errors.New(msg))
		}
		c.done(nil, err)
		return
	}
	resp := &HTTPResponse{}
	b, st := hostGetMapPairs(abi.MapHTTPCallResponseHeaders)
	if st == abi.StatusOK {
		resp.Header, _ = decodeFields(b)
	}
	resp.Status, _ = strconv.Atoi(resp.Header.Get(":status"))
	if bodySize > 0 {
		resp.Body, _ = readBuffer(abi.BufferHTTPCallResponseBody, bodySize)
	}
	if nTrailers > 0 {
		if b, st := hostGetMapPairs(abi.MapHTTPCallResponseTrailers); st == abi.StatusOK {
			resp.Trailer, _ = decodeFields(b)
		}
	}
	c.done(resp, nil)
}
