package proxy_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const reloadConfig = `
admin: {address: "off"}
listeners:
{{listeners}}
clusters:
  - {name: a, endpoints: [{address: "{{a}}"}]}
  - {name: b, endpoints: [{address: "{{b}}"}]}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {match: {prefix: /b}, cluster: b}
      - {match: {prefix: /}, cluster: {{default}}}
`

func TestReloadKeepsPools(t *testing.T) {
	ups, v := startEchoes(t, "a", "b")
	v["listeners"] = `  - {name: main, address: "127.0.0.1:0"}`
	v["default"] = "a"
	e := newEnv(t, reloadConfig, v)
	for i := 0; i < 10; i++ {
		e.get(t, "", "/").echo(t)
		e.get(t, "", "/b").echo(t)
	}
	// Routes change, clusters do not; then b's cluster changes its
	// balancing but keeps its endpoint.
	changes := []struct{ name, config string }{
		{"routes changed", strings.Replace(reloadConfig, "{match: {prefix: /b}, cluster: b}", "{match: {prefix: /b}, cluster: b, timeout: 5s}", 1)},
		{"default changed", reloadConfig},
		{"cluster settings changed", strings.Replace(reloadConfig, `{name: b, endpoints`, `{name: b, lb_policy: random, endpoints`, 1)},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			e.apply(t, c.config, v)
			for i := 0; i < 10; i++ {
				if got := e.get(t, "", "/").echo(t).Instance; got != "a" {
					t.Fatalf("/ answered by %s", got)
				}
				e.get(t, "", "/b").echo(t)
			}
			if a, b := ups["a"].Accepted(), ups["b"].Accepted(); a != 1 || b != 1 {
				t.Errorf("upstreams accepted %d and %d connections over reloads, want 1 each", a, b)
			}
			if d := e.dials.Load(); d != 1 {
				t.Errorf("the client dialed %d times, want 1: the downstream connection survives reloads", d)
			}
		})
	}
	t.Run("versions count up", func(t *testing.T) {
		if v := e.srv.Snapshot().Version; v != "4" {
			t.Errorf("version %q after three reloads, want 4", v)
		}
	})
}

func TestReloadListeners(t *testing.T) {
	_, v := startEchoes(t, "a", "b")
	v["default"] = "a"
	v["listeners"] = `  - {name: main, address: "127.0.0.1:0"}`
	e := newEnv(t, reloadConfig, v)
	mainAddr := e.addr(t, "main")

	v["listeners"] = `  - {name: main, address: "127.0.0.1:0"}
  - {name: extra, address: "127.0.0.1:0"}`
	e.apply(t, reloadConfig, v)
	extraAddr := e.addr(t, "extra")
	if extraAddr == mainAddr {
		t.Fatal("the added listener shares main's address")
	}
	if e.addr(t, "main") != mainAddr {
		t.Errorf("main moved from %s to %s though it did not change", mainAddr, e.addr(t, "main"))
	}
	if got := e.do(t, request{listener: "extra", path: "/"}).echo(t).Instance; got != "a" {
		t.Errorf("the added listener: instance %s", got)
	}
	e.get(t, "", "/").echo(t)

	// An idle keep-alive connection to the listener about to go.
	idle := dialRaw(t, extraAddr)
	if resp, _ := idle.roundTrip(t, "GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("the added listener: %d", resp.StatusCode)
	}

	v["listeners"] = `  - {name: main, address: "127.0.0.1:0"}`
	e.apply(t, reloadConfig, v)
	if e.srv.Addr("extra") != nil {
		t.Error("the removed listener still has an address")
	}
	eventually(t, 5*time.Second, "the removed listener refuses connections", func() bool {
		c, err := net.DialTimeout("tcp", extraAddr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	_ = idle.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.br.ReadByte(); err == nil {
		t.Error("an idle connection to the removed listener got bytes instead of closing")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("an idle connection to the removed listener stayed open")
	}
	if got := e.get(t, "", "/").echo(t).Instance; got != "a" {
		t.Errorf("main after the removal: %s", got)
	}
}

func TestReloadRejected(t *testing.T) {
	_, v := startEchoes(t, "a", "b")
	v["default"] = "a"
	v["listeners"] = `  - {name: main, address: "127.0.0.1:0"}`
	e := newEnv(t, reloadConfig, v)
	// A listener that cannot bind fails the whole reload.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad := parse(t, reloadConfig, vars{"a": v["a"], "b": v["b"], "default": "b",
		"listeners": `  - {name: main, address: "127.0.0.1:0"}
  - {name: clash, address: "` + taken.Addr().String() + `"}`})
	if err := e.srv.Apply(context.Background(), bad, ""); err == nil {
		t.Fatal("a listener on a taken address was accepted")
	}
	if got := e.get(t, "", "/").echo(t).Instance; got != "a" {
		t.Errorf("after a rejected reload / went to %s, want the old config's a", got)
	}
	if v := e.srv.Snapshot().Version; v != "1" {
		t.Errorf("version %s after a rejected reload", v)
	}
	_, metrics := e.adminGet(t, "/metrics")
	for _, want := range []string{`wasmgate_config_reloads_total{result="failure"} 1`, "wasmgate_config_last_reload_success 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, err := http.Get(e.adminURL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/ready after a rejected reload: %d", resp.StatusCode)
	}
}
