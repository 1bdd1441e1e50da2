package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarServiceRoutes: a canary release through the mesh. orders
// runs in two versions, each behind a sidecar process that registers its
// --version; web's sidecar calls orders by name. A service route of the
// control plane pins the calls with x-canary: 1 to v2 and sends the
// others to v1; changed under load to send every call to v2, it takes
// effect without a failed call; a rule that rewrites the calls' path and
// Host and mirrors them to v2 has v1 answer and v2 see the copies; a rule
// redirects, another sets a header; deleted, both versions answer again.
func TestSidecarServiceRoutes(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	shadows := make(chan string, 100)
	for _, version := range []string{"v1", "v2"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// An app answers its version, and for a path other than / the
		// Host and path it saw; v2 tells the test of the copies it gets.
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.Host, "-shadow") {
				shadows <- version + " " + r.Host + " " + r.URL.Path
			}
			if r.URL.Path == "/" {
				fmt.Fprint(w, version)
				return
			}
			if tag := r.Header.Get("x-tag"); tag != "" {
				fmt.Fprint(w, version+" "+r.URL.Path+" x-tag="+tag)
				return
			}
			fmt.Fprint(w, version+" "+r.Host+" "+r.URL.Path)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		m.start(t, "orders", port(t, l.Addr().String()), testaddr.Free(t), "--version", version)
	}
	webOut := testaddr.Free(t)
	var callAt func(path string, canary bool) (string, error)
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--calls", "orders")

	call := func(canary bool) (string, error) { return callAt("/", canary) }
	callAt = func(path string, canary bool) (string, error) {
		c, err := net.DialTimeout("tcp", webOut, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		extra := ""
		if canary {
			extra = "x-canary: 1\r\n"
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: orders\r\n%sConnection: close\r\n\r\n", path, extra)
		buf := make([]byte, 4096)
		var got strings.Builder
		for {
			n, err := c.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp := got.String()
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			return "", fmt.Errorf("answer %q", resp)
		}
		return resp[strings.LastIndex(resp, "\r\n\r\n")+4:], nil
	}
	// seen calls until every version of want answered, and none other,
	// in a row of 30 calls.
	seen := func(canary bool, want ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := map[string]int{}
			for range 30 {
				v, err := call(canary)
				if err != nil {
					v = err.Error()
				}
				got[v]++
			}
			ok := len(got) == len(want)
			for _, v := range want {
				ok = ok && got[v] > 0
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("calls (canary %v) answered %v, want %q\n%s", canary, got, want, m.sidecars.output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	seen(false, "v1", "v2")

	// The control plane knows the three sidecars, and that they hold what
	// they follow: ctl mesh status says so.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, m.bin, "ctl", "--server", m.cp.APIURL(), "--ca", m.bundle, "--token", adminToken, "mesh", "status").CombinedOutput()
		text := string(out)
		if err == nil && strings.Contains(text, "3 of 3 sidecars synced") &&
			strings.Count(text, "spiffe://wasmgate.local/ns/default/sa/orders") == 2 &&
			regexp.MustCompile(`spiffe://wasmgate.local/ns/default/sa/web\s+\S+\s+web.default\s+orders.default\s+\d+\s+\S+ ago\s+mesh-\d+\s+SYNCED`).MatchString(text) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ctl mesh status: %v\n%s", err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}

	route := resource.Ref{Kind: resource.ServiceRoutes, Name: "orders-canary"}
	put := func(doc string) {
		t.Helper()
		if _, err := m.admin.Put(ctx, route, []byte(doc), api.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"name": "orders-canary", "namespace": "default", "service": "orders", "rules": [
		{"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "backends": [{"version": "v2"}]},
		{"backends": [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]}]}`)
	seen(false, "v1")
	seen(true, "v2")

	// All of it to v2, under load: no call fails.
	stop := load(4, func() error {
		_, err := call(false)
		return err
	})
	time.Sleep(200 * time.Millisecond)
	put(`{"name": "orders-canary", "namespace": "default", "service": "orders", "rules": [
		{"backends": [{"version": "v1", "weight": 0}, {"version": "v2", "weight": 100}]}]}`)
	seen(false, "v2")
	calls, failures := stop()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed while the route changed: %q", len(failures), calls, failures)
	}
	t.Logf("%d calls while the route changed, none failed", calls)

	// /old/ is v1's, rewritten, and copied to v2.
	put(`{"name": "orders-canary", "namespace": "default", "service": "orders", "rules": [
		{"match": {"prefix": "/old/"}, "rewrite": {"uri": "/new/", "authority": "orders.internal"}, "backends": [{"version": "v1"}], "mirror": {"version": "v2"}},
		{"backends": [{"version": "v2"}]}]}`)
	answers := func(path, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := callAt(path, false)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("a call to %s: %q %v, want %q\n%s", path, got, err, want, m.sidecars.output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	answers("/old/x", "v1 orders.internal /new/x")
	select {
	case got := <-shadows:
		if got != "v2 orders.internal-shadow /new/x" {
			t.Fatalf("v2 saw the copy %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("v2 got no copy of the call\n%s", m.sidecars.output())
	}

	// A redirect answered by web's sidecar, and a header set on the way.
	put(`{"name": "orders-canary", "namespace": "default", "service": "orders", "rules": [
		{"match": {"prefix": "/moved/"}, "redirect": {"prefix_rewrite": "/v2/", "status": 308}},
		{"match": {"prefix": "/tagged"}, "headers": {"request": {"set": [{"name": "x-tag", "value": "t1"}]}}, "backends": [{"version": "v1"}]},
		{"backends": [{"version": "v2"}]}]}`)
	answers("/tagged", "v1 /tagged x-tag=t1")
	if _, err := callAt("/moved/x", false); err == nil || !strings.Contains(err.Error(), "HTTP/1.1 308") || !strings.Contains(err.Error(), "Location: http://orders/v2/x") {
		t.Fatalf("a redirected call: %v", err)
	}

	if _, err := m.admin.Delete(ctx, route, api.Options{}); err != nil {
		t.Fatal(err)
	}
	seen(false, "v1", "v2")
}

// TestMeshStatusRejected: a sidecar whose proxy refuses the
// configuration discovery led it to build (a Wasm plugin whose module has
// no proxy-wasm ABI) says so to the control plane: ctl mesh status shows
// it REJECTED, with the proxy's reason, while the previous configuration
// keeps serving; the plugin deleted, it is SYNCED again.
func TestMeshStatusRejected(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	module, err := filepath.Abs("../../proxy/wasm/testdata/noabi.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m.start(t, "web", port(t, testaddr.Free(t)), testaddr.Free(t))
	status := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := exec.CommandContext(ctx, m.bin, "ctl", "--server", m.cp.APIURL(), "--ca", m.bundle, "--token", adminToken, "mesh", "status").CombinedOutput()
			if err == nil && regexp.MustCompile(want).Match(out) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ctl mesh status: %v, want %s\n%s", err, want, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	status(`sa/web\s.*mesh-\d+\s+SYNCED`)
	plugin, _ := m.plugin(t, ctx, "web-broken", module, `"namespace": "default", "service": "web"`)
	status(`sa/web\s.*REJECTED: rejected: plugin "mesh.web-broken": module exports neither`)
	if _, err := m.admin.Delete(ctx, plugin, api.Options{}); err != nil {
		t.Fatal(err)
	}
	status(`sa/web\s.*mesh-\d+\s+SYNCED`)
}
