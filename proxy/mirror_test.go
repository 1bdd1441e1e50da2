package proxy_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

const mirrorConfig = `
admin: {address: "off"}
listeners: [{name: main, address: 127.0.0.1:0}]
clusters:
  - {name: live, endpoints: [{address: "{{live}}"}]}
  - {name: shadow, endpoints: [{address: "{{shadow}}"}]}
  - {name: gone, endpoints: [{address: "{{gone}}"}]}
virtual_hosts:
  - name: default
    domains: ["*"]
    routes:
      - name: api
        match: {prefix: /api/}
        prefix_rewrite: /v1/
        cluster: live
        mirrors: [{cluster: shadow}]
      - name: half
        match: {prefix: /half}
        cluster: live
        mirrors: [{cluster: shadow, percent: 50}]
      - name: none
        match: {prefix: /none}
        cluster: live
        mirrors: [{cluster: shadow, percent: 0}]
      - name: gone
        match: {prefix: /gone}
        cluster: live
        mirrors: [{cluster: gone}]
`

// mirrored is one copy the shadow upstream received.
type mirrored struct {
	method, host, path string
	body               int
}

// TestRequestMirroring: a route's mirror sends a copy of each request,
// as the route rewrote it, with "-shadow" added to its Host, small bodies
// included, and the request goes on without waiting for the copy's
// answer; a body over 64 KiB is not copied, a share of 50 copies about
// half, of 0 none, and a mirror cluster that is down fails only its
// copies. The copies are counted by result.
func TestRequestMirroring(t *testing.T) {
	live := testupstream.Start(t, "live", nil)
	copies := make(chan mirrored, 1000)
	release := make(chan struct{})
	shadow := testupstream.Start(t, "shadow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		copies <- mirrored{r.Method, r.Host, r.URL.Path, len(b)}
		if r.URL.Path == "/v1/held" {
			<-release
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	e := newEnv(t, mirrorConfig, vars{"live": live.Addr(), "shadow": shadow.Addr(), "gone": testupstream.ClosedAddr(t)})
	next := func() mirrored {
		t.Helper()
		select {
		case m := <-copies:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no copy reached the shadow cluster")
			return mirrored{}
		}
	}

	if got := e.get(t, "shop.example:8080", "/api/orders").echo(t); got.Instance != "live" || got.Path != "/v1/orders" {
		t.Fatalf("the request itself: %+v", got)
	}
	if m := next(); m != (mirrored{"GET", "shop.example-shadow:8080", "/v1/orders", 0}) {
		t.Fatalf("copy %+v", m)
	}
	body := strings.Repeat("x", 1000)
	if got := e.do(t, request{method: "POST", host: "shop.example", path: "/api/pay", body: strings.NewReader(body)}).echo(t); got.BodyBytes != 1000 {
		t.Fatalf("the request itself: %+v", got)
	}
	if m := next(); m != (mirrored{"POST", "shop.example-shadow", "/v1/pay", 1000}) {
		t.Fatalf("copy %+v", m)
	}

	// The copy is held by the shadow; the request is answered anyway.
	if got := e.get(t, "shop.example", "/api/held").echo(t); got.Instance != "live" {
		t.Fatalf("the request itself: %+v", got)
	}
	if m := next(); m.path != "/v1/held" {
		t.Fatalf("copy %+v", m)
	}
	close(release)

	// A body over 64 KiB streams to the live cluster only.
	large := strings.Repeat("y", 100<<10)
	if got := e.do(t, request{method: "PUT", path: "/api/large", body: strings.NewReader(large)}).echo(t); got.BodyBytes != int64(len(large)) {
		t.Fatalf("the request itself: %+v", got)
	}

	for range 400 {
		e.get(t, "", "/half").echo(t)
		e.get(t, "", "/none").echo(t)
	}
	for range 3 {
		e.get(t, "", "/gone").echo(t)
	}
	// Prometheus writes the labels in their names' order.
	want := map[string]func(float64) bool{
		`cluster="shadow",listener="main",result="answered",route="api"`: func(n float64) bool { return n == 3 },
		`cluster="shadow",listener="main",result="skipped",route="api"`:  func(n float64) bool { return n == 1 },
		// 50% of 400 is 200, with a standard deviation of 10.
		`cluster="shadow",listener="main",result="answered",route="half"`: func(n float64) bool { return n >= 150 && n <= 250 },
		`cluster="shadow",listener="main",result="answered",route="none"`: func(n float64) bool { return n == 0 },
		`cluster="gone",listener="main",result="failed",route="gone"`:     func(n float64) bool { return n == 3 },
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := e.adminGet(t, "/metrics")
		bad := ""
		for series, ok := range want {
			if n := metricValue(string(m), "wasmgate_mirror_requests_total", series); !ok(n) {
				bad += series + " = " + strconv.FormatFloat(n, 'f', -1, 64) + "\n"
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror counters:\n%s", bad)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(copies); n < 150 || n > 250 {
		t.Fatalf("%d copies of /half and /none, want about 200", n)
	}
	for range len(copies) {
		if m := <-copies; m.path != "/half" {
			t.Fatalf("copy %+v", m)
		}
	}
}

func TestMirrorValidation(t *testing.T) {
	for mirrors, want := range map[string]string{
		"[{cluster: nope}]":                  `virtual_hosts[0].routes[0].mirrors[0].cluster: unknown cluster "nope"`,
		"[{cluster: backend, percent: 101}]": "virtual_hosts[0].routes[0].mirrors[0].percent: must be between 0 and 100",
	} {
		y := `
listeners: [{name: main, address: 127.0.0.1:0}]
clusters: [{name: backend, endpoints: [{address: 127.0.0.1:1}]}]
virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, cluster: backend, mirrors: ` + mirrors + `}]}]
`
		if _, err := config.Parse([]byte(y), "m.yaml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mirrors %s: %v, want %q", mirrors, err, want)
		}
	}
	y := `
listeners: [{name: main, address: 127.0.0.1:0}]
clusters: [{name: backend, endpoints: [{address: 127.0.0.1:1}]}]
virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}, mirrors: [{cluster: backend}]}]}]
`
	if _, err := config.Parse([]byte(y), "m.yaml"); err == nil || !strings.Contains(err.Error(), "mirrors[0]: needs a route that forwards") {
		t.Errorf("a mirror on a direct response: %v", err)
	}
}

// metricValue is the value of the series name{labels} in Prometheus text,
// 0 when it is not there.
func metricValue(text, name, labels string) float64 {
	prefix := name + "{" + labels + "} "
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}
