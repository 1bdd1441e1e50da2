package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
)

func TestAccessLog(t *testing.T) {
	_, v := startEchoes(t, "a")
	v["log"] = filepath.Join(t.TempDir(), "access.log")
	e := newEnv(t, `
admin: {address: "off"}
access_log:
  path: {{log}}
  fields: [request_id, method, authority, path, status, response_flags, bytes_sent, upstream_cluster, route_name, listener, x_forwarded_for, duration_ms]
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {name: direct, match: {path: /direct}, direct_response: {status: 201, body: made}}
      - {name: up, match: {prefix: /}, cluster: a}
`, v)
	const n = 20
	for i := 0; i < n; i++ {
		e.get(t, "log.test", fmt.Sprintf("/r/%d?q=1", i), "X-Request-Id", fmt.Sprintf("req-%d", i)).echo(t)
	}
	if r := e.get(t, "log.test", "/direct"); r.status != 201 {
		t.Fatalf("direct: %d", r.status)
	}
	e.get(t, "log.test", "/r/generated").echo(t)
	lines := readLogLines(t, v["log"], n+2)
	if len(lines) != n+2 {
		t.Fatalf("%d lines for %d requests", len(lines), n+2)
	}
	fields := []string{"request_id", "method", "authority", "path", "status", "response_flags", "bytes_sent",
		"upstream_cluster", "route_name", "listener", "x_forwarded_for", "duration_ms"}
	for i, l := range lines {
		if len(l) != len(fields) {
			t.Errorf("line %d has %d fields, want %d: %v", i, len(l), len(fields), l)
		}
		for _, f := range fields {
			if _, ok := l[f]; !ok {
				t.Errorf("line %d lacks %s: %v", i, f, l)
			}
		}
	}
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		byPath[l["path"].(string)] = l
	}
	for i := 0; i < n; i++ {
		l := byPath[fmt.Sprintf("/r/%d?q=1", i)]
		if l == nil {
			t.Fatalf("no line for request %d", i)
		}
		want := map[string]any{"request_id": fmt.Sprintf("req-%d", i), "method": "GET", "authority": "log.test", "status": float64(200),
			"response_flags": "-", "upstream_cluster": "a", "route_name": "up", "listener": "main", "x_forwarded_for": "127.0.0.1"}
		for k, w := range want {
			if l[k] != w {
				t.Errorf("request %d: %s = %v, want %v", i, k, l[k], w)
			}
		}
		if l["bytes_sent"].(float64) <= 0 {
			t.Errorf("request %d: bytes_sent %v", i, l["bytes_sent"])
		}
	}
	if l := byPath["/direct"]; l["status"] != float64(201) || l["bytes_sent"] != float64(4) || l["upstream_cluster"] != "" || l["route_name"] != "direct" {
		t.Errorf("direct response logged as %v", l)
	}
	if l := byPath["/r/generated"]; !uuidV4.MatchString(fmt.Sprint(l["request_id"])) {
		t.Errorf("a generated request id logged as %v", l["request_id"])
	}

	_, metrics := e.adminGet(t, "/metrics")
	if !strings.Contains(string(metrics), "\nwasmgate_access_log_dropped_total 0\n") {
		t.Errorf("/metrics lacks wasmgate_access_log_dropped_total 0")
	}
}

// TestShutdownWithRequestsInFlight lets the drain deadline pass while a
// request waits on its upstream; the request finishes afterwards and logs
// to a closed access log.
func TestShutdownWithRequestsInFlight(t *testing.T) {
	ups, v := startEchoes(t, "a")
	v["log"] = filepath.Join(t.TempDir(), "access.log")
	srv := proxy.NewServer(proxy.Options{})
	cfg := parse(t, `
admin: {address: "off"}
access_log: {path: "{{log}}"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - {name: all, domains: ["*"], routes: [{match: {prefix: /}, cluster: a}]}
`, v)
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		t.Fatal(err)
	}
	url := "http://" + srv.Addr("main").String() + "/?delay=400ms"
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	eventually(t, 5*time.Second, "the request reached the upstream", func() bool { return ups["a"].Requests() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = srv.Shutdown(ctx)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never ended")
	}
	// The process is still here: the late request's log entry was dropped.
}

func TestAdmin(t *testing.T) {
	ups, v := startEchoes(t, "a", "b")
	srv := proxy.NewServer(proxy.Options{})
	admin := proxy.NewAdmin(srv)
	h := httptest.NewServer(admin.Handler())
	t.Cleanup(h.Close)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	get := func(t *testing.T, path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}

	t.Run("before the first configuration", func(t *testing.T) {
		for _, tc := range []struct {
			path   string
			status int
		}{
			{"/ready", 503}, {"/healthz", 200}, {"/config", 503}, {"/clusters", 503}, {"/metrics", 200},
		} {
			if status, _, body := get(t, tc.path); status != tc.status {
				t.Errorf("%s: %d %q, want %d", tc.path, status, body, tc.status)
			}
		}
	})

	cfg := parse(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - {name: pair, endpoints: [{address: "{{a}}"}, {address: "{{b}}", weight: 3}]}
  - {name: solo, lb_policy: least_request, endpoints: [{address: "{{a}}"}]}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {name: to-pair, match: {prefix: /pair}, cluster: pair}
      - {name: missing, match: {prefix: /}, direct_response: {status: 404}}
`, v)
	if err := srv.Apply(context.Background(), cfg, "v-one"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr("main").String()
	for i := 0; i < 8; i++ {
		resp, err := http.Get(base + "/pair")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	t.Run("ready and healthy", func(t *testing.T) {
		if status, _, body := get(t, "/ready"); status != 200 || body != "ready\n" {
			t.Errorf("/ready: %d %q", status, body)
		}
		if status, _, body := get(t, "/healthz"); status != 200 || body != "ok\n" {
			t.Errorf("/healthz: %d %q", status, body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		status, _, body := get(t, "/metrics")
		if status != 200 {
			t.Fatalf("/metrics: %d", status)
		}
		for _, want := range []string{
			`wasmgate_http_requests_total{cluster="pair",code="2xx",listener="main",route="to-pair"} 8`,
			`wasmgate_http_requests_total{cluster="",code="4xx",listener="main",route="missing"} 1`,
			`wasmgate_http_request_duration_seconds_count{cluster="pair",listener="main",route="to-pair"} 8`,
			`wasmgate_config_reloads_total{result="success"} 1`,
			`wasmgate_config_last_reload_success 1`,
			`wasmgate_config_last_reload_success_timestamp_seconds `,
			`wasmgate_config_info{version="v-one"} 1`,
			`wasmgate_build_info{goversion="go`,
			`wasmgate_access_log_dropped_total 0`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("config as JSON", func(t *testing.T) {
		status, ctype, body := get(t, "/config")
		if status != 200 || !strings.HasPrefix(ctype, "application/json") {
			t.Fatalf("/config: %d %s", status, ctype)
		}
		var doc struct {
			Version  string    `json:"version"`
			LoadedAt time.Time `json:"loaded_at"`
			Config   struct {
				Listeners []struct{ Name string } `json:"listeners"`
				Clusters  []struct{ Name string } `json:"clusters"`
			} `json:"config"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("/config: %v: %s", err, body)
		}
		if doc.Version != "v-one" || len(doc.Config.Clusters) != 2 || doc.Config.Listeners[0].Name != "main" || doc.LoadedAt.IsZero() {
			t.Errorf("/config: %+v", doc)
		}
	})

	t.Run("config as YAML", func(t *testing.T) {
		status, ctype, body := get(t, "/config?format=yaml")
		if status != 200 || !strings.Contains(ctype, "yaml") {
			t.Fatalf("/config?format=yaml: %d %s", status, ctype)
		}
		var doc struct {
			Version string `yaml:"version"`
			Config  struct {
				Clusters []struct {
					Name      string `yaml:"name"`
					Endpoints []struct {
						Address string `yaml:"address"`
					} `yaml:"endpoints"`
				} `yaml:"clusters"`
			} `yaml:"config"`
		}
		if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("/config?format=yaml: %v: %s", err, body)
		}
		if doc.Version != "v-one" || len(doc.Config.Clusters) != 2 || doc.Config.Clusters[0].Endpoints[1].Address != ups["b"].Addr() {
			t.Errorf("/config?format=yaml: %+v", doc)
		}
	})

	t.Run("clusters", func(t *testing.T) {
		status, _, body := get(t, "/clusters")
		if status != 200 {
			t.Fatalf("/clusters: %d", status)
		}
		var doc struct {
			Version  string                `json:"version"`
			Clusters []proxy.ClusterStatus `json:"clusters"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Version != "v-one" || len(doc.Clusters) != 2 || doc.Clusters[0].Name != "pair" || doc.Clusters[1].Name != "solo" {
			t.Fatalf("/clusters: %s", body)
		}
		pair := doc.Clusters[0]
		if pair.LBPolicy != "round_robin" || len(pair.Endpoints) != 2 {
			t.Fatalf("pair: %+v", pair)
		}
		a, b := pair.Endpoints[0], pair.Endpoints[1]
		if a.Address != ups["a"].Addr() || b.Address != ups["b"].Addr() || a.Weight != 1 || b.Weight != 3 {
			t.Errorf("pair endpoints: %+v", pair.Endpoints)
		}
		if a.Requests+b.Requests != 8 || a.Requests != 2 || b.Requests != 6 {
			t.Errorf("requests per endpoint %d and %d, want 2 and 6", a.Requests, b.Requests)
		}
		if a.Connections != 1 || b.Connections != 1 {
			t.Errorf("connections per endpoint %d and %d, want 1 each", a.Connections, b.Connections)
		}
		if doc.Clusters[1].LBPolicy != "least_request" {
			t.Errorf("solo: %+v", doc.Clusters[1])
		}
	})

	t.Run("draining", func(t *testing.T) {
		admin.SetDraining()
		if status, _, body := get(t, "/ready"); status != 503 || body != "draining\n" {
			t.Errorf("/ready while draining: %d %q", status, body)
		}
		if status, _, _ := get(t, "/healthz"); status != 200 {
			t.Errorf("/healthz while draining: %d", status)
		}
	})

	t.Run("ready checks", func(t *testing.T) {
		checked := proxy.NewAdmin(srv, func() (bool, string) { return false, "store unreachable" })
		rec := httptest.NewRecorder()
		checked.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		if rec.Code != 503 || rec.Body.String() != "store unreachable\n" {
			t.Errorf("/ready with a failing check: %d %q", rec.Code, rec.Body.String())
		}
	})
}

func TestAdminGuards(t *testing.T) {
	_, v := startEchoes(t, "a")
	leaf := testpki.NewCA(t, "admin-test").Issue(t, testpki.Leaf{CommonName: "site.test", DNS: []string{"site.test"}})
	v["cert"] = strings.ReplaceAll(string(leaf.CertPEM), "\n", `\n`)
	v["key"] = strings.ReplaceAll(string(leaf.KeyPEM), "\n", `\n`)
	v["token"] = filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(v["token"], []byte("s3cret-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const yamlCfg = `
admin: {address: "off", allowed_hosts: [admin.internal, "ops.internal:9901"], token_file: "{{token}}", pprof: {{pprof}}}
listeners: [{name: main, address: "127.0.0.1:0"}]
certificates: [{name: site, cert_pem: "{{cert}}", key_pem: "{{key}}"}]
clusters: [{name: a, endpoints: [{address: "{{a}}"}]}]
virtual_hosts:
  - name: all
    domains: ["*"]
    request_headers:
      set: [{name: Authorization, value: "Bearer upstream-secret"}, {name: X-Env, value: prod}]
    routes:
      - match: {prefix: /, headers: [{name: Cookie, exact: "session=cookie-secret"}]}
        request_headers: {add: [{name: X-Api-Key, value: "key-secret"}]}
        cluster: a
`
	srv := proxy.NewServer(proxy.Options{})
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	h := httptest.NewServer(proxy.NewAdmin(srv).Handler())
	t.Cleanup(h.Close)
	get := func(t *testing.T, path, host, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", h.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("before the first configuration, only loopback", func(t *testing.T) {
		if status, _ := get(t, "/metrics", "", ""); status != 200 {
			t.Errorf("/metrics from 127.0.0.1: %d", status)
		}
		if status, _ := get(t, "/metrics", "rebound.example:9901", ""); status != 403 {
			t.Errorf("/metrics for rebound.example: %d, want 403", status)
		}
		if status, _ := get(t, "/debug/pprof/", "", ""); status != 404 {
			t.Errorf("/debug/pprof/ by default: %d, want 404", status)
		}
	})

	v["pprof"] = "false"
	if err := srv.Apply(context.Background(), parse(t, yamlCfg, v), ""); err != nil {
		t.Fatal(err)
	}

	t.Run("hosts", func(t *testing.T) {
		for _, tc := range []struct {
			host   string
			status int
		}{
			{"", 200}, {"localhost:9901", 200}, {"[::1]:9901", 200}, {"10.1.2.3:9901", 200},
			{"admin.internal", 200}, {"Admin.Internal:1234", 200}, {"ops.internal:9901", 200},
			{"ops.internal:80", 403}, {"rebound.example", 403}, {"rebound.example:9901", 403}, {"127.0.0.1.nip.io", 403},
		} {
			if status, body := get(t, "/clusters", tc.host, "s3cret-admin-token"); status != tc.status {
				t.Errorf("Host %q: %d %q, want %d", tc.host, status, body, tc.status)
			}
		}
		// Probes answer whatever name they use, without a token.
		for _, path := range []string{"/healthz", "/ready"} {
			if status, _ := get(t, path, "lb-probe.example", ""); status != 200 {
				t.Errorf("%s for another host, without a token: %d", path, status)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		for _, tc := range []struct {
			token  string
			status int
		}{{"", 401}, {"wrong", 401}, {"s3cret-admin-token", 200}} {
			if status, _ := get(t, "/metrics", "", tc.token); status != tc.status {
				t.Errorf("token %q: %d, want %d", tc.token, status, tc.status)
			}
		}
	})

	t.Run("config hides secrets", func(t *testing.T) {
		status, body := get(t, "/config", "", "s3cret-admin-token")
		if status != 200 {
			t.Fatalf("/config: %d %s", status, body)
		}
		keyLine := strings.Split(string(leaf.KeyPEM), "\n")[1]
		for _, secret := range []string{"PRIVATE KEY", keyLine, "upstream-secret", "cookie-secret", "key-secret", "s3cret-admin-token"} {
			if strings.Contains(body, secret) {
				t.Errorf("/config shows %q", secret)
			}
		}
		if !strings.Contains(body, `"REDACTED"`) || !strings.Contains(body, `"prod"`) || !strings.Contains(body, "BEGIN CERTIFICATE") {
			t.Errorf("/config lost what is no secret: %s", body)
		}
		// The live configuration itself keeps its secrets.
		if srv.Snapshot().Config.Certificates[0].KeyPEM != string(leaf.KeyPEM) {
			t.Error("redacting /config changed the live configuration")
		}
		status, body = get(t, "/config?format=yaml", "", "s3cret-admin-token")
		if status != 200 || strings.Contains(body, "upstream-secret") || strings.Contains(body, keyLine) {
			t.Errorf("/config?format=yaml: %d, shows a secret: %s", status, body)
		}
	})

	t.Run("pprof only when on", func(t *testing.T) {
		if status, _ := get(t, "/debug/pprof/", "", "s3cret-admin-token"); status != 404 {
			t.Errorf("/debug/pprof/ with pprof off: %d", status)
		}
		v["pprof"] = "true"
		if err := srv.Apply(context.Background(), parse(t, yamlCfg, v), ""); err != nil {
			t.Fatal(err)
		}
		if status, _ := get(t, "/debug/pprof/", "", "s3cret-admin-token"); status != 200 {
			t.Errorf("/debug/pprof/ with pprof on: %d", status)
		}
		if status, _ := get(t, "/debug/pprof/", "", ""); status != 401 {
			t.Errorf("/debug/pprof/ without the token: %d", status)
		}
	})

	t.Run("an unreadable token file refuses all", func(t *testing.T) {
		if err := os.Remove(v["token"]); err != nil {
			t.Fatal(err)
		}
		if status, _ := get(t, "/config", "", "s3cret-admin-token"); status != 503 {
			t.Errorf("/config with the token file gone: %d, want 503", status)
		}
		if status, _ := get(t, "/healthz", "", ""); status != 200 {
			t.Errorf("/healthz with the token file gone: %d", status)
		}
	})
}
