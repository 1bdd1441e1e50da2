package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
)

// reportedDst reports every accepted connection's local address as dst,
// as a sidecar's socket wrapper reports an intercepted connection's
// original destination.
type reportedDst struct {
	net.Listener
	dst *net.TCPAddr
}

func (l reportedDst) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return dstConn{Conn: c, dst: l.dst}, nil
}

type dstConn struct {
	net.Conn
	dst *net.TCPAddr
}

func (c dstConn) LocalAddr() net.Addr { return c.dst }

// TestRouteByDestination: on a listener named in RouteByDestination, a
// Host that matches only the catch-all is routed by the address the
// client connected to, when a virtual host has it as a domain; a Host
// that names a virtual host still wins; other listeners are unchanged.
func TestRouteByDestination(t *testing.T) {
	orders := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "orders") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go orders.Serve(ln)
	defer orders.Close()
	for _, tc := range []struct {
		name  string
		by    []string
		dst   net.IP
		hosts map[string]int
	}{
		{"by destination", []string{"out"}, net.IPv4(10, 9, 9, 9), map[string]int{"example.com": 200, "orders": 200, "10.9.9.9:8080": 200}},
		{"a destination no virtual host has", []string{"out"}, net.IPv4(10, 8, 8, 8), map[string]int{"example.com": 502, "orders": 200}},
		{"by Host only", nil, net.IPv4(10, 9, 9, 9), map[string]int{"example.com": 502, "orders": 200, "10.9.9.9:8080": 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := &net.TCPAddr{IP: tc.dst, Port: 8080}
			s := proxy.NewServer(proxy.Options{RouteByDestination: tc.by, Sockets: func(_ string, l net.Listener) net.Listener {
				return reportedDst{Listener: l, dst: dst}
			}})
			cfg := &config.Config{
				Listeners: []config.Listener{{Name: "out", Address: "127.0.0.1:0"}},
				Clusters:  []config.Cluster{{Name: "orders", Endpoints: []config.Endpoint{{Address: ln.Addr().String()}}}},
				VirtualHosts: []config.VirtualHost{
					{Name: "orders", Domains: []string{"orders", "10.9.9.9"}, Routes: []config.Route{{Name: "r", Match: config.RouteMatch{Prefix: "/"}, Cluster: "orders"}}},
					{Name: "outside", Domains: []string{"*"}, Routes: []config.Route{{Name: "no", Match: config.RouteMatch{Prefix: "/"},
						DirectResponse: &config.DirectResponse{Status: 502, Body: "outside\n"}}}},
				},
			}
			cfg.Normalize()
			if err := s.Apply(context.Background(), cfg, ""); err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown(context.Background())
			addr := s.Addr("out").String()
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for host, want := range tc.hosts {
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
				req.Host = host
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
				}
			}
		})
	}
}
