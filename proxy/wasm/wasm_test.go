package wasm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

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

func TestLocalResponse(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("features", "features"))
	f := factoryOf(t, set, "features")
	x := newExchange("http://example.com/", "x-local", "403")
	req, _ := run(t, f, x)
	if req != filter.Stop || !x.Local() {
		t.Fatalf("status %v, local %v", req, x.Local())
	}
	r := &x.Ctx.Response
	if r.StatusCode() != 403 || string(r.Body()) != "local" || string(r.Header.Peek("x-local")) != "yes" {
		t.Fatalf("local response %d %q %q", r.StatusCode(), r.Body(), r.Header.Peek("x-local"))
	}
	if x.Flags&filter.FlagLocalResponse == 0 {
		t.Error("no local response flag")
	}
}

func TestBodies(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("features", "features", func(p *config.Plugin) { p.MaxBodyBytes = 64 }))
	f := factoryOf(t, set, "features")

	t.Run("buffered", func(t *testing.T) {
		x := newExchange("http://example.com/", "x-body", "buffer")
		x.Ctx.Request.Header.SetContentLength(11)
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Done(x)
		if st := s.OnRequestHeaders(x, false); st != filter.Continue {
			t.Fatalf("headers: %v", st)
		}
		body := filter.Body{B: []byte("hello ")}
		if st := s.OnRequestBody(x, &body, false); st != filter.Buffer {
			t.Fatalf("first chunk: %v, want buffer", st)
		}
		body.B = append(body.B, "world"...)
		if st := s.OnRequestBody(x, &body, true); st != filter.Continue {
			t.Fatalf("last chunk: %v", st)
		}
		if string(body.B) != "HELLO WORLD" {
			t.Fatalf("body = %q", body.B)
		}
		if n := x.Ctx.Request.Header.ContentLength(); n != 11 {
			t.Fatalf("content-length = %d", n)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		x := newExchange("http://example.com/", "x-body", "chunk")
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Done(x)
		s.OnRequestHeaders(x, false)
		var got []string
		for i, c := range []string{"a", "bb", "ccc"} {
			body := filter.Body{B: []byte(c)}
			if st := s.OnRequestBody(x, &body, i == 2); st != filter.Continue {
				t.Fatalf("chunk %d: %v", i, st)
			}
			got = append(got, string(body.B))
		}
		if strings.Join(got, ",") != "a|,bb|,ccc|" {
			t.Fatalf("chunks = %v", got)
		}
	})
	t.Run("too large", func(t *testing.T) {
		x := newExchange("http://example.com/", "x-body", "buffer")
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Done(x)
		s.OnRequestHeaders(x, false)
		body := filter.Body{B: make([]byte, 100)}
		if st := s.OnRequestBody(x, &body, false); st != filter.Stop {
			t.Fatalf("status %v, want stop", st)
		}
		if x.Ctx.Response.StatusCode() != 413 {
			t.Fatalf("status code %d", x.Ctx.Response.StatusCode())
		}
	})
}

func TestHTTPCall(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m,
		testPlugin("auth", "httpcall", func(p *config.Plugin) {
			p.Config = config.RawConfig("auth")
			p.AllowedClusters = []string{"auth", "down"}
		}),
		testPlugin("down", "httpcall", func(p *config.Plugin) {
			p.Config = config.RawConfig("down")
			p.AllowedClusters = []string{"auth", "down"}
		}),
		testPlugin("sneaky", "httpcall", func(p *config.Plugin) {
			p.Config = config.RawConfig("auth")
			p.AllowedClusters = []string{"down"}
		}),
	)
	tests := []struct {
		plugin, user string
		status       int
		header       string
		req          filter.Status
	}{
		{"auth", "alice", 200, "alice-ok", filter.Pause},
		{"auth", "bob", 403, "", filter.Pause},
		{"down", "alice", 503, "", filter.Pause},
		{"sneaky", "alice", 500, "", filter.Stop},
	}
	for _, tt := range tests {
		t.Run(tt.plugin+"/"+tt.user, func(t *testing.T) {
			x := newExchange("http://example.com/doc", "x-user", tt.user)
			req, _ := run(t, factoryOf(t, set, tt.plugin), x)
			if req != tt.req {
				t.Errorf("request status %v, want %v", req, tt.req)
			}
			if got := x.Ctx.Response.StatusCode(); got != tt.status {
				t.Errorf("status %d, want %d (body %q)", got, tt.status, x.Ctx.Response.Body())
			}
			if got := string(x.Ctx.Request.Header.Peek("x-auth")); got != tt.header {
				t.Errorf("x-auth = %q, want %q", got, tt.header)
			}
		})
	}
}

func TestPerRouteConfig(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("features", "features", func(p *config.Plugin) {
		p.Config = config.RawConfig("base")
	}))
	routeF, err := set.Factory(config.FilterRef{Plugin: "features", Config: config.RawConfig("override")}, "r2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    filter.Factory
		want string
	}{{factoryOf(t, set, "features"), "base"}, {routeF, "override"}} {
		x := newExchange("http://example.com/")
		run(t, tc.f, x)
		if got := string(x.Ctx.Request.Header.Peek("x-config")); got != tc.want {
			t.Errorf("x-config = %q, want %q", got, tc.want)
		}
	}
	if _, err := set.Factory(config.FilterRef{Plugin: "features", Config: config.RawConfig("reject")}, "r3"); err == nil {
		t.Error("a configuration the plugin rejects was accepted")
	}
	if _, err := set.Factory(config.FilterRef{Plugin: "nope"}, "r3"); err == nil {
		t.Error("unknown plugin accepted")
	}
}

func TestLoadErrors(t *testing.T) {
	m := newTestManager(t)
	tests := []struct {
		name string
		p    config.Plugin
		want string
	}{
		{"no abi marker", testPlugin("noabi", "noabi"), "proxy_abi_version_0_2_0"},
		{"missing file", testPlugin("gone", "does-not-exist"), "reading module"},
		{"digest mismatch", testPlugin("bad", "minimal", func(p *config.Plugin) {
			p.SHA256 = strings.Repeat("0", 64)
		}), "digest"},
		{"rejected configuration", testPlugin("features", "features", func(p *config.Plugin) {
			p.Config = config.RawConfig("reject")
		}), "rejected the plugin configuration"},
		{"blob without store", config.Plugin{Name: "blob", SHA256: strings.Repeat("a", 64)}, "no blob store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Prepare(t.Context(), []config.Plugin{tt.p})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.p.Name) {
				t.Fatalf("error %v, want one naming %q and saying %q", err, tt.p.Name, tt.want)
			}
		})
	}
}

func TestBlobs(t *testing.T) {
	code, err := os.ReadFile("testdata/minimal.wasm")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(code)
	digest := hex.EncodeToString(sum[:])
	m := newTestManager(t, func(o *Options) {
		o.Blobs = func(s string) ([]byte, error) {
			if s != digest {
				return nil, errors.New("unknown blob")
			}
			return code, nil
		}
	})
	set := prepare(t, m, config.Plugin{Name: "blob", SHA256: digest, PoolSize: 1, FailurePolicy: config.FailClosed})
	x := newExchange("http://example.com/abc")
	run(t, factoryOf(t, set, "blob"), x)
	if got := string(x.Ctx.Request.Header.Peek("x-wat")); got != "0.2.1" {
		t.Fatalf("x-wat = %q", got)
	}
}

// TestHandWrittenModule runs a module written in WAT: ABI marker 0_2_1,
// _start, malloc. Its response callback traps for /trap.
func TestHandWrittenModule(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("wat", "minimal"))
	f := factoryOf(t, set, "wat")
	x := newExchange("http://example.com/abcdef")
	if req, resp := run(t, f, x); req != filter.Continue || resp != filter.Continue {
		t.Fatalf("statuses %v %v", req, resp)
	}
	h := &x.Ctx.Request.Header
	if string(h.Peek("x-wat")) != "0.2.1" || string(h.Peek("x-wat-path")) != "/abcdef" {
		t.Fatalf("headers x-wat=%q x-wat-path=%q", h.Peek("x-wat"), h.Peek("x-wat-path"))
	}

	x = newExchange("http://example.com/trap")
	_, resp := run(t, f, x)
	if resp != filter.Stop || x.Ctx.Response.StatusCode() != 503 || x.Flags&filter.FlagFilterFailed == 0 {
		t.Fatalf("trap: status %v, code %d, flags %v", resp, x.Ctx.Response.StatusCode(), x.Flags)
	}
	waitFor(t, func() bool {
		x := newExchange("http://example.com/abcdef")
		_, resp := run(t, f, x)
		return resp == filter.Continue
	})
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRouteCacheCleared checks that a stream asks for its route to be
// chosen again after its guest changed the request headers, as Envoy
// clears the route cache then, and not otherwise.
func TestRouteCacheCleared(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("features", "features"))
	f := factoryOf(t, set, "features")
	for _, tt := range []struct {
		headers []string
		want    bool
	}{
		{nil, true}, // features adds x-config to every request
		{[]string{"x-rewrite", "/elsewhere"}, true},
	} {
		x := newExchange("http://example.com/", tt.headers...)
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		s.OnRequestHeaders(x, true)
		got := s.(interface{ RouteCacheCleared() bool }).RouteCacheCleared()
		s.OnLog(x)
		s.Done(x)
		if got != tt.want {
			t.Errorf("headers %v: RouteCacheCleared = %v, want %v", tt.headers, got, tt.want)
		}
	}
	// Before the guest changed anything, the route stands.
	x := newExchange("http://example.com/")
	s, err := f.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	if s.(interface{ RouteCacheCleared() bool }).RouteCacheCleared() {
		t.Error("a new stream asks for a new route")
	}
	s.Done(x)
}
