package relay_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/relay"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

func TestLooksHTTP(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "more",
		"G":                            "more",
		"GET":                          "more",
		"GET ":                         "more",
		"GET /":                        "http",
		"POST /orders HTTP/1.1\r\n":    "http",
		"OPTIONS * HTTP/1.1":           "http",
		"PRI * HTTP/2.0\r\n":           "http",
		"CONNECT db:5432 HTTP/1.1":     "http",
		"GET h":                        "more",
		"GET http:/":                   "more",
		"GET http://a/":                "http",
		"GET HTTPS://a/":               "http",
		"GET hello":                    "other",
		"SET k v\r\n":                  "other", // Redis' inline command
		"PING\r\n":                     "other",
		"\x16\x03\x01\x02\x00":         "other", // a TLS ClientHello
		"\x00\x00\x00\x08\x04\xd2":     "other", // PostgreSQL's SSLRequest
		"*1\r\n$4\r\nPING\r\n":         "other", // Redis' RESP
		"get / HTTP/1.1":               "other", // methods are case-sensitive
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ /": "other",
		" GET /":                       "other",
	} {
		if got := relay.LooksHTTP([]byte(in)); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

// TestInterceptOutside: intercepted connections bound outside the mesh.
// One that speaks HTTP reaches the HTTP listener with its original
// destination as its local address and its bytes intact; any other is
// closed with registry_only and relayed to its destination with
// allow_any, a server that speaks first included; a flow record tells
// each.
func TestInterceptOutside(t *testing.T) {
	c := newCA(t)
	out, tel := flowRecords(t)
	met := metrics.New()
	o, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, "web"), Telemetry: tel, Metrics: met, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Every connection was going to dst, as iptables would say.
	var dst atomic.Pointer[netip.AddrPort]
	il := o.InterceptWith(ln, func(net.Conn) (netip.AddrPort, error) {
		if d := dst.Load(); d != nil {
			return *d, nil
		}
		return netip.AddrPort{}, errors.New("not redirected")
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "http %s %s to %s", r.Method, r.URL.Path, local)
	})}
	go srv.Serve(il)
	t.Cleanup(func() { srv.Close() })
	echo, greeter := lineServer(t, "outside", ""), lineServer(t, "outside", "220 greeter ready")
	to := func(d netip.AddrPort) { dst.Store(&d) }

	// HTTP, the listener's own generations take it.
	to(echo)
	resp, err := http.Get("http://" + ln.Addr().String() + "/orders/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "http GET /orders/1 to " + echo.String(); string(body) != want {
		t.Fatalf("HTTP outside the mesh: %q, want %q", body, want)
	}

	// registry_only: closed, whatever it sends.
	for _, first := range []string{"\x16\x03\x01 a TLS client", "SET k v"} {
		if got := call(t, ln.Addr().String(), first); got != "" {
			t.Fatalf("registry_only relayed %q: %q", first, got)
		}
	}

	// allow_any: the bytes reach the destination and come back.
	o.SetOutside(relay.OutsidePass)
	if got := call(t, ln.Addr().String(), "\x16\x03\x01 a TLS client", "second line"); got != "outside: \x16\x03\x01 a TLS client\noutside: second line\n" {
		t.Fatalf("allow_any: %q", got)
	}
	// A server that speaks first: the client waits for its greeting.
	to(greeter)
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	if l, err := rd.ReadString('\n'); err != nil || l != "220 greeter ready\n" {
		t.Fatalf("greeting: %q %v", l, err)
	}
	io.WriteString(conn, "EHLO web\n")
	if l, err := rd.ReadString('\n'); err != nil || l != "outside: EHLO web\n" {
		t.Fatalf("after the greeting: %q %v", l, err)
	}
	conn.Close()
	// An address where nothing listens: the client is closed.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().(*net.TCPAddr).AddrPort()
	dead.Close()
	to(deadAddr)
	if got := call(t, ln.Addr().String(), "\x00binary"); got != "" {
		t.Fatalf("to a closed port: %q", got)
	}

	// An address of an HTTP service of the mesh (here, as its name
	// resolved): served as HTTP, even when the client waits before its
	// first request, as a client that connects ahead does.
	o.SetAliases(nil, map[netip.Addr]bool{echo.Addr(): true})
	to(echo)
	late, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	time.Sleep(3 * relay.DefaultDetectTimeout)
	late.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(late, "GET /late HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(late), nil)
	if err != nil {
		t.Fatalf("a late request to an HTTP service's address: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	if want := "http GET /late to " + echo.String(); string(body) != want {
		t.Fatalf("a late request: %q, want %q", body, want)
	}

	// Two refusals, two passed, one unreachable.
	waitRecords(t, out, 5)
	var reasons []string
	for _, r := range out.all(t) {
		if r["kind"] != "flow" || r["listener"] != "outbound" || r["source_identity"] != "spiffe://wasmgate.local/ns/default/sa/web" {
			t.Errorf("record %v", r)
		}
		reasons = append(reasons, fmt.Sprintf("%v %v", r["destination_address"], r["close_reason"]))
	}
	want := []string{echo.String() + " outside_mesh", echo.String() + " outside_mesh", echo.String() + " peer_closed",
		greeter.String() + " peer_closed", deadAddr.String() + " upstream_unreachable"}
	slices.Sort(reasons)
	slices.Sort(want)
	if strings.Join(reasons, "|") != strings.Join(want, "|") {
		t.Fatalf("flows %q, want %q", reasons, want)
	}
	// And in the metrics: two refused, three passed on (one of which
	// found nothing there).
	black, pass := met.TCP("mesh-tcp-outbound", "blackhole"), met.TCP("mesh-tcp-outbound", "passthrough")
	if b, p, f := testutil.ToFloat64(black.Connections), testutil.ToFloat64(pass.Connections), testutil.ToFloat64(pass.ConnectFailures); b != 2 || p != 3 || f != 1 {
		t.Fatalf("connections: blackhole %v, passthrough %v (connect failures %v); want 2, 3 (1)", b, p, f)
	}
}

// TestServiceEntries: under registry_only, an intercepted TLS connection
// whose server name a service entry admits, on its port, is relayed to
// its original destination, ClientHello and all, and its handshake with
// the host outside completes; one that names another host, or the host
// on another port, or sends no server name, is closed.
func TestServiceEntries(t *testing.T) {
	c := newCA(t)
	o, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, "web"), ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	// The host outside: a TLS server that echoes lines.
	cert := c.identity(t, "outside").cert
	tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			conn, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					fmt.Fprintf(conn, "outside: %s\n", sc.Text())
				}
			}()
		}
	}()
	outside := tl.Addr().(*net.TCPAddr).AddrPort()
	addr := interceptTo(t, o, outside)
	o.SetEntries([]policy.ServiceEntry{{Name: "apis", Namespace: "default", Hosts: []string{"api.example.com", "*.payments.test"}, Ports: []int{int(outside.Port())}}})

	talk := func(serverName string) (string, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "hello\n")
		return bufio.NewReader(conn).ReadString('\n')
	}
	for _, name := range []string{"api.example.com", "eu.payments.test", "API.example.com"} {
		if got, err := talk(name); err != nil || got != "outside: hello\n" {
			t.Errorf("server name %s: %q %v, want it let out", name, got, err)
		}
	}
	for _, name := range []string{"evil.example.com", "payments.test", ""} {
		if got, err := talk(name); err == nil {
			t.Errorf("server name %q: let out (%q)", name, got)
		}
	}
	// Another port than the entry's.
	o.SetEntries([]policy.ServiceEntry{{Name: "apis", Namespace: "default", Hosts: []string{"api.example.com"}, Ports: []int{443}}})
	if got, err := talk("api.example.com"); err == nil {
		t.Errorf("on a port the entry does not name: let out (%q)", got)
	}

	// An entry of addresses lets any connection to them out, whatever it
	// speaks: a database's protocol, and HTTP too.
	db := lineServer(t, "db", "")
	dbAddr := interceptTo(t, o, db)
	if got := call(t, dbAddr, "SELECT 1"); got != "" {
		t.Fatalf("before an entry of its address, a connection was let out: %q", got)
	}
	o.SetEntries([]policy.ServiceEntry{{Name: "db", Namespace: "default", Addresses: []string{"127.0.0.0/8"}, Ports: []int{int(db.Port())}}})
	for _, line := range []string{"SELECT 1", "GET / HTTP/1.1"} {
		if got := call(t, dbAddr, line); got != "db: "+line+"\n" {
			t.Errorf("an entry of its address, %q: %q", line, got)
		}
	}
}

// interceptTo is an intercepting listener of o whose connections were
// all bound for dst: its address. What the outbound hands on as HTTP
// is closed; the rest it relays itself.
func interceptTo(t *testing.T, o *relay.Outbound, dst netip.AddrPort) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	il := o.InterceptWith(ln, func(net.Conn) (netip.AddrPort, error) { return dst, nil })
	go func() {
		for {
			conn, err := il.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	return ln.Addr().String()
}
