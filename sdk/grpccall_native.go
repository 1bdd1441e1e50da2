//go:build !wasip1

package sdk

import "github.com/wasmgate/wasmgate/sdk/abi"

// The in-memory host's gRPC side: it records what the plugin opens and
// sends; tests answer by calling the callbacks.
type memGRPCCall struct {
	cluster, service, method string
	metadata                 Fields
	msgs                     [][]byte
	timeout                  uint32
	stream                   bool
	closed, cancelled        bool
}

var (
	memGRPC     = map[uint32]*memGRPCCall{}
	memGRPCNext uint32
)

func memGRPCOpen(c *memGRPCCall, kind uint32, md []byte) (uint32, abi.Status) {
	f, err := decodeFields(md)
	if err != nil {
		return 0, abi.StatusBadArgument
	}
	c.metadata = f
	memGRPCNext += 4
	token := memGRPCNext | kind
	memGRPC[token] = c
	return token, abi.StatusOK
}

func hostGRPCCall(cluster, service, method string, md, msg []byte, timeoutMS uint32) (uint32, abi.Status) {
	c := &memGRPCCall{cluster: cluster, service: service, method: method, timeout: timeoutMS,
		msgs: [][]byte{append([]byte(nil), msg...)}}
	return memGRPCOpen(c, 1, md)
}

func hostGRPCStream(cluster, service, method string, md []byte) (uint32, abi.Status) {
	return memGRPCOpen(&memGRPCCall{cluster: cluster, service: service, method: method, stream: true}, 2, md)
}

func hostGRPCSend(token uint32, msg []byte, endStream bool) abi.Status {
	c := memGRPC[token]
	if c == nil {
		return abi.StatusNotFound
	}
	if !c.stream || c.closed {
		return abi.StatusBadArgument
	}
	c.msgs = append(c.msgs, append([]byte(nil), msg...))
	c.closed = endStream
	return abi.StatusOK
}

func hostGRPCCancel(token uint32) abi.Status {
	c := memGRPC[token]
	if c == nil {
		return abi.StatusNotFound
	}
	c.cancelled = true
	return abi.StatusOK
}

func hostGRPCClose(token uint32) abi.Status {
	c := memGRPC[token]
	if c == nil {
		return abi.StatusNotFound
	}
	c.closed = true
	return abi.StatusOK
}
