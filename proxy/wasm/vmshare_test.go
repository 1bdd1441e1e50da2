package wasm

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// sharing returns a plugin of module that runs in VM vmID with root_id
// rootID and configuration cfg.
func sharing(name, module, vmID, rootID, cfg string, mods ...func(*config.Plugin)) config.Plugin {
	return testPlugin(name, module, append([]func(*config.Plugin){func(p *config.Plugin) {
		p.VMID, p.RootID, p.Config = vmID, rootID, config.RawConfig(cfg)
	}}, mods...)...)
}

// header runs a request through f and returns the named request header
// (or, with resp set, response header) the guest set.
func header(t *testing.T, f filter.Factory, name string, resp bool, headers ...string) string {
	t.Helper()
	x := newExchange("http://example.com/", headers...)
	run(t, f, x)
	if resp {
		return string(x.Ctx.Response.Header.Peek(name))
	}
	return string(x.Ctx.Request.Header.Peek(name))
}

// TestVMShared checks Envoy's vm_id: two plugins naming one module and
// one vm_id run in one VM (one runtime, one pool of instances), each with
// its own root context, configuration, root_id and name, while a plugin
// without the vm_id gets a VM of its own.
func TestVMShared(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m,
		sharing("a", "features", "shared", "root-a", "one"),
		sharing("b", "features", "shared", "root-b", "two"),
		testPlugin("c", "features", func(p *config.Plugin) { p.Config = config.RawConfig("three") }),
	)
	a, b, c := set.plugins["a"], set.plugins["b"], set.plugins["c"]
	if a.vm != b.vm || a.vm == c.vm {
		t.Fatalf("VMs: a %p, b %p, c %p; want a and b sharing, c apart", a.vm, b.vm, c.vm)
	}
	if st := m.Stats(); st.Plugins != 3 || st.VMs != 2 || st.Instances != 2 {
		t.Fatalf("stats %+v, want 3 plugins in 2 VMs with one instance each", st)
	}
	in := a.vm.slots[0].cur.Load()
	if n := len(in.rootSet); n != 2 {
		t.Fatalf("the shared instance has %d root contexts, want 2", n)
	}
	for _, tc := range []struct {
		plugin, config, rootID, vmID string
	}{
		{"a", "one", "root-a", "shared"},
		{"b", "two", "root-b", "shared"},
		{"c", "three", "", "c"},
	} {
		f := factoryOf(t, set, tc.plugin)
		if got := header(t, f, "x-config", false); got != tc.config {
			t.Errorf("%s: x-config %q, want %q", tc.plugin, got, tc.config)
		}
		if got := header(t, f, "x-root-id", true); got != tc.rootID {
			t.Errorf("%s: x-root-id %q, want %q", tc.plugin, got, tc.rootID)
		}
		if got := header(t, f, "x-prop-value", false, "x-prop", "plugin_name"); got != tc.plugin {
			t.Errorf("%s: plugin_name %q", tc.plugin, got)
		}
		if got := header(t, f, "x-prop-value", false, "x-prop", "plugin_vm_id"); got != tc.vmID {
			t.Errorf("%s: plugin_vm_id %q, want %q", tc.plugin, got, tc.vmID)
		}
	}
	// A per-route configuration gets a root context of its own in the
	// shared VM too.
	f, err := set.Factory(config.FilterRef{Plugin: "b", Config: config.RawConfig("route")}, "route-b")
	if err != nil {
		t.Fatal(err)
	}
	if got := header(t, f, "x-config", false); got != "route" {
		t.Errorf("b on route-b: x-config %q", got)
	}
	if n := len(in.rootSet); n != 3 {
		t.Errorf("the shared instance has %d root contexts, want 3", n)
	}
}

// TestVMSharedReload checks that reloading one plugin of a shared VM
// replaces only its root context: the VM and its instance stay, the other
// plugin is the same object, and its request in flight finishes on it.
func TestVMSharedReload(t *testing.T) {
	m := newTestManager(t)
	set1 := prepare(t, m,
		sharing("a", "features", "shared", "", "one"),
		sharing("b", "features", "shared", "", "two"),
	)
	a1, b1 := set1.plugins["a"], set1.plugins["b"]
	in := a1.vm.slots[0].cur.Load()

	// A request of b, in flight across the reload.
	fb := factoryOf(t, set1, "b")
	x := newExchange("http://example.com/")
	s, err := fb.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.OnRequestHeaders(x, true); st != filter.Continue {
		t.Fatalf("b's request headers: %v", st)
	}

	set2 := prepare(t, m,
		sharing("a", "features", "shared", "", "three"),
		sharing("b", "features", "shared", "", "two"),
	)
	a2, b2 := set2.plugins["a"], set2.plugins["b"]
	if b2 != b1 {
		t.Fatal("the unchanged plugin b was not kept")
	}
	if a2 == a1 || a2.vm != a1.vm {
		t.Fatal("the changed plugin a was not restarted in the same VM")
	}
	if in.dead.Load() || a1.vm.slots[0].cur.Load() != in {
		t.Fatal("the reload replaced the shared instance")
	}
	waitFor(t, func() bool { return closed(a1) })
	in.mu.Lock()
	roots := len(in.rootSet)
	in.mu.Unlock()
	if roots != 2 {
		t.Errorf("%d root contexts after the old a closed, want 2", roots)
	}
	x.Ctx.Response.SetStatusCode(200)
	if st := s.OnResponseHeaders(x, false); st != filter.Continue {
		t.Fatalf("b's request in flight across the reload: %v", st)
	}
	if got := string(x.Ctx.Response.Header.Peek("x-seen-status")); got != "200" {
		t.Errorf("b's request in flight: x-seen-status %q", got)
	}
	s.OnLog(x)
	s.Done(x)
	if got := header(t, factoryOf(t, set2, "a"), "x-config", false); got != "three" {
		t.Errorf("a after the reload: x-config %q", got)
	}
	if got := header(t, factoryOf(t, set2, "b"), "x-config", false); got != "two" {
		t.Errorf("b after the reload: x-config %q", got)
	}
	// Dropping a from the configuration keeps the VM for b.
	set3 := prepare(t, m, sharing("b", "features", "shared", "", "two"))
	waitFor(t, func() bool { return closed(a2) })
	if got := header(t, factoryOf(t, set3, "b"), "x-config", false); got != "two" {
		t.Errorf("b alone: x-config %q", got)
	}
	if st := m.Stats(); st.VMs != 1 || st.Plugins != 1 {
		t.Errorf("stats %+v, want one plugin in one VM", st)
	}
}

// TestVMSharedFailure checks that when the shared instance traps, each
// plugin's requests fail as that plugin's failure policy says: the
// request that trapped it and the requests of both plugins in flight on
// it. The instance is replaced with both plugins' root contexts.
func TestVMSharedFailure(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m,
		sharing("open", "faulty", "shared", "", "", func(p *config.Plugin) { p.FailurePolicy = config.FailOpen; p.PoolSize = 1 }),
		sharing("closed", "faulty", "shared", "", "", func(p *config.Plugin) { p.PoolSize = 1 }),
	)
	fOpen, fClosed := factoryOf(t, set, "open"), factoryOf(t, set, "closed")
	v := set.plugins["open"].vm
	in := v.slots[0].cur.Load()

	// A request of each plugin, in flight on the instance.
	inflight := func(f filter.Factory) (filter.Stream, *filter.Exchange) {
		x := newExchange("http://example.com/")
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		if st := s.OnRequestHeaders(x, true); st != filter.Continue {
			t.Fatalf("request headers: %v", st)
		}
		if s.(*stream).in != in {
			t.Fatal("the request is not on the shared instance")
		}
		return s, x
	}
	sOpen, xOpen := inflight(fOpen)
	sClosed, xClosed := inflight(fClosed)

	// The closed plugin's request traps the instance: it fails closed.
	x := newExchange("http://example.com/", "x-fault", "trap")
	if st, _ := run(t, fClosed, x); st != filter.Stop || x.Ctx.Response.StatusCode() != 503 {
		t.Fatalf("trapping request of the fail_closed plugin: %v, %d", st, x.Ctx.Response.StatusCode())
	}
	if !in.dead.Load() {
		t.Fatal("the trapped instance was not discarded")
	}
	// The requests in flight on it fail as their own plugin says.
	xOpen.Ctx.Response.SetStatusCode(200)
	if st := sOpen.OnResponseHeaders(xOpen, false); st != filter.Continue || xOpen.Local() {
		t.Errorf("fail_open plugin's request in flight: %v, local %v", st, xOpen.Local())
	}
	xClosed.Ctx.Response.SetStatusCode(200)
	if st := sClosed.OnResponseHeaders(xClosed, false); st != filter.Stop || xClosed.Ctx.Response.StatusCode() != 503 {
		t.Errorf("fail_closed plugin's request in flight: %v, %d", st, xClosed.Ctx.Response.StatusCode())
	}
	for _, s := range []struct {
		s filter.Stream
		x *filter.Exchange
	}{{sOpen, xOpen}, {sClosed, xClosed}} {
		s.s.OnLog(s.x)
		s.s.Done(s.x)
	}

	// The replacement serves both plugins, and the fail_open plugin's
	// own trap lets its request through.
	waitFor(t, func() bool {
		n := v.slots[0].cur.Load()
		return n != nil && n != in && !n.dead.Load()
	})
	for _, f := range []filter.Factory{fOpen, fClosed} {
		if got := header(t, f, "x-faulty", false); got != "ok" {
			t.Errorf("%s after the replacement: x-faulty %q", f.Name(), got)
		}
	}
	x = newExchange("http://example.com/", "x-fault", "trap")
	if st, _ := run(t, fOpen, x); st != filter.Continue || x.Local() {
		t.Fatalf("trapping request of the fail_open plugin: %v, local %v", st, x.Local())
	}
}

// closed reports whether p has closed.
func closed(p *plugin) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// TestVMSharedMetrics checks that two plugins of one VM defining the same
// metric each count their own requests under their own name, that the
// VM's host metrics carry its vm_id, and that closing one plugin stops
// its timer and queue subscription while the other goes on.
func TestVMSharedMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newTestManager(t, withRegistry(reg))
	set := prepare(t, m,
		sharing("s1", "shared", "sv", "", ""),
		sharing("s2", "shared", "sv", "", ""),
	)
	for plugin, n := range map[string]int{"s1": 3, "s2": 2} {
		f := factoryOf(t, set, plugin)
		for range n {
			run(t, f, newExchange("http://example.com/"))
		}
	}
	for plugin, want := range map[string]float64{"s1": 3, "s2": 2} {
		if c := gather(t, reg, "wasm_requests", plugin); c == nil || c.GetCounter().GetValue() != want {
			t.Errorf("wasm_requests{plugin=%q} = %v, want %v", plugin, c, want)
		}
	}
	if g := gather(t, reg, "wasmgate_wasm_instances", "sv"); g == nil || g.GetGauge().GetValue() != 1 {
		t.Errorf("wasmgate_wasm_instances{plugin=\"sv\"} = %v, want 1", g)
	}
	in := set.plugins["s1"].vm.slots[0].cur.Load()
	in.mu.Lock()
	ticks := len(in.ticks)
	in.mu.Unlock()
	if ticks != 2 {
		t.Fatalf("%d root contexts tick, want 2", ticks)
	}

	s2 := set.plugins["s2"]
	set2 := prepare(t, m, sharing("s1", "shared", "sv", "", ""))
	waitFor(t, func() bool { return closed(s2) })
	in.mu.Lock()
	ticks = len(in.ticks)
	in.mu.Unlock()
	if ticks != 1 {
		t.Errorf("%d root contexts tick after s2 closed, want 1", ticks)
	}
	in.mu.Lock()
	m.shared.mu.Lock()
	for _, q := range m.shared.queues {
		for _, sub := range q.subs {
			if sub.in == in && in.rootSet[sub.root] == nil {
				t.Errorf("queue %d still tells deleted root context %d", q.id, sub.root)
			}
		}
	}
	m.shared.mu.Unlock()
	in.mu.Unlock()
	run(t, factoryOf(t, set2, "s1"), newExchange("http://example.com/"))
	if c := gather(t, reg, "wasm_requests", "s1"); c == nil || c.GetCounter().GetValue() != 4 {
		t.Errorf("wasm_requests{plugin=\"s1\"} = %v after s2 closed, want 4", c)
	}
}
