package wasm

import (
	"errors"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Bounds of a guest's HTTP call timeout.
const (
	defaultHTTPCallTimeout = 5 * time.Second
	maxHTTPCallTimeout     = 60 * time.Second
)

// httpCall is one proxy_http_call in flight.
type httpCall struct {
	id       uint32
	owner    uint32 // the context that made the call
	root     uint32 // the root context that hears the answer
	cluster  string
	p        *plugin // that made the call
	req      *fasthttp.Request
	resp     *fasthttp.Response
	err      error
	canceled bool // guarded by the instance's lock
}

var errNoUpstreams = errors.New("no upstreams to call")

func hostHTTPCall(in *instance, a []uint64) abi.Status {
	cluster, ok1 := in.mem.Read(u32(a[0]), u32(a[1]))
	hdrs, ok2 := in.mem.Read(u32(a[2]), u32(a[3]))
	body, ok3 := in.mem.Read(u32(a[4]), u32(a[5]))
	_, ok4 := in.mem.Read(u32(a[6]), u32(a[7]))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return abi.StatusInvalidMemoryAccess
	}
	if in.curRoot == 0 {
		return abi.StatusBadArgument
	}
	p := in.curP
	if p == nil || !p.allows(cluster) {
		in.logger().Debug("wasm http call to a cluster not allowed", zap.ByteString("cluster", cluster))
		in.vm.m.metrics.httpCalls.WithLabelValues(in.pluginName(), "denied").Inc()
		return abi.StatusBadArgument
	}
	pairs, ok := parseMap(hdrs, in.pairs[:0])
	in.pairs = pairs[:0]
	if !ok {
		return abi.StatusBadArgument
	}
	req := fasthttp.AcquireRequest()
	// Envoy requires :method, :path and :authority to be present, not
	// non-empty; an empty :authority is filled with the cluster's name.
	var method, path, authority, scheme []byte
	var hasMethod, hasPath, hasAuthority bool
	for _, p := range pairs {
		switch string(p.k) {
		case ":method":
			method, hasMethod = p.v, true
		case ":path":
			path, hasPath = p.v, true
		case ":authority":
			authority, hasAuthority = p.v, true
		case ":scheme":
			scheme = p.v
		default:
			if len(p.k) > 0 && p.k[0] != ':' {
				req.Header.AddBytesKV(p.k, p.v)
			}
		}
	}
	if !hasMethod || !hasPath || !hasAuthority {
		fasthttp.ReleaseRequest(req)
		return abi.StatusBadArgument
	}
	if len(authority) == 0 {
		authority = cluster
	}
	req.Header.SetMethodBytes(method)
	req.SetRequestURIBytes(path)
	req.Header.SetHostBytes(authority)
	if len(scheme) > 0 {
		req.URI().SetSchemeBytes(scheme)
	}
	req.SetBody(body)
	timeout := time.Duration(u32(a[8])) * time.Millisecond
	if timeout == 0 {
		timeout = defaultHTTPCallTimeout
	}
	timeout = min(timeout, maxHTTPCallTimeout)

	in.nextCall++
	if in.nextCall == 0 {
		in.nextCall = 1
	}
	c := &httpCall{
		id:      in.nextCall,
		owner:   in.curID,
		root:    in.curRoot,
		cluster: string(cluster),
		p:       p,
		req:     req,
		resp:    fasthttp.AcquireResponse(),
	}
	if !in.mem.WriteUint32Le(u32(a[9]), c.id) {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(c.resp)
		return abi.StatusInvalidMemoryAccess
	}
	in.calls[c.id] = c
	go in.runCall(c, timeout)
	return abi.StatusOK
}

// runCall sends the call and delivers its answer to the root context.
func (in *instance) runCall(c *httpCall, timeout time.Duration) {
	up := in.vm.m.opts.Upstreams
	if up == nil {
		c.err = errNoUpstreams
	} else {
		c.err = up.Call(c.cluster, c.req, c.resp, timeout)
	}
	result := "ok"
	if c.err != nil {
		result = "error"
		c.p.log.Debug("wasm http call failed", zap.String("cluster", c.cluster), zap.Error(c.err))
	}
	in.vm.m.metrics.httpCalls.WithLabelValues(c.p.cfg.Name, result).Inc()

	in.mu.Lock()
	delete(in.calls, c.id)
	if !c.canceled && !in.broken {
		nh, nb := 0, 0
		if c.err == nil {
			in.callResp = c
			in.collect(abi.MapHTTPCallResponseHeaders)
			nh, nb = len(in.kv), len(c.resp.Body())
		}
		in.callResp = c
		in.enterRoot(c.root)
		_, err := in.invoke(in.fn.httpCallResponse, uint64(c.root), uint64(c.id), uint64(nh), uint64(nb), 0)
		in.leave()
		in.callResp = nil
		if err != nil {
			in.vm.failed(in, err)
		}
	}
	in.mu.Unlock()
	fasthttp.ReleaseRequest(c.req)
	fasthttp.ReleaseResponse(c.resp)
}

// cancelCalls drops the answers of calls made by a context that is gone.
// Callers hold in.mu.
func (in *instance) cancelCalls(owner uint32) {
	for _, c := range in.calls {
		if c.owner == owner {
			c.canceled = true
		}
	}
}

// ticker drives proxy_on_tick for one root context.
type ticker struct {
	period time.Duration
	stop   chan struct{}
}

// setTick starts, changes or (with 0) stops the timer of a root context.
// Callers hold in.mu.
func (in *instance) setTick(root uint32, period time.Duration) {
	if t := in.ticks[root]; t != nil {
		if t.period == period {
			return
		}
		close(t.stop)
		delete(in.ticks, root)
	}
	if period <= 0 {
		return
	}
	t := &ticker{period: period, stop: make(chan struct{})}
	in.ticks[root] = t
	go in.runTicks(root, t)
}

func (in *instance) runTicks(root uint32, t *ticker) {
	tk := time.NewTicker(t.period)
	defer tk.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-in.closed:
			return
		case <-tk.C:
		}
		in.mu.Lock()
		if in.broken {
			in.mu.Unlock()
			return
		}
		in.enterRoot(root)
		_, err := in.invoke(in.fn.tick, uint64(root))
		in.leave()
		if err != nil {
			in.vm.failed(in, err)
		}
		in.mu.Unlock()
	}
}
