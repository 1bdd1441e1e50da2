package relay_test

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/relay"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// filterProxy is a proxy whose configuration holds one plugin, lines: a
// network filter built with the proxy-wasm Go SDK
// (proxy/wasm/testdata/tcpfilter.wasm) that upper-cases what the
// upstream sends, masks "secret", closes the connection at a line DENY,
// and panics at a line PANIC.
func filterProxy(t *testing.T, failure string) *proxy.Server {
	t.Helper()
	module, err := filepath.Abs("../../proxy/wasm/testdata/tcpfilter.wasm")
	if err != nil {
		t.Fatal(err)
	}
	doc := "listeners: [{name: main, address: 127.0.0.1:0}]\nplugins:\n- {name: lines, file: " + module + ", failure_policy: " + failure + "}\n"
	cfg, err := config.Parse([]byte(doc), "filters.yaml")
	if err != nil {
		t.Fatal(err)
	}
	host, err := wasm.NewHost(wasm.Options{CacheDir: t.TempDir(), Logger: zap.NewNop(), Registerer: prometheus.NewRegistry(), Node: &filter.Node{ID: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Options{Plugins: host})
	if err := srv.Apply(context.Background(), cfg, ""); err != nil {
		host.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		host.Close()
	})
	return srv
}

// TestRelayNetworkFilters: the connections a TCP app's inbound admits
// pass through its network filters on their way to the app: bytes
// changed each way, a connection closed by a filter before its line
// reaches the app, with its flow record saying so; a filter that fails
// closes its connection when its plugin fails closed, and is skipped for
// the rest of the connection when it fails open; a plugin the proxy's configuration no longer holds
// is left out. An outbound's filters close a connection before a denied
// line leaves the relay.
func TestRelayNetworkFilters(t *testing.T) {
	for _, failure := range []string{"fail_closed", "fail_open"} {
		t.Run(failure, func(t *testing.T) {
			c := newCA(t)
			out, tel := flowRecords(t)
			srv := filterProxy(t, failure)
			in, err := relay.NewInbound(relay.InboundOptions{Mesh: c.identity(t, "db"), Guard: policy.NewGuard("default", "db"),
				AppPort: echoApp(t, "db"), Destination: "db.default", Telemetry: tel})
			if err != nil {
				t.Fatal(err)
			}
			in.SetFilters(&relay.Filters{Proxy: srv, Plugins: []config.FilterRef{{Plugin: "gone"}, {Plugin: "lines"}}})
			db := serveInbound(t, in)
			web := outbound(t, c, "web", nil, relay.Endpoint{Address: db, Identity: policy.SPIFFEID(td, "default", "db")})

			if got := converse(t, web, "select 1", "a secret"); got != "DB: SELECT 1\nDB: A ******\n" {
				t.Fatalf("through db's filter: %q", got)
			}
			if got := converse(t, web, "one", "DENY", "two"); got != "DB: ONE\n" {
				t.Fatalf("past a denied line: %q", got)
			}
			want := map[string]string{"fail_closed": "", "fail_open": "db: PANIC\ndb: after\n"}[failure]
			if got := converse(t, web, "PANIC", "after"); got != want {
				t.Fatalf("a filter that failed, %s: %q, want %q", failure, got, want)
			}
			// web's own filter closes a connection at a denied line,
			// before the line leaves web's relay.
			webOut, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, "web"), Telemetry: tel})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(webOut.Close)
			if err := webOut.Update(map[string][]relay.Endpoint{"db.default": {{Address: db, Identity: policy.SPIFFEID(td, "default", "db")}}}, nil); err != nil {
				t.Fatal(err)
			}
			webOut.SetFilters(&relay.Filters{Proxy: srv, Plugins: []config.FilterRef{{Plugin: "lines"}}})
			filtered, err := webOut.Listen("db.default", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if got := converse(t, filtered.String(), "DENY"); got != "" {
				t.Fatalf("web's filter let a denied line through: %q", got)
			}
			waitRecords(t, out, 5)
			var outFlows []string
			for _, r := range out.all(t) {
				if r["listener"] == "outbound" {
					outFlows = append(outFlows, fmt.Sprintf("%v %v %v", r["destination_identity"], r["bytes_in"], r["close_reason"]))
				}
			}
			if want := policy.SPIFFEID(td, "default", "db") + " 5 filter_closed"; len(outFlows) != 1 || outFlows[0] != want {
				t.Fatalf("web's outbound flows %q, want %q", outFlows, want)
			}
			reasons := map[string]int{}
			for _, r := range out.all(t) {
				if r["listener"] == "inbound" {
					reasons[r["close_reason"].(string)]++
				}
			}
			// The last is the connection web's filter closed: db saw no
			// byte of it.
			wantReasons := map[string]int{"peer_closed": 3, "filter_closed": 1}
			if failure == "fail_closed" {
				wantReasons = map[string]int{"peer_closed": 2, "filter_closed": 2}
			}
			if !maps.Equal(reasons, wantReasons) {
				t.Fatalf("inbound flows' close reasons %v, want %v\n%s", reasons, wantReasons, out.buf.String())
			}
		})
	}
}

// TestPassthroughFilters: the outbound's network filters run on the
// connections it passes outside the mesh too (allow_any), with the
// cluster passthrough: what the host outside answers is upper-cased, a
// denied line closes the connection before it leaves, and the flow
// record says the filter closed it.
func TestPassthroughFilters(t *testing.T) {
	c := newCA(t)
	out, tel := flowRecords(t)
	o, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, "web"), Telemetry: tel, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	o.SetOutside(relay.OutsidePass)
	o.SetFilters(&relay.Filters{Proxy: filterProxy(t, "fail_closed"), Plugins: []config.FilterRef{{Plugin: "lines"}}})
	outside := lineServer(t, "outside", "")
	addr := interceptTo(t, o, outside)
	if got := converse(t, addr, "select 1", "a secret"); got != "OUTSIDE: SELECT 1\nOUTSIDE: A ******\n" {
		t.Fatalf("through the outbound's filter: %q", got)
	}
	// The first connection ends once both of its ends closed, a few hops
	// after the client read its last answer: its flow is waited for, so
	// that the records come in the order of the conversations.
	waitRecords(t, out, 1)
	if got := converse(t, addr, "DENY"); got != "" {
		t.Fatalf("a denied line went out: %q", got)
	}
	waitRecords(t, out, 2)
	var reasons []string
	for _, r := range out.all(t) {
		reasons = append(reasons, fmt.Sprint(r["destination_address"], " ", r["close_reason"]))
	}
	if want := []string{outside.String() + " peer_closed", outside.String() + " filter_closed"}; !slices.Equal(reasons, want) {
		t.Fatalf("flows %q, want %q", reasons, want)
	}
}
