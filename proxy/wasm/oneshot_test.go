package wasm

import (
	"strconv"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestFirstRequestHeaders checks wasmgate_on_request_headers, the Go
// SDK's call that creates a request's context with its request headers
// callback and, for a filter that needs nothing after them, ends it: such
// a request costs one call into the guest, and none at its end. A request
// the filter holds (an HTTP call) or answers keeps its context until it
// is done, and its callbacks still find it while other requests come and
// go; a filter that logs is called for the log, even for a request whose
// headers it never saw (an earlier filter answered).
func TestFirstRequestHeaders(t *testing.T) {
	up := testUpstreams(t)
	m := newTestManager(t, func(o *Options) { o.Upstreams = up })
	set := prepare(t, m,
		testPlugin("oneshot", "oneshot", func(p *config.Plugin) {
			p.PoolSize = 1
			p.AllowedClusters = []string{"auth"}
		}),
		testPlugin("logged", "oneshot", func(p *config.Plugin) {
			p.PoolSize = 1
			p.Config = config.RawConfig("log")
		}),
	)
	calls := func(plugin string) uint64 {
		in := set.plugins[plugin].vm.slots[0].cur.Load()
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.invocations
	}
	f := factoryOf(t, set, "oneshot")
	if set.plugins["oneshot"].vm.slots[0].cur.Load().fn.firstRequestHeaders == nil {
		t.Fatal("the SDK's module does not export wasmgate_on_request_headers")
	}

	seen := 0
	through := func(path string) *filter.Exchange {
		t.Helper()
		seen++
		x := newExchange("http://example.com" + path)
		run(t, f, x)
		return x
	}
	before := calls("oneshot")
	for range 3 {
		x := through("/a")
		if got, want := string(x.Ctx.Request.Header.Peek("x-oneshot")), strconv.Itoa(seen); got != want {
			t.Fatalf("x-oneshot %q, want %q", got, want)
		}
	}
	if n := calls("oneshot") - before; n != 3 {
		t.Errorf("3 requests that went on made %d calls into the guest, want 3", n)
	}

	// Held by an HTTP call while other requests run on the instance.
	x := newExchange("http://example.com/call", "x-user", "alice")
	s, err := f.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	seen++
	st := s.OnRequestHeaders(x, true)
	for range 2 {
		through("/b")
	}
	if st != filter.Pause {
		t.Fatalf("/call: %v, want a pause", st)
	}
	if !x.Wait(5 * time.Second) {
		t.Fatal("/call was never resumed")
	}
	if got := string(x.Ctx.Request.Header.Peek("x-auth")); got != "alice-ok" {
		t.Errorf("x-auth %q after the call, want alice-ok", got)
	}
	s.OnLog(x)
	s.Done(x)
	if x := through("/c"); string(x.Ctx.Request.Header.Peek("x-oneshot")) != strconv.Itoa(seen) {
		t.Errorf("after the held request, x-oneshot %q, want %d", x.Ctx.Request.Header.Peek("x-oneshot"), seen)
	}

	// Answered by the filter: the context lives until the request is done.
	before = calls("oneshot")
	x = through("/deny")
	if !x.Local() || x.Ctx.Response.StatusCode() != 403 {
		t.Errorf("/deny: local %v, status %d", x.Local(), x.Ctx.Response.StatusCode())
	}
	if n := calls("oneshot") - before; n != 2 {
		t.Errorf("an answered request made %d calls into the guest, want 2 (headers, delete)", n)
	}

	// A request whose headers never reached the filter: nothing to call.
	before = calls("oneshot")
	y := newExchange("http://example.com/d")
	s, err = f.NewStream(y)
	if err != nil {
		t.Fatal(err)
	}
	s.OnLog(y)
	s.Done(y)
	if n := calls("oneshot") - before; n != 0 {
		t.Errorf("a request the filter never saw made %d calls into the guest, want 0", n)
	}

	// The filter that logs: headers, log, delete; and for a request it
	// never saw, create, log, delete.
	g := factoryOf(t, set, "logged")
	before = calls("logged")
	run(t, g, newExchange("http://example.com/e"))
	if n := calls("logged") - before; n != 3 {
		t.Errorf("a logged request made %d calls into the guest, want 3", n)
	}
	before = calls("logged")
	y = newExchange("http://example.com/f")
	if s, err = g.NewStream(y); err != nil {
		t.Fatal(err)
	}
	s.OnLog(y)
	s.Done(y)
	if n := calls("logged") - before; n != 3 {
		t.Errorf("a logged request the filter never saw made %d calls into the guest, want 3 (create, log, delete)", n)
	}
	for _, p := range []string{"oneshot", "logged"} {
		in := set.plugins[p].vm.slots[0].cur.Load()
		in.mu.Lock()
		if n := len(in.streams); n != 0 {
			t.Errorf("%s: %d streams left open", p, n)
		}
		in.mu.Unlock()
	}
}
