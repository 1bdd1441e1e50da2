package telemetry

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// TestFlowListener serves a real TLS listener wrapped for flows, sends
// bytes each way from a real client, and reads back the one flow record
// the connection's close emits.
func TestFlowListener(t *testing.T) {
	dir := t.TempDir()
	caPath := writeTestPKI(t, dir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p, err := New(&config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}}, Flow: []string{"out"}}, WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := p.FlowListener(tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}}), "inbound")
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 5)
		_, _ = io.ReadFull(c, buf)
		_, _ = c.Write([]byte("pong pong"))
		_, _ = c.Read(buf) // the client's close: EOF
		c.Close()
	}()
	pem, _ := os.ReadFile(caPath)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cc, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = cc.Write([]byte("ping!"))
	_, _ = io.ReadFull(cc, make([]byte, 9))
	cc.Close()
	<-served
	if err := p.Shutdown(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rec); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	if rec["kind"] != "flow" || rec["listener"] != "inbound" || rec["bytes_in"] != 5.0 || rec["bytes_out"] != 9.0 ||
		rec["tls_version"] != "TLS 1.3" || rec["close_reason"] != "peer_closed" ||
		!strings.HasPrefix(rec["tls_cipher"].(string), "TLS_") || rec["destination_address"] != raw.Addr().String() {
		t.Errorf("flow record %v", rec)
	}
}

// TestFlowListenerOff: without a flow sink the listener is not wrapped.
func TestFlowListenerOff(t *testing.T) {
	p, _ := New(nil)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if p.FlowListener(raw, "x") != raw {
		t.Error("wrapped without a flow sink")
	}
}
