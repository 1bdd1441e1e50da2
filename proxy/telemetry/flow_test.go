package telemetry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// TestFlowListener wraps a real socket for flows beneath the proxy's TLS
// layer, as a listener does, exchanges bytes with a real client, and
// reads back the one flow record the connection's close emits: bytes are
// counted on the wire, and the TLS version, cipher suite and the
// client's verified SPIFFE ID come from the handshake; a clear-text
// connection leaves them out.
func TestFlowListener(t *testing.T) {
	dir := t.TempDir()
	caPath := telemetry.WriteTestPKI(t, dir)
	pem, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tlsconf.NewServer(config.ListenerTLS{
		Certificates: []config.CertificateFiles{{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key")}},
		ClientCAFile: caPath, ClientAuth: "optional",
	}, []string{"http/1.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		client  *tls.Config // nil: clear text
		version string
		cipher  string
		peer    string
	}{
		{name: "mtls 1.3", client: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}},
			version: "TLS 1.3", cipher: "TLS_", peer: telemetry.TestClientID},
		{name: "tls 1.2 no client certificate", client: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
			version: "TLS 1.2", cipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
		{name: "clear text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			p, err := telemetry.New(&config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}}, Flow: []string{"out"}},
				telemetry.WithStdout(&out))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := p.FlowListener(raw, "inbound")
			if tc.client != nil {
				l = tlsconf.NewListener(l, srv)
			}
			defer l.Close()
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := l.Accept()
				if err != nil {
					return
				}
				// The proxy's HTTP layer handshakes before it reads.
				if h, ok := c.(interface{ Handshake() error }); ok {
					if err := h.Handshake(); err != nil {
						t.Error(err)
					}
				}
				buf := make([]byte, 5)
				_, _ = io.ReadFull(c, buf)
				_, _ = c.Write([]byte("pong pong"))
				_, _ = c.Read(buf) // the client's close: EOF
				c.Close()
			}()
			var cc net.Conn
			if tc.client != nil {
				cc, err = tls.Dial("tcp", raw.Addr().String(), tc.client)
			} else {
				cc, err = net.Dial("tcp", raw.Addr().String())
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _ = cc.Write([]byte("ping!"))
			_, _ = io.ReadFull(cc, make([]byte, 9))
			cc.Close()
			<-served
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rec); err != nil {
				t.Fatalf("%q: %v", out.String(), err)
			}
			// A TLS client's close is its close_notify alert, which
			// only the TLS layer reads as the end: the socket saw the
			// server close first.
			reason := "peer_closed"
			if tc.client != nil {
				reason = "local_close"
			}
			if rec["kind"] != "flow" || rec["listener"] != "inbound" || rec["close_reason"] != reason ||
				rec["destination_address"] != raw.Addr().String() {
				t.Errorf("flow record %v", rec)
			}
			in, outb := rec["bytes_in"].(float64), rec["bytes_out"].(float64)
			if tc.client == nil && (in != 5 || outb != 9) || tc.client != nil && (in <= 5 || outb <= 9) {
				t.Errorf("bytes in %v, out %v: not the bytes on the wire", in, outb)
			}
			version, _ := rec["tls_version"].(string)
			cipher, _ := rec["tls_cipher"].(string)
			peer, _ := rec["source_identity"].(string)
			if version != tc.version || !strings.HasPrefix(cipher, tc.cipher) || tc.cipher == "" && cipher != "" || peer != tc.peer {
				t.Errorf("tls_version %q, tls_cipher %q, source_identity %q; want %q, %q..., %q", version, cipher, peer, tc.version, tc.cipher, tc.peer)
			}
		})
	}
}

// TestFlowListenerOff: without a flow sink connections are not wrapped.
func TestFlowListenerOff(t *testing.T) {
	p, _ := telemetry.New(nil)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := p.FlowListener(raw, "x")
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", raw.Addr().String()); err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*telemetry.FlowConn); ok {
		t.Error("a connection was wrapped without a flow sink")
	}
}
