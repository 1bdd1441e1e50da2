package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// TestTelemetryReload changes the telemetry section of a running proxy's
// configuration: a sink added for flows starts recording the connections
// of the kept listener while the unchanged access sink goes on; a
// telemetry section that does not validate, or whose sink cannot be
// built, is refused with its field path and the running sinks stay.
func TestTelemetryReload(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer up.Close()
	dir := t.TempDir()
	access, flows := filepath.Join(dir, "access.jsonl"), filepath.Join(dir, "flows.jsonl")
	pipe, err := telemetry.New(nil, telemetry.WithFlushEvery(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Telemetry: pipe})
	defer srv.Shutdown(context.Background())
	const base = `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: up, endpoints: [{address: "{{up}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{name: all, match: {prefix: /}, cluster: up}]
telemetry:
  sinks:
    - {name: access, type: file, file: {path: "{{access}}"}}
`
	v := vars{"up": strings.TrimPrefix(up.URL, "http://"), "access": access, "flows": flows, "ca": filepath.Join(dir, "missing.pem")}
	apply := func(extra string) error {
		return srv.Apply(context.Background(), parse(t, base+extra, v), "")
	}
	get := func() {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + srv.Addr("main").String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	records := func(file, kind string) int {
		data, _ := os.ReadFile(file)
		n := 0
		for line := range bytes.Lines(data) {
			var rec struct{ Kind string }
			if err := json.Unmarshal(line, &rec); err != nil {
				t.Fatalf("%s: %q: %v", file, line, err)
			}
			if rec.Kind == kind {
				n++
			}
		}
		return n
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	if err := apply("  access: [access]\n"); err != nil {
		t.Fatal(err)
	}
	get()
	wait("the first access record", func() bool { return records(access, "access") == 1 })

	if err := apply(`    - {name: flows, type: file, file: {path: "{{flows}}"}}
  access: [access]
  flow: [flows]
`); err != nil {
		t.Fatal(err)
	}
	get()
	wait("the second access record and a flow record", func() bool {
		return records(access, "access") == 2 && records(flows, "flow") == 1
	})

	for _, bad := range []struct{ extra, want string }{
		{`    - {name: siem, type: syslog, syslog: {network: pigeon, address: "127.0.0.1:514"}}
  access: [access, siem]
`, "telemetry.sinks[1].syslog.network"},
		{`    - {name: siem, type: syslog, syslog: {network: tls, address: "127.0.0.1:6514", tls: {ca_file: "{{ca}}"}}}
  access: [access, siem]
`, "telemetry.sinks[1] (siem): tls.ca_file"},
		{"  access: [access, nowhere]\n", "telemetry.access[1]"},
	} {
		if err := srv.Apply(context.Background(), parseLoose(t, base+bad.extra, v), ""); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("bad telemetry section: %v, want an error naming %s", err, bad.want)
		}
	}
	get()
	wait("access and flow records after the refused changes", func() bool {
		return records(access, "access") == 3 && records(flows, "flow") == 2
	})
	if d := pipe.Dropped(); d != 0 {
		t.Errorf("%d records dropped", d)
	}
}

// parseLoose renders and decodes a configuration without validating it,
// so that Apply sees what is wrong with it.
func parseLoose(t testing.TB, yaml string, v vars) *config.Config {
	t.Helper()
	cfg, err := config.Decode([]byte(render(yaml, v)), t.Name()+".yaml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Normalize()
	return cfg
}

// TestTracingAndPushReload changes the tracing and metric push settings of
// a running proxy: spans and metrics go to the new receiver from the
// change on, the replaced exporter sends what it held, a section removed
// stops them, and settings whose exporter cannot be built are refused
// with their field path while the running ones go on.
func TestTracingAndPushReload(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer up.Close()
	receiver := func() (*otlpreceiver.Receiver, string) {
		rcv := otlpreceiver.New()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := rcv.ServeGRPC(l)
		t.Cleanup(g.Stop)
		return rcv, l.Addr().String()
	}
	a, aAddr := receiver()
	b, bAddr := receiver()
	srv := proxy.NewServer(proxy.Options{Hostname: "reload-test"})
	defer srv.Shutdown(context.Background())
	const base = `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: up, endpoints: [{address: "{{up}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{name: all, match: {prefix: /}, cluster: up}]
`
	v := vars{"up": strings.TrimPrefix(up.URL, "http://"), "a": aAddr, "b": bAddr, "ca": filepath.Join(t.TempDir(), "missing.pem")}
	to := func(addr string) string {
		return "telemetry:\n  tracing: {otlp: {protocol: grpc, endpoint: \"" + addr + "\", insecure: true}, sampling_ratio: 1}\n" +
			"  metrics: {otlp: {protocol: grpc, endpoint: \"" + addr + "\", insecure: true}, interval: 100ms}\n"
	}
	apply := func(extra string) error {
		return srv.Apply(context.Background(), parse(t, base+extra, v), "")
	}
	get := func(path string) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr("main").String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	spans := func(r *otlpreceiver.Receiver, path string) int {
		n := 0
		for _, rs := range r.Spans() {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					for _, kv := range s.Attributes {
						if kv.Key == "url.path" && kv.Value.GetStringValue() == path {
							n++
						}
					}
				}
			}
		}
		return n
	}
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
		}
	}

	if err := apply(to(aAddr)); err != nil {
		t.Fatal(err)
	}
	get("/one")
	wait("metrics pushed to a", func() bool { return len(a.Metrics()) > 0 })
	// To b: the span of /one, held by a's exporter, still reaches a.
	if err := apply(to(bAddr)); err != nil {
		t.Fatal(err)
	}
	get("/two")
	wait("the span of /one at a", func() bool { return spans(a, "/one") == 1 })
	wait("the span of /two at b", func() bool { return spans(b, "/two") == 1 })
	wait("metrics pushed to b", func() bool { return len(b.Metrics()) > 0 })
	if n := spans(a, "/two"); n != 0 {
		t.Errorf("a got %d spans of /two, sent after tracing moved to b", n)
	}

	// An exporter that cannot be built: refused, named, b goes on.
	bad := strings.Replace(to(bAddr), "insecure: true}, sampling_ratio", "tls: {ca_file: \"{{ca}}\"}}, sampling_ratio", 1)
	if err := apply(bad); err == nil || !strings.Contains(err.Error(), "telemetry.tracing") {
		t.Fatalf("tracing with a CA file that does not exist: %v, want an error naming telemetry.tracing", err)
	}
	get("/three")
	wait("the span of /three at b", func() bool { return spans(b, "/three") == 1 })

	// No telemetry section: no spans and no pushes any more. Absence is
	// looked for over a second, ten push intervals and the span batch
	// timeout, once the replaced push has had a second to stop.
	if err := apply(""); err != nil {
		t.Fatal(err)
	}
	get("/four")
	time.Sleep(time.Second)
	pushes := len(b.Metrics())
	time.Sleep(time.Second)
	if n := spans(b, "/four"); n != 0 {
		t.Errorf("b got %d spans after tracing was removed", n)
	}
	if n := len(b.Metrics()) - pushes; n > 2 {
		t.Errorf("b got %d pushes in a second after the push was removed", n)
	}
}
