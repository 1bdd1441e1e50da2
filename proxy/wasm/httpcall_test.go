package wasm

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// hostRecorder is a filter.Upstreams that answers 200 and records the
// Host of each call.
type hostRecorder chan string

func (r hostRecorder) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	r <- string(req.Host())
	resp.SetStatusCode(200)
	return nil
}

// TestHTTPCallPseudoHeaders checks proxy_http_call's checks of the
// pseudo-headers against Envoy's: :method, :path and :authority must be
// present; a present but empty :authority is accepted and filled with the
// cluster's name.
func TestHTTPCallPseudoHeaders(t *testing.T) {
	rec := make(hostRecorder, 4)
	m := newTestManager(t, func(o *Options) { o.Upstreams = rec })
	set := prepare(t, m, testPlugin("calls", "minimal", func(p *config.Plugin) {
		p.PoolSize = 1
		p.AllowedClusters = []string{"auth"}
	}))
	x := newExchange("http://example.com/")
	st, err := factoryOf(t, set, "calls").NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*stream)
	defer s.Done(x)
	in := s.in
	tests := []struct {
		name   string
		pairs  []kv
		status abi.Status
		host   string
	}{
		{"all present", []kv{{[]byte(":method"), []byte("GET")}, {[]byte(":path"), []byte("/")}, {[]byte(":authority"), []byte("auth.local")}}, abi.StatusOK, "auth.local"},
		{"empty authority", []kv{{[]byte(":method"), []byte("GET")}, {[]byte(":path"), []byte("/")}, {[]byte(":authority"), nil}}, abi.StatusOK, "auth"},
		{"no authority", []kv{{[]byte(":method"), []byte("GET")}, {[]byte(":path"), []byte("/")}}, abi.StatusBadArgument, ""},
		{"no path", []kv{{[]byte(":method"), []byte("GET")}, {[]byte(":authority"), []byte("a")}}, abi.StatusBadArgument, ""},
		{"no method", []kv{{[]byte(":path"), []byte("/")}, {[]byte(":authority"), []byte("a")}}, abi.StatusBadArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const base = 0x8000
			cluster := []byte("auth")
			hdrs := serialize(nil, tt.pairs)
			in.mu.Lock()
			ok := in.mem.Write(base, cluster) && in.mem.Write(base+64, hdrs)
			in.enterStream(s)
			status := hostHTTPCall(in, []uint64{base, uint64(len(cluster)), base + 64, uint64(len(hdrs)),
				0, 0, 0, 0, 1000, base + 32})
			in.leave()
			in.mu.Unlock()
			if !ok {
				t.Fatal("writing guest memory")
			}
			if status != tt.status {
				t.Fatalf("status %v, want %v", status, tt.status)
			}
			if tt.host != "" {
				select {
				case h := <-rec:
					if h != tt.host {
						t.Errorf("Host %q, want %q", h, tt.host)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the call never reached the upstream")
				}
			}
		})
	}
}
