package sidecar_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarCallsEveryService: a sidecar started with `--calls '*'`
// routes its app's calls to every service of the mesh by name, those
// that come after it started too, and its DNS answers their names with
// their virtual addresses, as an Istio sidecar knows every service
// without a Sidecar resource; a name no service has is not routed.
func TestSidecarCallsEveryService(t *testing.T) {
	m := startProcessMesh(t)
	answer := func(name string) int {
		return appPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", name, r.URL.Path) })
	}
	m.start(t, "orders", answer("orders"), testaddr.Free(t))
	webOut, webDNS := testaddr.Free(t), testaddr.Free(t)
	m.start(t, "web", answer("web"), webOut, "--calls", "*", "--dns", webDNS)

	client := &http.Client{Timeout: 5 * time.Second}
	call := func(host, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+webOut+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	until := func(host, path, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, body := call(host, path)
			if st == 200 && body == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("a call to %s%s: %d %q, want %q\n%s", host, path, st, body, want, m.sidecars.output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	until("orders", "/a", "orders /a")
	// A service that comes later, called by every form of its name.
	m.start(t, "payments", answer("payments"), testaddr.Free(t))
	until("payments.default", "/b", "payments /b")
	until("payments.default.svc.cluster.local", "/c", "payments /c")
	until("orders.default.svc", "/d", "orders /d")
	if st, body := call("ghost", "/"); st == 200 {
		t.Fatalf("a name no service has: %d %q", st, body)
	}

	// The sidecar's DNS knows both, by their virtual addresses.
	for _, name := range []string{"orders.", "payments.default.svc.cluster.local."} {
		r, _, err := (&dns.Client{Net: "udp"}).Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), webDNS)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("A %s: %v %v", name, r, err)
		}
		if a := r.Answer[0].(*dns.A).A.String(); !strings.HasPrefix(a, "240.240.") {
			t.Fatalf("A %s = %s, want a virtual address", name, a)
		}
	}
}
