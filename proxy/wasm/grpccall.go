package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Limits of the gRPC calls and streams of one instance (see README).
var (
	// maxGRPCCalls bounds the calls and streams an instance has open at
	// once; past it proxy_grpc_call and proxy_grpc_stream answer
	// INTERNAL_FAILURE. A variable so that tests can lower it.
	maxGRPCCalls = 1024
)

const (
	// maxGRPCMessage is the largest message received (gRPC's default
	// receive limit); a larger one ends the call with RESOURCE_EXHAUSTED.
	maxGRPCMessage = 4 << 20
	// maxGRPCQueued bounds the bytes a stream holds that the guest sent
	// and the upstream has not yet taken; past it proxy_grpc_send
	// answers INTERNAL_FAILURE.
	maxGRPCQueued = 4 << 20
)

// Tokens are numbered as proxy-wasm-cpp-host numbers them: the low two
// bits say what a token names (1: a gRPC call, 2: a gRPC stream), and each
// kind counts up in steps of 4.
const (
	tokenGRPCCall   = 1
	tokenGRPCStream = 2
	tokenKindMask   = 3
	tokenStep       = 4
)

// gRPC status codes the host gives itself.
const (
	grpcOK                = 0
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcState is an instance's gRPC calls and streams, and what the callback
// being delivered shows the guest. Guarded by the instance's lock.
type grpcState struct {
	calls      map[uint32]*grpcCall
	nextCall   uint32
	nextStream uint32
	base       context.Context // done once the instance is closed

	fnLooked                                  bool
	fnInitial, fnReceive, fnTrailing, fnClose api.Function

	// During a callback: its metadata and map type, its message, its
	// status.
	meta     []kv
	metaType abi.MapType
	hasMeta  bool
	msg      []byte
	hasMsg   bool
	closing  bool
	code     uint32
	message  string
}

// grpcCall is one proxy_grpc_call or proxy_grpc_stream in flight. It
// belongs to the root context that was effective when it was opened, as
// in Envoy, and hears its callbacks there.
type grpcCall struct {
	token  uint32
	root   uint32
	stream bool
	target filter.StreamCluster
	req    *fasthttp.Request
	body   io.Reader
	q      *sendQueue // a stream's messages, nil for a call
	ctx    context.Context
	cancel context.CancelFunc
	log    *zap.Logger // the log of the plugin that made it

	// Guarded by the instance's lock.
	done        bool // cancelled, or its last callback delivered
	localClosed bool // the guest ended what it sends
}

var errNoStreams = errors.New("the upstreams carry no gRPC")

func hostGRPCCall(in *instance, a []uint64) abi.Status {
	msg, ok := in.mem.Read(u32(a[8]), u32(a[9]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	return in.openGRPC(a, false, msg, time.Duration(u32(a[10]))*time.Millisecond, u32(a[11]))
}

func hostGRPCStream(in *instance, a []uint64) abi.Status {
	return in.openGRPC(a, true, nil, 0, u32(a[8]))
}

// openGRPC starts a call (stream false, with its one message) or a stream.
// a holds the service, service name, method and initial metadata as
// pointer and size pairs.
func (in *instance) openGRPC(a []uint64, stream bool, msg []byte, timeout time.Duration, tokenPtr uint32) abi.Status {
	service, ok1 := in.mem.Read(u32(a[0]), u32(a[1]))
	svcName, ok2 := in.mem.Read(u32(a[2]), u32(a[3]))
	method, ok3 := in.mem.Read(u32(a[4]), u32(a[5]))
	md, ok4 := in.mem.Read(u32(a[6]), u32(a[7]))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return abi.StatusInvalidMemoryAccess
	}
	if _, ok := in.mem.Read(tokenPtr, 4); !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if in.curRoot == 0 {
		return abi.StatusBadArgument
	}
	target, ok := parseGRPCService(service)
	if !ok {
		return abi.StatusParseFailure
	}
	if p := in.curP; p == nil || !p.allows([]byte(target.cluster)) {
		in.logger().Debug("wasm gRPC call to a cluster not allowed", zap.String("cluster", target.cluster))
		return abi.StatusParseFailure
	}
	sc, st := in.streamCluster(target.cluster)
	if st != abi.StatusOK {
		return st
	}
	pairs, ok := parseMap(md, in.pairs[:0])
	in.pairs = pairs[:0]
	if !ok {
		return abi.StatusBadArgument
	}
	g := &in.grpc
	if len(g.calls) >= maxGRPCCalls {
		in.logger().Debug("wasm gRPC calls at their limit", zap.Int("limit", maxGRPCCalls))
		return abi.StatusInternalFailure
	}

	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	path := make([]byte, 0, 2+len(svcName)+len(method))
	path = append(append(append(append(path, '/'), svcName...), '/'), method...)
	req.SetRequestURIBytes(path)
	authority := target.authority
	if authority == "" {
		authority = target.cluster
	}
	req.Header.SetHost(authority)
	req.Header.SetContentType("application/grpc")
	if timeout > 0 {
		req.Header.Set("grpc-timeout", grpcTimeout(timeout))
	}
	for _, h := range target.metadata {
		req.Header.Add(h[0], h[1])
	}
	for _, p := range pairs {
		if len(p.k) > 0 && p.k[0] != ':' {
			req.Header.AddBytesKV(p.k, p.v)
		}
	}

	if g.calls == nil {
		g.calls = make(map[uint32]*grpcCall)
		base, cancel := context.WithCancel(context.Background())
		g.base = base
		go func() {
			<-in.closed
			cancel()
		}()
	}
	c := &grpcCall{root: in.curRoot, stream: stream, target: sc, req: req, log: in.logger()}
	if timeout > 0 {
		c.ctx, c.cancel = context.WithTimeout(g.base, timeout)
	} else {
		c.ctx, c.cancel = context.WithCancel(g.base)
	}
	if stream {
		c.q = newSendQueue(c.ctx.Done())
		c.body = c.q
		c.token = g.next(&g.nextStream, tokenGRPCStream)
	} else {
		frame := make([]byte, 5+len(msg))
		binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
		copy(frame[5:], msg)
		c.body = bytes.NewReader(frame)
		c.token = g.next(&g.nextCall, tokenGRPCCall)
	}
	if !in.mem.WriteUint32Le(tokenPtr, c.token) {
		c.cancel()
		fasthttp.ReleaseRequest(req)
		return abi.StatusInvalidMemoryAccess
	}
	g.calls[c.token] = c
	go in.runGRPC(c)
	return abi.StatusOK
}

// grpcTimeout formats a grpc-timeout value: at most 8 digits, so
// milliseconds, or seconds rounded up past 99999999 ms.
func grpcTimeout(d time.Duration) string {
	if ms := d.Milliseconds(); ms <= 99999999 {
		return strconv.FormatInt(ms, 10) + "m"
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "S"
}

// next returns the next token of a kind that is not in use.
func (g *grpcState) next(counter *uint32, kind uint32) uint32 {
	for {
		*counter += tokenStep
		t := *counter&^tokenKindMask | kind
		if _, used := g.calls[t]; !used {
			return t
		}
	}
}

// streamCluster finds the cluster a call goes to, or the status that
// refuses it.
func (in *instance) streamCluster(name string) (filter.StreamCluster, abi.Status) {
	su, ok := in.vm.m.opts.Upstreams.(filter.StreamUpstreams)
	if !ok {
		return nil, abi.StatusInternalFailure
	}
	sc, err := su.StreamCluster(name)
	switch {
	case err == nil:
		return sc, abi.StatusOK
	case errors.Is(err, filter.ErrUnknownCluster):
		return nil, abi.StatusParseFailure
	case errors.Is(err, filter.ErrNotHTTP2):
		in.logger().Debug("wasm gRPC call to a cluster that is not HTTP/2", zap.String("cluster", name))
		return nil, abi.StatusBadArgument
	}
	in.logger().Debug("wasm gRPC call refused", zap.String("cluster", name), zap.Error(err))
	return nil, abi.StatusInternalFailure
}

// grpcTarget is where a call goes: a cluster, and what a serialized
// envoy.config.core.v3.GrpcService adds to it.
type grpcTarget struct {
	cluster   string
	authority string
	metadata  [][2]string
}

// parseGRPCService reads proxy_grpc_call's service argument as Envoy
// does: a serialized envoy.config.core.v3.GrpcService naming a cluster
// (envoy_grpc.cluster_name, with its authority and initial_metadata), or
// else a plain cluster name.
func parseGRPCService(b []byte) (grpcTarget, bool) {
	if t, ok := parseGrpcServiceProto(b); ok {
		return t, true
	}
	if len(b) == 0 {
		return grpcTarget{}, false
	}
	return grpcTarget{cluster: string(b)}, true
}

// parseGrpcServiceProto decodes the fields of a GrpcService that the host
// honours: envoy_grpc (1) with cluster_name (1) and authority (2), and
// initial_metadata (5) with key (1) and value (2). It fails unless the
// bytes are a well-formed message with a cluster name.
func parseGrpcServiceProto(b []byte) (grpcTarget, bool) {
	var t grpcTarget
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return eachField(v, func(n protowire.Number, ty protowire.Type, f []byte) bool {
				if ty == protowire.BytesType {
					switch n {
					case 1:
						t.cluster = string(f)
					case 2:
						t.authority = string(f)
					}
				}
				return true
			}) == nil
		case num == 5 && typ == protowire.BytesType:
			var kv [2]string
			ok := eachField(v, func(n protowire.Number, ty protowire.Type, f []byte) bool {
				if ty == protowire.BytesType && (n == 1 || n == 2) {
					kv[n-1] = string(f)
				}
				return true
			}) == nil
			if ok && kv[0] != "" {
				t.metadata = append(t.metadata, kv)
			}
			return ok
		}
		return true
	})
	return t, err == nil && t.cluster != ""
}

var errBadProto = errors.New("malformed protobuf")

// eachField calls fn with every field of a protobuf message; v is the
// field's payload for length-delimited fields. It stops at the first
// malformed field or when fn returns false.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) bool) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadProto
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errBadProto
		}
		b = b[n:]
		if !fn(num, typ, v) {
			return errBadProto
		}
	}
	return nil
}

// runGRPC carries a call or stream to its end, delivering its callbacks
// to its root context. It runs on a goroutine of its own: the upstream's
// pace never holds the instance, and a request never waits for it.
func (in *instance) runGRPC(c *grpcCall) {
	defer c.cancel()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	body, err := c.target.Stream(c.ctx, c.req, c.body, resp)
	fasthttp.ReleaseRequest(c.req)
	c.req = nil
	if err != nil {
		code, msg := in.grpcFailure(c, err, grpcUnavailable)
		in.grpcClose(c, code, msg)
		return
	}
	defer body.Close()

	// A response that ends with its headers is trailers-only: its
	// headers are its trailers. Another response that is not 200 is not
	// gRPC's: its HTTP status maps to a gRPC one.
	status := resp.StatusCode()
	_, hasStatus := peekGRPCStatus(&resp.Header)
	switch {
	case body == http.NoBody && (status == http.StatusOK || hasStatus):
		in.grpcEnd(c, &resp.Header, false, nil, false)
		return
	case status != http.StatusOK:
		in.grpcClose(c, httpToGRPC(status), "")
		return
	}
	if c.stream {
		meta := append([]kv{{pStatus, []byte(strconv.Itoa(status))}}, headerPairs(&resp.Header)...)
		if !in.grpcDeliver(c, abi.MapGRPCCallInitialMetadata, meta, nil, false) {
			return
		}
	}
	var first []byte
	got := false
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(body, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			code, msg := in.grpcFailure(c, err, grpcInternal)
			in.grpcClose(c, code, msg)
			return
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxGRPCMessage {
			in.grpcClose(c, grpcResourceExhausted, "received message larger than "+strconv.Itoa(maxGRPCMessage)+" bytes")
			return
		}
		if hdr[0] != 0 {
			// Compression was never offered (no grpc-accept-encoding).
			in.grpcClose(c, grpcInternal, "compressed message")
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(body, msg); err != nil {
			code, m := in.grpcFailure(c, err, grpcInternal)
			in.grpcClose(c, code, m)
			return
		}
		if !c.stream {
			if !got {
				first, got = msg, true
			}
			continue
		}
		if !in.grpcDeliver(c, 0, nil, msg, false) {
			return
		}
	}
	in.grpcEnd(c, &resp.Header, true, first, got)
}

// grpcEnd ends a call or stream at its trailers (or at the headers of a
// trailers-only response, trailers false): a stream hears the trailing
// metadata and then its close; a call hears its message when the status
// is OK and it has one, else its close.
func (in *instance) grpcEnd(c *grpcCall, h *fasthttp.ResponseHeader, trailers bool, msg []byte, got bool) {
	var meta []kv
	if trailers {
		for k := range h.Trailers() {
			for _, v := range h.PeekAll(string(k)) {
				meta = append(meta, kv{k, v})
			}
		}
	} else {
		meta = append([]kv{{pStatus, []byte(strconv.Itoa(h.StatusCode()))}}, headerPairs(h)...)
	}
	code := uint32(grpcUnknown)
	if v, ok := peekGRPCStatus(h); ok {
		if n, err := strconv.ParseUint(string(v), 10, 32); err == nil {
			code = uint32(n)
		}
	}
	message := string(h.Peek("grpc-message"))
	if c.stream {
		if !in.grpcDeliver(c, abi.MapGRPCCallTrailingMetadata, meta, nil, false) {
			return
		}
		in.grpcClose(c, code, message)
		return
	}
	switch {
	case code == grpcOK && got:
		in.grpcDeliver(c, 0, nil, msg, true)
	case code == grpcOK:
		in.grpcClose(c, grpcInternal, "no response message")
	default:
		in.grpcClose(c, code, message)
	}
}

func peekGRPCStatus(h *fasthttp.ResponseHeader) ([]byte, bool) {
	v := h.Peek("grpc-status")
	return v, v != nil
}

// headerPairs lists a response's headers.
func headerPairs(h *fasthttp.ResponseHeader) []kv {
	var out []kv
	for k, v := range h.All() {
		out = append(out, kv{append([]byte(nil), k...), append([]byte(nil), v...)})
	}
	return out
}

// grpcFailure is the status of a call whose exchange failed: its deadline
// passed, or else code: the upstream could not be reached, or broke off.
func (in *instance) grpcFailure(c *grpcCall, err error, code uint32) (uint32, string) {
	// The upstream, told the deadline by grpc-timeout, may give up on it
	// (resetting the stream) before the call's own timer fires.
	if dl, ok := c.ctx.Deadline(); ok && !time.Now().Before(dl) {
		return grpcDeadlineExceeded, "upstream request timeout"
	}
	c.log.Debug("wasm gRPC call failed", zap.Uint32("token", c.token), zap.Error(err))
	return code, err.Error()
}

// httpToGRPC maps the HTTP status of a response that is not gRPC to a
// gRPC status, as gRPC's HTTP mapping (and Envoy) does.
func httpToGRPC(status int) uint32 {
	switch status {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcClose delivers proxy_on_grpc_close, the last callback of c.
func (in *instance) grpcClose(c *grpcCall, code uint32, message string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.grpcLive(c) {
		return
	}
	g := &in.grpc
	c.done = true
	g.closing, g.code, g.message = true, code, message
	in.grpcInvoke(c, g.fnClose, uint64(code))
	g.closing, g.code, g.message = false, 0, ""
	in.grpcForget(c)
}

// grpcDeliver delivers metadata (mt set) or a message (mt 0) to c's root
// context; last makes it c's last callback (a call's answer). It reports
// whether c is still open after it.
func (in *instance) grpcDeliver(c *grpcCall, mt abi.MapType, meta []kv, msg []byte, last bool) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.grpcLive(c) {
		return false
	}
	g := &in.grpc
	if last {
		c.done = true
	}
	if mt != 0 {
		g.meta, g.metaType, g.hasMeta = meta, mt, true
		fn := g.fnInitial
		if mt == abi.MapGRPCCallTrailingMetadata {
			fn = g.fnTrailing
		}
		in.grpcInvoke(c, fn, uint64(len(meta)))
		g.meta, g.hasMeta = nil, false
	} else {
		g.msg, g.hasMsg = msg, true
		in.grpcInvoke(c, g.fnReceive, uint64(len(msg)))
		g.msg, g.hasMsg = nil, false
	}
	if last {
		in.grpcForget(c)
	}
	return !c.done && !in.broken
}

// grpcLive reports whether c may still hear callbacks: not cancelled, its
// instance and root context still there. A call whose root context is
// gone is cancelled. Callers hold in.mu.
func (in *instance) grpcLive(c *grpcCall) bool {
	if c.done || in.broken {
		return false
	}
	if _, ok := in.rootSet[c.root]; !ok {
		c.done = true
		in.grpcForget(c)
		return false
	}
	if !in.grpc.fnLooked {
		in.grpc.fnLooked = true
		m := in.mod
		in.grpc.fnInitial = m.ExportedFunction("proxy_on_grpc_receive_initial_metadata")
		in.grpc.fnReceive = m.ExportedFunction("proxy_on_grpc_receive")
		in.grpc.fnTrailing = m.ExportedFunction("proxy_on_grpc_receive_trailing_metadata")
		in.grpc.fnClose = m.ExportedFunction("proxy_on_grpc_close")
	}
	return true
}

// grpcInvoke calls a callback of c in its root context. Callers hold
// in.mu.
func (in *instance) grpcInvoke(c *grpcCall, fn api.Function, arg uint64) {
	in.enterRoot(c.root)
	_, err := in.invoke(fn, uint64(c.root), uint64(c.token), arg)
	in.leave()
	if err != nil {
		in.vm.failed(in, err)
	}
}

// grpcForget drops c from the instance and ends its exchange. Callers
// hold in.mu.
func (in *instance) grpcForget(c *grpcCall) {
	if in.grpc.calls[c.token] == c {
		delete(in.grpc.calls, c.token)
	}
	c.cancel()
	if c.q != nil {
		c.q.abort()
	}
}

// cancelGRPC cancels the gRPC calls and streams a root context opened, as
// Envoy does when it deletes the context: they hear no more callbacks,
// and their upstream streams are reset. Callers hold in.mu.
func (in *instance) cancelGRPC(root uint32) {
	for _, c := range in.grpc.calls {
		if c.root == root {
			c.done = true
			in.grpcForget(c)
		}
	}
}

// grpcToken finds the call or stream of a token: BAD_ARGUMENT for a token
// that cannot be a gRPC one, NOT_FOUND for one not open.
func (in *instance) grpcToken(token uint32) (*grpcCall, abi.Status) {
	switch token & tokenKindMask {
	case tokenGRPCCall, tokenGRPCStream:
	default:
		return nil, abi.StatusBadArgument
	}
	c := in.grpc.calls[token]
	if c == nil {
		return nil, abi.StatusNotFound
	}
	return c, abi.StatusOK
}

func hostGRPCSend(in *instance, a []uint64) abi.Status {
	token := u32(a[0])
	msg, ok := in.mem.Read(u32(a[1]), u32(a[2]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	if token&tokenKindMask != tokenGRPCStream {
		return abi.StatusBadArgument
	}
	c, st := in.grpcToken(token)
	if st != abi.StatusOK {
		return st
	}
	if c.done {
		return abi.StatusNotFound
	}
	if c.localClosed {
		return abi.StatusBadArgument
	}
	if !c.q.push(msg) {
		return abi.StatusInternalFailure
	}
	if u32(a[3]) != 0 {
		c.q.closeSend()
		c.localClosed = true
	}
	return abi.StatusOK
}

// hostGRPCCancel ends a call or stream at once: no callback follows.
func hostGRPCCancel(in *instance, a []uint64) abi.Status {
	c, st := in.grpcToken(u32(a[0]))
	if st != abi.StatusOK {
		return st
	}
	c.done = true
	in.grpcForget(c)
	return abi.StatusOK
}

// hostGRPCClose cancels a call, as Envoy does; it ends what the guest
// sends on a stream, whose answers keep coming until the upstream closes.
func hostGRPCClose(in *instance, a []uint64) abi.Status {
	c, st := in.grpcToken(u32(a[0]))
	if st != abi.StatusOK {
		return st
	}
	if !c.stream || c.done {
		c.done = true
		in.grpcForget(c)
		return abi.StatusOK
	}
	if !c.localClosed {
		c.q.closeSend()
		c.localClosed = true
	}
	return abi.StatusOK
}

// collectGRPC gathers the metadata of the callback being delivered into
// in.kv.
func (in *instance) collectGRPC(mt abi.MapType) abi.Status {
	g := &in.grpc
	if !g.hasMeta || g.metaType != mt {
		return abi.StatusNotFound
	}
	in.kv = append(in.kv[:0], g.meta...)
	return abi.StatusOK
}

// grpcMetaValue finds one value of the metadata being delivered.
func (in *instance) grpcMetaValue(mt abi.MapType, key []byte) ([]byte, bool) {
	g := &in.grpc
	if !g.hasMeta || g.metaType != mt {
		return nil, false
	}
	for _, e := range g.meta {
		if bytes.EqualFold(e.k, key) {
			return e.v, true
		}
	}
	return nil, false
}

// grpcStatus answers proxy_get_status during proxy_on_grpc_close.
func (in *instance) grpcStatus(a []uint64) (abi.Status, bool) {
	g := &in.grpc
	if !g.closing {
		return 0, false
	}
	if !in.mem.WriteUint32Le(u32(a[0]), g.code) {
		return abi.StatusInvalidMemoryAccess, true
	}
	in.scratch = append(in.scratch[:0], g.message...)
	return in.copyOut(in.scratch, u32(a[1]), u32(a[2])), true
}

// grpcMessage is the GRPC_CALL_MESSAGE buffer.
func (in *instance) grpcMessage() ([]byte, abi.Status) {
	if !in.grpc.hasMsg {
		return nil, abi.StatusNotFound
	}
	return in.grpc.msg, abi.StatusOK
}

// sendQueue is a stream's request body: the messages the guest sent,
// framed, until the transport takes them. The guest never waits on it.
type sendQueue struct {
	mu      sync.Mutex
	buf     []byte
	off     int
	end     bool // the guest sent its last message
	aborted bool
	ready   chan struct{}
	done    <-chan struct{}
}

var errSendAborted = errors.New("gRPC stream ended")

func newSendQueue(done <-chan struct{}) *sendQueue {
	return &sendQueue{ready: make(chan struct{}, 1), done: done}
}

// push adds a message, framed; it fails when the queue holds too much.
// Once the exchange has ended (the upstream may answer and close before
// the guest hears of it) the message is dropped, as Envoy drops a message
// sent on a stream that the upstream closed.
func (q *sendQueue) push(msg []byte) bool {
	q.mu.Lock()
	if q.aborted || q.end {
		q.mu.Unlock()
		return true
	}
	if len(q.buf)-q.off+5+len(msg) > maxGRPCQueued {
		q.mu.Unlock()
		return false
	}
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(msg)))
	q.buf = append(append(q.buf, hdr[:]...), msg...)
	q.mu.Unlock()
	q.wake()
	return true
}

// closeSend ends the body after the messages queued.
func (q *sendQueue) closeSend() {
	q.mu.Lock()
	q.end = true
	q.mu.Unlock()
	q.wake()
}

func (q *sendQueue) abort() {
	q.mu.Lock()
	q.aborted = true
	q.buf, q.off = nil, 0
	q.mu.Unlock()
	q.wake()
}

func (q *sendQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Read is the transport's: it waits for a message, the end, or the
// stream's end.
func (q *sendQueue) Read(p []byte) (int, error) {
	for {
		q.mu.Lock()
		switch {
		case q.aborted:
			q.mu.Unlock()
			return 0, errSendAborted
		case q.off < len(q.buf):
			n := copy(p, q.buf[q.off:])
			q.off += n
			if q.off == len(q.buf) {
				q.buf, q.off = q.buf[:0], 0
			}
			q.mu.Unlock()
			return n, nil
		case q.end:
			q.mu.Unlock()
			return 0, io.EOF
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-q.done:
			return 0, errSendAborted
		}
	}
}

// Close is the transport's: it needs no more of the body.
func (q *sendQueue) Close() error {
	q.abort()
	return nil
}
