package route

import (
	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// Mutation is a compiled header mutation: remove, then set, then add.
type Mutation struct {
	remove [][]byte
	set    [][2][]byte
	add    [][2][]byte
}

func compileMutation(ms ...config.HeaderMutation) Mutation {
	var m Mutation
	for _, c := range ms {
		for _, name := range c.Remove {
			m.remove = append(m.remove, []byte(name))
		}
		for _, h := range c.Set {
			m.set = append(m.set, [2][]byte{[]byte(h.Name), []byte(h.Value)})
		}
		for _, h := range c.Add {
			m.add = append(m.add, [2][]byte{[]byte(h.Name), []byte(h.Value)})
		}
	}
	return m
}

// Empty reports whether the mutation changes nothing.
func (m *Mutation) Empty() bool { return len(m.remove)+len(m.set)+len(m.add) == 0 }

// ApplyRequest applies the mutation to request headers.
func (m *Mutation) ApplyRequest(h *fasthttp.RequestHeader) {
	for _, name := range m.remove {
		h.DelBytes(name)
	}
	for _, kv := range m.set {
		h.SetBytesKV(kv[0], kv[1])
	}
	for _, kv := range m.add {
		h.AddBytesKV(kv[0], kv[1])
	}
}

// ApplyResponse applies the mutation to response headers.
func (m *Mutation) ApplyResponse(h *fasthttp.ResponseHeader) {
	for _, name := range m.remove {
		h.DelBytes(name)
	}
	for _, kv := range m.set {
		h.SetBytesKV(kv[0], kv[1])
	}
	for _, kv := range m.add {
		h.AddBytesKV(kv[0], kv[1])
	}
}
