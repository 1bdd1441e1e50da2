package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/internal/testaddr"
)

// TestSidecarRateLimits: a rate limit policy of the control plane bounds
// what orders' sidecar serves to each caller identity, as Linkerd's
// HTTPLocalRateLimitPolicy: web's burst of calls is answered 429 past its
// rate, with Retry-After, by orders' sidecar (what a slow burst's own
// time refills is allowed for); deleted, every call is served again.
func TestSidecarRateLimits(t *testing.T) {
	m := startProcessMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m.start(t, "orders", appPort(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "orders") }), testaddr.Free(t))
	webOut := testaddr.Free(t)
	m.start(t, "web", port(t, testaddr.Free(t)), webOut, "--calls", "orders")

	client := &http.Client{Timeout: 5 * time.Second}
	call := func() (int, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+webOut+"/", nil)
		req.Host = "orders"
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header
	}
	// burst sends n calls in a row and counts the answers by status.
	burst := func(n int) map[int]int {
		got := map[int]int{}
		for range n {
			st, h := call()
			got[st]++
			if st == 429 && (h.Get("Retry-After") == "" || h.Get("X-Ratelimit-Limit") != "2") {
				t.Fatalf("a refusal without its headers: %v", h)
			}
		}
		return got
	}
	deadline := time.Now().Add(20 * time.Second)
	for burst(1)[200] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("web does not reach orders\n%s", m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	policy := resource.Ref{Kind: resource.RateLimitPolicies, Name: "orders-limits"}
	if _, err := m.admin.Put(ctx, policy, []byte(`{"name": "orders-limits", "namespace": "default", "service": "orders",
		"identity": {"requests_per_second": 2}, "total": {"requests_per_second": 1000}}`), api.Options{}); err != nil {
		t.Fatal(err)
	}
	for burst(10)[429] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no call refused\n%s", m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A fresh second: the bucket holds 2, refilled one each half second
	// of the burst.
	time.Sleep(1100 * time.Millisecond)
	start := time.Now()
	got := burst(10)
	refilled := int(time.Since(start) / (500 * time.Millisecond))
	if got[200] < 2 || got[200] > 2+refilled || got[200]+got[429] != 10 {
		t.Fatalf("10 calls in a row at 2 a second, in %v: %v", time.Since(start), got)
	}
	if _, err := m.admin.Delete(ctx, policy, api.Options{}); err != nil {
		t.Fatal(err)
	}
	for burst(20)[200] != 20 {
		if time.Now().After(deadline) {
			t.Fatalf("calls still refused after the policy was deleted\n%s", m.sidecars.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
