package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// faultConfig forwards every request to up, with fault injection on its
// one route.
func faultConfig(up, fault string) string {
	return `
admin: {address: "off"}
listeners: [{name: public, address: 127.0.0.1:0}]
clusters: [{name: backend, endpoints: [{address: ` + up + `}]}]
virtual_hosts:
  - name: default
    domains: ["*"]
    routes:
      - name: all
        match: {prefix: /}
        cluster: backend
        fault: ` + fault + `
`
}

// TestFaultInjection: a route's fault injection answers its share of the
// requests with the abort's status without forwarding them (flag FI), and
// holds its share back for the delay (flag DI); a share of 0 touches
// none, of 100 every one.
func TestFaultInjection(t *testing.T) {
	up := startUpstream(t, []byte("ok"))
	t.Run("abort", func(t *testing.T) {
		hp := newHotPath(t, faultConfig(up, "{abort: {status: 503, percent: 100}}"), "GET", "/", "example.com")
		if st := hp.do(t); st != 503 {
			t.Fatalf("status %d, want 503", st)
		}
	})
	t.Run("abort share", func(t *testing.T) {
		hp := newHotPath(t, faultConfig(up, "{abort: {status: 429, percent: 30}}"), "GET", "/", "example.com")
		aborted := 0
		for range 2000 {
			if hp.do(t) == 429 {
				aborted++
			}
		}
		// 30% of 2000 is 600, with a standard deviation of about 20.
		if aborted < 480 || aborted > 720 {
			t.Fatalf("%d of 2000 aborted, want about 600", aborted)
		}
	})
	t.Run("delay", func(t *testing.T) {
		hp := newHotPath(t, faultConfig(up, "{delay: {fixed: 50ms, percent: 100}}"), "GET", "/", "example.com")
		start := time.Now()
		if st := hp.do(t); st != 200 {
			t.Fatalf("status %d", st)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Fatalf("answered after %v, want the 50ms delay", d)
		}
	})
	t.Run("none", func(t *testing.T) {
		hp := newHotPath(t, faultConfig(up, "{delay: {fixed: 1s, percent: 0}, abort: {status: 500, percent: 0}}"), "GET", "/", "example.com")
		start := time.Now()
		for range 100 {
			if st := hp.do(t); st != 200 {
				t.Fatalf("status %d", st)
			}
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("100 requests took %v: a share of 0 delayed them", d)
		}
	})
	if got := (filter.FlagDelayInjected | filter.FlagFaultInjected).String(); got != "DI,FI" {
		t.Errorf("flags %q, want DI,FI", got)
	}
}

func TestFaultValidation(t *testing.T) {
	for fault, want := range map[string]string{
		"{}":                                   "virtual_hosts[0].routes[0].fault: sets neither delay nor abort",
		"{abort: {status: 700, percent: 10}}":  "virtual_hosts[0].routes[0].fault.abort.status",
		"{abort: {status: 503, percent: 101}}": "virtual_hosts[0].routes[0].fault.abort.percent",
		"{delay: {fixed: 0s, percent: 10}}":    "virtual_hosts[0].routes[0].fault.delay.fixed",
	} {
		_, err := config.Parse([]byte(faultConfig("127.0.0.1:1", fault)), "fault.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("fault %s: %v, want %q", fault, err, want)
		}
	}
}
