// Command tcpfilter is a network (L4) filter written with the proxy-wasm
// Go SDK, for the tests of TCP listeners. It speaks of lines:
//
//   - the client's bytes pass upstream a whole line at a time: a partial
//     line is held (ActionPause) until the rest arrives;
//   - "secret" in them is replaced by "******";
//   - a line "DENY" closes the connection (proxy_close_stream) before it
//     reaches the upstream;
//   - a line "HOLD" is held until the next tick, which rewrites the held
//     bytes to "HELD BY TICK" and continues the connection, both from
//     outside any callback (proxy_set_buffer_bytes on the held
//     DOWNSTREAM_DATA, as Envoy keeps it, and proxy_continue_stream);
//   - a line "PROPS" is replaced by the properties the filter sees:
//     "listener=L cluster=C region=R source=ADDR upstream=ADDR mtls=B";
//   - a line "PANIC" panics in the guest (the plugin fails);
//   - the upstream's bytes reach the client upper-cased.
//
// Counters: connections (on_new_connection), closes_remote and
// closes_local (on_downstream_connection_close by peer), upstream_closes
// (on_upstream_connection_close) and done (on_log).
package main

import (
	"bytes"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext {
	return &plugin{
		held:           map[uint32]bool{},
		connections:    proxywasm.DefineCounterMetric("connections"),
		closesRemote:   proxywasm.DefineCounterMetric("closes_remote"),
		closesLocal:    proxywasm.DefineCounterMetric("closes_local"),
		upstreamCloses: proxywasm.DefineCounterMetric("upstream_closes"),
		done:           proxywasm.DefineCounterMetric("done"),
	}
}

type plugin struct {
	types.DefaultPluginContext
	held map[uint32]bool // connections a HOLD line holds until the tick

	connections, closesRemote, closesLocal, upstreamCloses, done proxywasm.MetricCounter
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	if err := proxywasm.SetTickPeriodMilliSeconds(20); err != nil {
		proxywasm.LogCriticalf("tick: %v", err)
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnTick() {
	for id := range p.held {
		delete(p.held, id)
		if err := proxywasm.SetEffectiveContext(id); err != nil {
			continue
		}
		data, err := proxywasm.GetDownstreamData(0, 1<<20)
		if err != nil || !bytes.HasPrefix(data, []byte("HOLD\n")) {
			proxywasm.LogCriticalf("held bytes: %q, %v", data, err)
		} else if err := proxywasm.ReplaceDownstreamData(append([]byte("HELD BY TICK\n"), data[len("HOLD\n"):]...)); err != nil {
			proxywasm.LogCriticalf("replace held bytes: %v", err)
		}
		if err := proxywasm.ContinueTcpStream(); err != nil {
			proxywasm.LogCriticalf("continue: %v", err)
		}
	}
}

func (p *plugin) NewTcpContext(id uint32) types.TcpContext { return &conn{p: p, id: id} }

type conn struct {
	types.DefaultTcpContext
	p  *plugin
	id uint32
	// released: the HOLD line at the start of the bytes was let go.
	released bool
}

func (c *conn) OnNewConnection() types.Action {
	c.p.connections.Increment(1)
	return types.ActionContinue
}

func (c *conn) OnDownstreamData(size int, end bool) types.Action {
	if size == 0 {
		return types.ActionContinue
	}
	data, err := proxywasm.GetDownstreamData(0, size)
	if err != nil {
		proxywasm.LogCriticalf("downstream data: %v", err)
		return types.ActionContinue
	}
	if !end && data[len(data)-1] != '\n' {
		return types.ActionPause // wait for the rest of the line
	}
	switch {
	case bytes.HasPrefix(data, []byte("PANIC\n")):
		panic("tcpfilter: asked to panic")
	case bytes.HasPrefix(data, []byte("DENY\n")):
		if err := proxywasm.CloseDownstream(); err != nil {
			proxywasm.LogCriticalf("close: %v", err)
		}
		return types.ActionPause
	case bytes.HasPrefix(data, []byte("HOLD\n")) && !c.released:
		c.released = true
		c.p.held[c.id] = true
		return types.ActionPause
	case bytes.HasPrefix(data, []byte("PROPS\n")):
		return c.replace(c.props() + "\n")
	case bytes.Contains(data, []byte("secret")):
		return c.replace(strings.ReplaceAll(string(data), "secret", "******"))
	}
	return types.ActionContinue
}

func (c *conn) replace(s string) types.Action {
	if err := proxywasm.ReplaceDownstreamData([]byte(s)); err != nil {
		proxywasm.LogCriticalf("replace: %v", err)
	}
	return types.ActionContinue
}

func (c *conn) props() string {
	get := func(path ...string) string {
		v, err := proxywasm.GetProperty(path)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return string(v)
	}
	mtls := "(none)"
	if v, err := proxywasm.GetProperty([]string{"connection", "mtls"}); err == nil && len(v) == 1 {
		mtls = map[byte]string{0: "false", 1: "true"}[v[0]]
	}
	_, pathErr := proxywasm.GetProperty([]string{"request", "path"})
	_, hdrErr := proxywasm.GetHttpRequestHeaders()
	return "listener=" + get("listener_name") +
		" cluster=" + get("cluster_name") +
		" region=" + get("cluster_metadata", "filter_metadata", "location", "region") +
		" source=" + get("source", "address") +
		" upstream=" + get("upstream", "address") +
		" mtls=" + mtls +
		" request_path=" + errString(pathErr) +
		" headers=" + errString(hdrErr)
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func (c *conn) OnUpstreamData(size int, end bool) types.Action {
	if size == 0 {
		return types.ActionContinue
	}
	data, err := proxywasm.GetUpstreamData(0, size)
	if err != nil {
		proxywasm.LogCriticalf("upstream data: %v", err)
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceUpstreamData(bytes.ToUpper(data)); err != nil {
		proxywasm.LogCriticalf("replace upstream: %v", err)
	}
	return types.ActionContinue
}

func (c *conn) OnDownstreamClose(peer types.PeerType) {
	switch peer {
	case types.PeerTypeRemote:
		c.p.closesRemote.Increment(1)
	case types.PeerTypeLocal:
		c.p.closesLocal.Increment(1)
	}
}

func (c *conn) OnUpstreamClose(types.PeerType) { c.p.upstreamCloses.Increment(1) }

func (c *conn) OnStreamDone() {
	delete(c.p.held, c.id)
	c.p.done.Increment(1)
}
