package sdk

import (
	"strconv"
	"time"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// GRPCRequest names a gRPC method and the metadata sent with it.
type GRPCRequest struct {
	// Service is the service's full name, e.g. "grpc.health.v1.Health".
	Service string
	// Method is the method's name, e.g. "Check".
	Method string
	// Metadata is sent as the request's initial metadata.
	Metadata Fields
}

// GRPCStatusError is how a gRPC call or stream ended when its status was
// not OK: the status code (4 for a deadline exceeded, 12 for an
// unimplemented method, 14 for an unreachable upstream, ...) and message.
type GRPCStatusError struct {
	Code    uint32
	Message string
}

func (e *GRPCStatusError) Error() string {
	s := "grpc status " + strconv.FormatUint(uint64(e.Code), 10)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// GRPCStreamHandler receives the events of a GRPCStream. A nil function
// ignores its event.
type GRPCStreamHandler struct {
	// InitialMetadata receives the response's headers.
	InitialMetadata func(md Fields)
	// Message receives each message, in order.
	Message func(msg []byte)
	// TrailingMetadata receives the trailers, before Close.
	TrailingMetadata func(md Fields)
	// Close is called last, with nil when the status is OK and a
	// *GRPCStatusError otherwise.
	Close func(err error)
}

// pendingGRPC is a call or stream the plugin has open.
type pendingGRPC struct {
	token  uint32
	stream *Request // the request it was made for, or nil
	done   func([]byte, error)
	h      *GRPCStreamHandler
}

// grpcPending holds the open calls and streams by token.
var grpcPending = map[uint32]*pendingGRPC{}

// GRPCCall is a unary gRPC call in flight.
type GRPCCall struct{ token uint32 }

// CallGRPC sends msg (a serialized request message; the host frames it)
// to req's method on cluster, which must speak HTTP/2, and calls done with
// the response message, or with a *GRPCStatusError. It returns at once;
// done runs later, in a callback of its own. timeout 0 sets no deadline.
// The plugin's configuration must allow the cluster (allowed_clusters).
//
// Called from a request's callback, done acts on that request, as an
// HTTPCall's does: return Pause and Resume or Respond from done. If the
// request ends first, the call is cancelled and done is not called; make
// the call inside InRootContext for one that must outlive the request.
func CallGRPC(cluster string, req *GRPCRequest, msg []byte, timeout time.Duration, done func(resp []byte, err error)) (*GRPCCall, error) {
	if curRoot == nil {
		return nil, errNoRoot
	}
	token, st := hostGRPCCall(cluster, req.Service, req.Method, encodeFields(req.Metadata), msg, uint32(timeout.Milliseconds()))
	if err := check("proxy_grpc_call", st); err != nil {
		return nil, err
	}
	grpcPending[token] = &pendingGRPC{token: token, stream: curStream, done: done}
	return &GRPCCall{token: token}, nil
}

// Cancel abandons the call: done is not called.
func (c *GRPCCall) Cancel() error {
	delete(grpcPending, c.token)
	return check("proxy_grpc_cancel", hostGRPCCancel(c.token))
}

// GRPCStream is a gRPC stream the plugin opened: client, server or
// bidirectional streaming alike.
type GRPCStream struct{ token uint32 }

// OpenGRPCStream opens a stream to req's method on cluster, which must
// speak HTTP/2; h receives what the upstream sends. Send messages with
// Send and end them with CloseSend (or Send's endStream). The stream has
// no deadline: it lasts until the upstream ends it or the plugin cancels
// it.
//
// Opened from a request's callback, h's functions act on that request; if
// the request ends first the stream is cancelled. Open it inside
// InRootContext for a stream that outlives requests.
func OpenGRPCStream(cluster string, req *GRPCRequest, h GRPCStreamHandler) (*GRPCStream, error) {
	if curRoot == nil {
		return nil, errNoRoot
	}
	token, st := hostGRPCStream(cluster, req.Service, req.Method, encodeFields(req.Metadata))
	if err := check("proxy_grpc_stream", st); err != nil {
		return nil, err
	}
	grpcPending[token] = &pendingGRPC{token: token, stream: curStream, h: &h}
	return &GRPCStream{token: token}, nil
}

// Send sends a serialized message; endStream makes it the last one.
func (s *GRPCStream) Send(msg []byte, endStream bool) error {
	return check("proxy_grpc_send", hostGRPCSend(s.token, msg, endStream))
}

// CloseSend tells the upstream that no more messages follow; its
// answers keep coming until it closes the stream.
func (s *GRPCStream) CloseSend() error {
	return check("proxy_grpc_close", hostGRPCClose(s.token))
}

// Cancel resets the stream: no callback follows.
func (s *GRPCStream) Cancel() error {
	delete(grpcPending, s.token)
	return check("proxy_grpc_cancel", hostGRPCCancel(s.token))
}

// enterGRPC makes the context of p effective for its callback, or cancels
// p when the request it was made for has ended.
func enterGRPC(p *pendingGRPC, root uint32) bool {
	if r := p.stream; r != nil {
		if streams.get(r.id) != r || hostSetEffectiveContext(r.id) != abi.StatusOK {
			delete(grpcPending, p.token)
			hostGRPCCancel(p.token)
			return false
		}
		enterStream(r)
		return true
	}
	rc := rootOf(root)
	if rc == nil {
		return false
	}
	enterRoot(rc)
	return true
}

// dropGRPC cancels the calls and streams made for a request that ended.
func dropGRPC(r *Request) {
	for token, p := range grpcPending {
		if p.stream == r {
			delete(grpcPending, token)
			hostGRPCCancel(token)
		}
	}
}

func grpcMetadata(mt abi.MapType) Fields {
	b, st := hostGetMapPairs(mt)
	if st != abi.StatusOK {
		return nil
	}
	f, _ := decodeFields(b)
	return f
}

func onGRPCReceiveInitialMetadata(root, token, _ uint32) {
	p := grpcPending[token]
	if p == nil || p.h == nil || !enterGRPC(p, root) {
		return
	}
	defer leave()
	if p.h.InitialMetadata != nil {
		p.h.InitialMetadata(grpcMetadata(abi.MapGRPCCallInitialMetadata))
	}
}

func onGRPCReceive(root, token, size uint32) {
	p := grpcPending[token]
	if p == nil || !enterGRPC(p, root) {
		return
	}
	defer leave()
	msg, err := readBuffer(abi.BufferGRPCCallMessage, size)
	if p.h == nil {
		delete(grpcPending, token)
		if err != nil {
			p.done(nil, err)
			return
		}
		p.done(msg, nil)
		return
	}
	if p.h.Message != nil && err == nil {
		p.h.Message(msg)
	}
}

func onGRPCReceiveTrailingMetadata(root, token, _ uint32) {
	p := grpcPending[token]
	if p == nil || p.h == nil || !enterGRPC(p, root) {
		return
	}
	defer leave()
	if p.h.TrailingMetadata != nil {
		p.h.TrailingMetadata(grpcMetadata(abi.MapGRPCCallTrailingMetadata))
	}
}

func onGRPCClose(root, token, code uint32) {
	p := grpcPending[token]
	if p == nil || !enterGRPC(p, root) {
		return
	}
	defer leave()
	delete(grpcPending, token)
	var err error
	if code != 0 {
		_, msg, _ := hostGetStatus()
		err = &GRPCStatusError{Code: code, Message: msg}
	}
	if p.h == nil {
		p.done(nil, err)
		return
	}
	if p.h.Close != nil {
		p.h.Close(err)
	}
}
