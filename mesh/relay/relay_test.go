package relay_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/mesh/relay"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

const td = "wasmgate.local"

// ca issues X.509-SVIDs of one trust domain.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key}
}

// mesh is a workload identity: one SVID and the CA's bundle.
type mesh struct {
	cert   *tls.Certificate
	bundle *x509bundle.Bundle
}

var _ tlsconf.Mesh = (*mesh)(nil)

func (m *mesh) Certificate() (*tls.Certificate, error) { return m.cert, nil }
func (m *mesh) TrustBundle() *x509bundle.Bundle        { return m.bundle }

func (c *ca) identity(t testing.TB, sa string) *mesh {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(policy.SPIFFEID(td, "default", sa))
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &mesh{cert: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		bundle: x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), []*x509.Certificate{c.cert})}
}

// echoApp answers each line with "name: line" and closes once the client
// has finished sending.
func echoApp(t testing.TB, name string) int {
	t.Helper()
	return int(lineServer(t, name, "").Port())
}

// lineServer listens on loopback: it greets first when greet is set,
// then answers each line it reads with "name: line".
func lineServer(t testing.TB, name, greet string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if greet != "" {
					io.WriteString(c, greet+"\n")
				}
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s: %s\n", name, sc.Text())
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// call sends lines to addr, ends its side and reads until the other
// side closes.
func call(t *testing.T, addr string, lines ...string) string {
	t.Helper()
	return exchange(t, addr, false, lines)
}

// converse sends lines to addr one at a time, each once the answer to
// the one before came, and returns the answers until the connection
// ends.
func converse(t *testing.T, addr string, lines ...string) string {
	t.Helper()
	return exchange(t, addr, true, lines)
}

func exchange(t *testing.T, addr string, oneByOne bool, lines []string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var got strings.Builder
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			return got.String()
		}
		if !oneByOne {
			continue
		}
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil {
			return got.String()
		}
	}
	if oneByOne {
		return got.String()
	}
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(r)
	return string(b)
}

// records collects what a telemetry pipeline writes, one JSON object a
// line.
// flowRecords is a telemetry pipeline whose flow records go to out.
func flowRecords(t testing.TB) (*records, *telemetry.Pipeline) {
	t.Helper()
	out := &records{}
	tel, err := telemetry.New(&config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}},
		Flow: []string{"out"}}, telemetry.WithStdout(out))
	if err != nil {
		t.Fatal(err)
	}
	return out, tel
}

type records struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *records) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *records) all(t *testing.T) []map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// inbound serves a TCP app "db" behind a sidecar with the given policies
// and returns its address.
func inbound(t testing.TB, c *ca, o relay.InboundOptions, policies string) string {
	t.Helper()
	o.Mesh = c.identity(t, "db")
	o.Guard = policy.NewGuard("default", "db")
	if policies != "" {
		d, err := policy.Parse([]byte(policies))
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Guard.Load(1, d.AuthorizationPolicies, d.PeerAuthentications); err != nil {
			t.Fatal(err)
		}
	}
	o.AppPort = echoApp(t, "db")
	o.Destination = "db.default"
	in, err := relay.NewInbound(o)
	if err != nil {
		t.Fatal(err)
	}
	return serveInbound(t, in)
}

// serveInbound serves in on a loopback port until the test ends and
// returns its address.
func serveInbound(t testing.TB, in *relay.Inbound) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); in.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done; in.Close() })
	return ln.Addr().String()
}

// outbound is the sidecar of sa, with a local port for db at the given
// endpoints.
func outbound(t testing.TB, c *ca, sa string, tel *telemetry.Pipeline, eps ...relay.Endpoint) string {
	t.Helper()
	out, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, sa), Telemetry: tel, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(out.Close)
	if err := out.Update(map[string][]relay.Endpoint{"db.default": eps}, nil); err != nil {
		t.Fatal(err)
	}
	a, err := out.Listen("db.default", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

const webOnly = `
authorization_policies:
  - name: db-callers
    namespace: default
    service: db
    rules:
      - from: [{principals: ["spiffe://wasmgate.local/ns/default/sa/web"]}]
`

// TestRelay: web's connection reaches db's app over mTLS, half close and
// all; orders', which the policy does not name, is closed; each makes a
// decision record and flow records on both sides.
func TestRelay(t *testing.T) {
	c := newCA(t)
	var out records
	tel, err := telemetry.New(&config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}},
		Decision: []string{"out"}, Flow: []string{"out"}}, telemetry.WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	met := metrics.New()
	db := inbound(t, c, relay.InboundOptions{Telemetry: tel, Metrics: met}, webOnly)
	dbID := policy.SPIFFEID(td, "default", "db")
	web := outbound(t, c, "web", tel, relay.Endpoint{Address: db, Identity: dbID})
	orders := outbound(t, c, "orders", tel, relay.Endpoint{Address: db, Identity: dbID})
	defer func() {
		// Both connections reached db's inbound; web's got through,
		// with its bytes each way.
		st := met.TCP("mesh-tcp-inbound", "app")
		if n := testutil.ToFloat64(st.Connections); n != 2 {
			t.Errorf("wasmgate_tcp_connections_total of db's inbound = %v, want 2", n)
		}
		if in, out := testutil.ToFloat64(st.BytesDown), testutil.ToFloat64(st.BytesUp); in != 18 || out != 26 {
			t.Errorf("wasmgate_tcp_received_bytes_total of db's inbound = %v down, %v up; want 18 and 26", in, out)
		}
		if n := testutil.ToFloat64(st.Active); n != 0 {
			t.Errorf("wasmgate_tcp_active_connections of db's inbound = %v after the calls", n)
		}
	}()

	if got := call(t, web, "select 1", "select 2"); got != "db: select 1\ndb: select 2\n" {
		t.Fatalf("web -> db: %q", got)
	}
	if got := call(t, orders, "select 1"); got != "" {
		t.Fatalf("orders -> db was relayed: %q", got)
	}
	// Two decisions, and a flow on each side of each connection, written
	// by the sink's goroutine once the connections are over.
	waitRecords(t, &out, 6)
	var verdicts []string
	flows := map[string]map[string]any{}
	for _, r := range out.all(t) {
		switch r["kind"] {
		case "decision":
			verdicts = append(verdicts, fmt.Sprintf("%v %v %v", r["verdict"], r["source_identity"], r["policy"]))
			if r["destination"] != "db.default" || r["destination_identity"] != dbID || r["source_address"] == "" {
				t.Errorf("decision record %v", r)
			}
		case "flow":
			flows[fmt.Sprintf("%v %v", r["listener"], r["source_identity"])] = r
		}
	}
	want := []string{"allow spiffe://wasmgate.local/ns/default/sa/web db-callers", "deny spiffe://wasmgate.local/ns/default/sa/orders <nil>"}
	if strings.Join(verdicts, "|") != strings.Join(want, "|") {
		t.Fatalf("decisions %q, want %q", verdicts, want)
	}
	in := flows["inbound spiffe://wasmgate.local/ns/default/sa/web"]
	if in == nil || in["bytes_in"] != float64(18) || in["bytes_out"] != float64(26) || in["tls_version"] != "TLS 1.3" || in["destination_identity"] != dbID {
		t.Fatalf("web's inbound flow: %v (all: %v)", in, flows)
	}
	if r := flows["inbound spiffe://wasmgate.local/ns/default/sa/orders"]; r == nil || r["close_reason"] != "policy_denied" {
		t.Fatalf("orders' inbound flow: %v", r)
	}
	if r := flows["outbound spiffe://wasmgate.local/ns/default/sa/web"]; r == nil || r["destination_address"] != db || r["destination_identity"] != dbID {
		t.Fatalf("web's outbound flow: %v", r)
	}
}

// waitRecords waits until the sink has written n records.
func waitRecords(t *testing.T, out *records, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(out.all(t)) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(out.all(t)); got < n {
		t.Fatalf("%d records, want %d: %s", got, n, out.buf.String())
	}
}

// TestRelayIdentity: an endpoint whose certificate is not the service's
// is refused in the handshake and the next endpoint is tried; with no
// endpoint left, the app's connection is closed.
func TestRelayIdentity(t *testing.T) {
	c := newCA(t)
	db := inbound(t, c, relay.InboundOptions{}, "")
	dbID := policy.SPIFFEID(td, "default", "db")
	impostor := inbound(t, c, relay.InboundOptions{}, "")
	// Both inbounds present db's identity; the caller expects another one
	// at the impostor's address.
	web := outbound(t, c, "web", nil,
		relay.Endpoint{Address: impostor, Identity: policy.SPIFFEID(td, "default", "cache")},
		relay.Endpoint{Address: db, Identity: dbID})
	for range 5 {
		if got := call(t, web, "hi"); got != "db: hi\n" {
			t.Fatalf("web -> db with an impostor beside it: %q", got)
		}
	}
	only := outbound(t, c, "web", nil, relay.Endpoint{Address: impostor, Identity: policy.SPIFFEID(td, "default", "cache")})
	if got := call(t, only, "hi"); got != "" {
		t.Fatalf("relayed to a peer that is not the service: %q", got)
	}
}

// TestInboundModes: strict refuses plain text and HTTP clients of the
// mesh (another ALPN); permissive relays plain text, without an identity.
func TestInboundModes(t *testing.T) {
	c := newCA(t)
	strict := inbound(t, c, relay.InboundOptions{HandshakeTimeout: 2 * time.Second}, "")
	if got := call(t, strict, "plain"); strings.Contains(got, "db: plain") {
		t.Fatalf("a strict inbound relayed plain text: %q", got)
	}
	conf, err := tlsconf.ClientConfig(&config.ClusterTLS{Mesh: true}, strict, config.ProtocolHTTP2, tlsconf.WithMesh(c.identity(t, "web")))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := tls.Dial("tcp", strict, conf); err == nil {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		tc.Close()
		if err == nil {
			t.Fatal("an HTTP client of the mesh got an answer from a TCP inbound")
		}
	}
	permissive := inbound(t, c, relay.InboundOptions{Mode: policy.Permissive}, "")
	if got := call(t, permissive, "plain"); got != "db: plain\n" {
		t.Fatalf("permissive, plain text: %q", got)
	}
	// The service's peer_authentication wins over the option.
	byPolicy := inbound(t, c, relay.InboundOptions{Mode: policy.Permissive}, `
peer_authentications:
  - name: db-strict
    namespace: default
    service: db
    mode: STRICT
`)
	if got := call(t, byPolicy, "plain"); strings.Contains(got, "db: plain") {
		t.Fatalf("a peer_authentication's strict did not apply: %q", got)
	}
	dbID := policy.SPIFFEID(td, "default", "db")
	web := outbound(t, c, "web", nil, relay.Endpoint{Address: permissive, Identity: dbID})
	if got := call(t, web, "tls"); got != "db: tls\n" {
		t.Fatalf("permissive, mTLS: %q", got)
	}
}

// TestLookup: an intercepted connection's original destination finds a
// TCP service by an endpoint's address, or by its IP when no other
// service has an endpoint there.
func TestLookup(t *testing.T) {
	c := newCA(t)
	out, err := relay.NewOutbound(relay.OutboundOptions{Mesh: c.identity(t, "web")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	err = out.Update(map[string][]relay.Endpoint{
		"db.default":    {{Address: "10.0.0.1:15006"}, {Address: "10.0.0.9:15006"}},
		"cache.default": {{Address: "10.0.0.2:15006"}, {Address: "10.0.0.9:15007"}},
	}, []netip.Addr{netip.MustParseAddr("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	// The names resolve to cluster IPs; one alias is an endpoint's IP.
	out.SetAliases(map[netip.Addr]string{
		netip.MustParseAddr("10.96.0.10"): "db.default",
		netip.MustParseAddr("10.0.0.2"):   "db.default", // an HTTP service's endpoint
		netip.MustParseAddr("10.0.0.1"):   "cache.default",
	}, nil)
	for _, tc := range []struct {
		dst, want string
	}{
		{"10.96.0.10:5432", "db.default"},
		{"10.0.0.1:5432", "db.default"}, // the endpoint wins over the alias
		{"10.0.0.1:15006", "db.default"},
		{"10.0.0.2:6379", ""},               // an HTTP service's endpoint is there too
		{"10.0.0.2:15006", "cache.default"}, // but not at this address
		{"10.0.0.9:80", ""},                 // two TCP services there
		{"10.0.0.9:15007", "cache.default"},
		{"10.0.0.3:5432", ""},
	} {
		got, ok := out.Lookup(netip.MustParseAddrPort(tc.dst))
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Lookup(%s) = %q %v, want %q", tc.dst, got, ok, tc.want)
		}
	}
}

// BenchmarkRelay: round trips of 1 KiB lines on one connection relayed
// through both sidecars (app -> outbound -> mTLS -> inbound -> app), and
// a new connection per operation (two handshakes' worth of the caller's
// and the peer's work, and the policy decision).
func BenchmarkRelay(b *testing.B) {
	c := newCA(b)
	db := inbound(b, c, relay.InboundOptions{}, webOnly)
	web := outbound(b, c, "web", nil, relay.Endpoint{Address: db, Identity: policy.SPIFFEID(td, "default", "db")})
	line := strings.Repeat("x", 1023)
	b.Run("round trip 1KiB", func(b *testing.B) {
		conn, err := net.Dial("tcp", web)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		b.ReportAllocs()
		b.SetBytes(1024)
		for b.Loop() {
			io.WriteString(conn, line+"\n")
			if _, err := r.ReadString('\n'); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("connection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			conn, err := net.Dial("tcp", web)
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(conn, "x\n")
			if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
				b.Fatal(err)
			}
			conn.Close()
		}
	})
}
