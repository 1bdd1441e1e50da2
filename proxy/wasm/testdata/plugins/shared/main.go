// Command shared exercises the host's process-wide services: metrics,
// shared data with compare-and-swap, shared queues and tick timers.
//
// Each request increments the counter "requests", sets the gauge
// "inflight_hint" and records its path length in the histogram
// "path_len"; increments the shared key "hits" with a CAS loop and
// returns its new value in the response header x-hits; and enqueues its
// path on the queue "paths". Whichever root context is told the queue is
// ready dequeues and adds the item count to the shared key "dequeued".
// Every tick (10ms) adds one to the shared key "ticks". The response
// header x-metric carries the counter's value as read back by the guest.
package main

import (
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	requests proxywasm.MetricCounter
	gauge    proxywasm.MetricGauge
	hist     proxywasm.MetricHistogram
	queue    uint32
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	p.requests = proxywasm.DefineCounterMetric("requests")
	p.gauge = proxywasm.DefineGaugeMetric("inflight_hint")
	p.hist = proxywasm.DefineHistogramMetric("path_len")
	q, err := proxywasm.RegisterSharedQueue("paths")
	if err != nil {
		proxywasm.LogErrorf("registering queue: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.queue = q
	if err := proxywasm.SetTickPeriodMilliSeconds(10); err != nil {
		proxywasm.LogErrorf("setting tick: %v", err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnTick() { add("ticks", 1) }

func (p *plugin) OnQueueReady(id uint32) {
	n := 0
	for {
		if _, err := proxywasm.DequeueSharedQueue(id); err != nil {
			break
		}
		n++
	}
	if n > 0 {
		add("dequeued", n)
	}
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &stream{p: p} }

type stream struct {
	types.DefaultHttpContext
	p    *plugin
	hits int
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	s.p.requests.Increment(1)
	s.p.gauge.Add(2)
	s.p.gauge.Add(-1)
	s.p.hist.Record(uint64(len(path)))
	s.hits = add("hits", 1)
	q, err := proxywasm.ResolveSharedQueue("", "paths")
	if err != nil || q != s.p.queue {
		proxywasm.LogErrorf("resolving queue: %v (%d, want %d)", err, q, s.p.queue)
	}
	if err := proxywasm.EnqueueSharedQueue(q, []byte(path)); err != nil {
		proxywasm.LogErrorf("enqueue: %v", err)
	}
	return types.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpResponseHeader("x-hits", strconv.Itoa(s.hits))
	_ = proxywasm.AddHttpResponseHeader("x-metric", strconv.FormatUint(s.p.requests.Value(), 10))
	return types.ActionContinue
}

// add increments a decimal number held in shared data, retrying on a CAS
// mismatch, and returns the new value.
func add(key string, delta int) int {
	for {
		v, cas, err := proxywasm.GetSharedData(key)
		n := 0
		if err == nil {
			n, _ = strconv.Atoi(string(v))
		} else if err != types.ErrorStatusNotFound {
			proxywasm.LogErrorf("get %s: %v", key, err)
			return -1
		}
		n += delta
		err = proxywasm.SetSharedData(key, []byte(strconv.Itoa(n)), cas)
		if err == nil {
			return n
		}
		if err != types.ErrorStatusCasMismatch {
			proxywasm.LogErrorf("set %s: %v", key, err)
			return -1
		}
	}
}
