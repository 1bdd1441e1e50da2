package wasm

import (
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

func TestHeaders(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("features", "features", func(p *config.Plugin) {
		p.Config = config.RawConfig("cfg-1")
		p.RootID = "root-a"
	}))
	f := factoryOf(t, set, "features")

	x := newExchange("http://example.com/a?b=c", "x-rewrite", "/rewritten", "x-authority", "other.example",
		"x-remove", "x-gone", "x-gone", "1")
	req, resp := run(t, f, x)
	if req != filter.Continue || resp != filter.Continue {
		t.Fatalf("statuses = %v, %v", req, resp)
	}
	h := &x.Ctx.Request.Header
	for name, want := range map[string]string{
		"x-config": "cfg-1",
		"x-gone":   "",
	} {
		if got := string(h.Peek(name)); got != want {
			t.Errorf("request header %s = %q, want %q", name, got, want)
		}
	}
	if got := string(x.Ctx.Request.RequestURI()); got != "/rewritten" {
		t.Errorf(":path rewritten to %q", got)
	}
	if got := string(h.Host()); got != "other.example" {
		t.Errorf(":authority rewritten to %q", got)
	}
	rh := &x.Ctx.Response.Header
	if got := string(rh.Peek("x-seen-status")); got != "200" {
		t.Errorf("x-seen-status = %q", got)
	}
	if got := string(rh.Peek("x-root-id")); got != "root-a" {
		t.Errorf("x-root-id = %q", got)
	}
	if got := string(x.Ctx.Response.Body()); got != "hello-end" {
		t.Errorf("response body = %q", got)
	}
	if !strings.Contains(string(h.Peek("x-header-count")), "") {
		t.Error("no header count")
	}
}
