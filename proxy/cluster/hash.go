package cluster

import (
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/balancer"
)

type hashKind uint8

const (
	hashNone hashKind = iota
	hashHeader
	hashCookie
	hashSourceIP
)

// hashPolicy computes the request hash for ring_hash and maglev.
type hashPolicy struct {
	kind hashKind
	name string
}

func newHashPolicy(hp *config.HashPolicy) (hashPolicy, error) {
	switch {
	case hp == nil:
		return hashPolicy{}, nil
	case hp.Header != "":
		return hashPolicy{kind: hashHeader, name: hp.Header}, nil
	case hp.Cookie != "":
		return hashPolicy{kind: hashCookie, name: hp.Cookie}, nil
	case hp.SourceIP:
		return hashPolicy{kind: hashSourceIP}, nil
	}
	return hashPolicy{}, fmt.Errorf("hash_policy names nothing to hash")
}

// of hashes the request attribute. A request without the attribute hashes
// to 0, so such requests all go to one endpoint, as with Envoy.
func (h hashPolicy) of(ctx *fasthttp.RequestCtx) uint64 {
	var key []byte
	switch h.kind {
	case hashHeader:
		key = ctx.Request.Header.Peek(h.name)
	case hashCookie:
		key = ctx.Request.Header.Cookie(h.name)
	case hashSourceIP:
		key = ctx.RemoteIP()
	}
	if len(key) == 0 {
		return 0
	}
	return balancer.HashKey(key)
}
