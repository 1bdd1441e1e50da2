//go:build !wasip1

package sdk

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// grpcFilter makes, for each request, the call or stream its path names
// and records what it hears.
type grpcFilter struct {
	BaseFilter
	heard  []string
	stream *GRPCStream
}

func (f *grpcFilter) OnRequestHeaders(r *Request) Action {
	req := &GRPCRequest{Service: "grpc.health.v1.Health", Method: "Check", Metadata: Fields{{"x-token", "abc"}}}
	switch r.Path() {
	case "/call":
		_, err := CallGRPC("grpc", req, []byte("ping"), 2*time.Second, func(resp []byte, err error) {
			var st *GRPCStatusError
			switch {
			case errors.As(err, &st):
				f.heard = append(f.heard, "status "+st.Error())
			case err != nil:
				f.heard = append(f.heard, "error "+err.Error())
			default:
				f.heard = append(f.heard, "answer "+string(resp))
			}
			r.Resume()
		})
		if err != nil {
			return r.Respond(500, nil, nil)
		}
	case "/stream":
		var err error
		f.stream, err = OpenGRPCStream("grpc", req, GRPCStreamHandler{
			InitialMetadata:  func(md Fields) { f.heard = append(f.heard, "initial "+md.Get("x-hello")) },
			Message:          func(msg []byte) { f.heard = append(f.heard, "message "+string(msg)) },
			TrailingMetadata: func(md Fields) { f.heard = append(f.heard, "trailing "+md.Get("x-count")) },
			Close:            func(err error) { f.heard = append(f.heard, "close "+errString(err)) },
		})
		if err != nil {
			return r.Respond(500, nil, nil)
		}
		f.stream.Send([]byte("m1"), false)
		f.stream.Send([]byte("m2"), true)
	}
	return Pause
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func TestGRPCCall(t *testing.T) {
	reset(t)
	memGRPC, grpcPending = map[uint32]*memGRPCCall{}, map[uint32]*pendingGRPC{}
	f := &grpcFilter{}
	Register(func([]byte) (Filter, error) { return f, nil })
	configure(t, "")
	onContextCreate(2, 1)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/call"}}
	if a := onRequestHeaders(2, 2, true); a != Pause {
		t.Fatalf("action %v", a)
	}
	if len(memGRPC) != 1 {
		t.Fatalf("calls %v", memGRPC)
	}
	var token uint32
	for tok, c := range memGRPC {
		token = tok
		if c.cluster != "grpc" || c.service != "grpc.health.v1.Health" || c.method != "Check" ||
			c.metadata.Get("x-token") != "abc" || string(c.msgs[0]) != "ping" || c.timeout != 2000 || c.stream {
			t.Fatalf("call %+v", c)
		}
	}
	if token&3 != 1 {
		t.Errorf("call token %d", token)
	}
	mem.buffers[abi.BufferGRPCCallMessage] = []byte("pong")
	onGRPCReceive(1, token, 4)
	delete(mem.buffers, abi.BufferGRPCCallMessage)
	if mem.effective != 2 || len(mem.resumed) != 1 {
		t.Errorf("effective context %d, resumed %v", mem.effective, mem.resumed)
	}
	// A failed call closes with its status and message.
	onContextCreate(3, 1)
	onRequestHeaders(3, 2, true)
	mem.callErr = "unknown method Nope"
	onGRPCClose(1, token+4, 12)
	// The call of a request that ended is cancelled, and never answered.
	onContextCreate(4, 1)
	onRequestHeaders(4, 2, true)
	onDelete(4)
	if c := memGRPC[token+8]; c == nil || !c.cancelled {
		t.Errorf("call of a deleted request: %+v", c)
	}
	onGRPCClose(1, token+8, 14)
	want := "answer pong|status grpc status 12: unknown method Nope"
	if got := strings.Join(f.heard, "|"); got != want {
		t.Errorf("heard %q, want %q", got, want)
	}
}

func TestGRPCStream(t *testing.T) {
	reset(t)
	memGRPC, grpcPending = map[uint32]*memGRPCCall{}, map[uint32]*pendingGRPC{}
	f := &grpcFilter{}
	Register(func([]byte) (Filter, error) { return f, nil })
	configure(t, "")
	onContextCreate(2, 1)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/stream"}}
	onRequestHeaders(2, 2, true)
	if len(memGRPC) != 1 {
		t.Fatalf("streams %v", memGRPC)
	}
	var token uint32
	var c *memGRPCCall
	for token, c = range memGRPC {
	}
	if token&3 != 2 || !c.stream || len(c.msgs) != 2 || string(c.msgs[1]) != "m2" || !c.closed {
		t.Fatalf("stream %d %+v", token, c)
	}
	if err := f.stream.Send([]byte("m3"), false); !errors.Is(err, ErrBadArgument) {
		t.Errorf("send after the end: %v", err)
	}
	mem.maps[abi.MapGRPCCallInitialMetadata] = Fields{{"x-hello", "world"}}
	onGRPCReceiveInitialMetadata(1, token, 1)
	for _, m := range []string{"M1", "M2"} {
		mem.buffers[abi.BufferGRPCCallMessage] = []byte(m)
		onGRPCReceive(1, token, 2)
	}
	mem.maps[abi.MapGRPCCallTrailingMetadata] = Fields{{"x-count", "2"}}
	onGRPCReceiveTrailingMetadata(1, token, 1)
	onGRPCClose(1, token, 0)
	onGRPCClose(1, token, 0) // a second close is ignored
	want := "initial world|message M1|message M2|trailing 2|close ok"
	if got := strings.Join(f.heard, "|"); got != want {
		t.Errorf("heard %q, want %q", got, want)
	}
	if len(grpcPending) != 0 {
		t.Errorf("pending after close: %v", grpcPending)
	}
}

func TestGRPCOutsideContext(t *testing.T) {
	reset(t)
	if _, err := CallGRPC("c", &GRPCRequest{}, nil, 0, func([]byte, error) {}); !errors.Is(err, ErrNoContext) {
		t.Errorf("CallGRPC: %v", err)
	}
	if _, err := OpenGRPCStream("c", &GRPCRequest{}, GRPCStreamHandler{}); !errors.Is(err, ErrNoContext) {
		t.Errorf("OpenGRPCStream: %v", err)
	}
}
