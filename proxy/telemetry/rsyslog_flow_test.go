package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// TestRsyslogTLSFlowAndRotation carries a flow record of a real mTLS
// connection, made over the proxy's TLS layer, and a certificate_rotated
// event to rsyslog over TLS as CEF, and reads them back as a SIEM would:
// the flow names the TLS version, cipher suite and the client's SPIFFE
// ID; the event names the certificate's SPIFFE ID, serial and expiry.
func TestRsyslogTLSFlowAndRotation(t *testing.T) {
	rs := startRsyslog(t, "tls")
	p, err := New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "siem", Type: "syslog", Format: "cef",
			Syslog: &config.SyslogSink{Network: "tls", Address: rs.addr, TLS: &config.ClientTLS{CAFile: rs.ca, ServerName: "127.0.0.1"}}}},
		Flow: []string{"siem"}, Event: []string{"siem"},
	}, WithFlushEvery(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(ctx10s(t))
	probe(t, rs, p)

	// The listener's PKI: the CA that signed rsyslog's certificate also
	// signs the proxy's and the client's.
	dir := filepath.Dir(rs.ca)
	srv, err := tlsconf.NewServer(config.ListenerTLS{
		Certificates: []config.CertificateFiles{{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key")}},
		ClientCAFile: rs.ca,
	}, []string{"http/1.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := tlsconf.NewListener(p.FlowListener(raw, "inbound"), srv)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if err := c.(*tlsconf.Conn).Handshake(); err != nil {
			return
		}
		_, _ = io.Copy(c, io.LimitReader(c, 4))
	}()
	pem, err := os.ReadFile(rs.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = cc.Write([]byte("ping"))
	_, _ = io.ReadFull(cc, make([]byte, 4))
	cc.Close()

	notAfter := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	p.CertificateRotated("spiffe://test.local/ns/shop/sa/proxy", "1f2e3d", notAfter, "root-2")

	var flow, event cef
	rs.waitFor(t, "the flow record and the rotation event", func(ls []rsyslogLine) bool {
		for _, l := range ls {
			c, err := parseCEF(l.Msg)
			if err != nil {
				t.Fatalf("%q: %v", l.Msg, err)
			}
			switch {
			case l.MsgID == "flow":
				flow = c
			case l.MsgID == "event" && c.header[4] == "event:certificate_rotated":
				event = c
			}
		}
		return flow.ext != nil && event.ext != nil
	})
	_, port, _ := net.SplitHostPort(raw.Addr().String())
	for k, v := range map[string]string{"suser": testClientID, "dpt": port, "dst": "127.0.0.1", "cs1Label": "tlsVersion", "cs1": "TLS 1.3",
		"cs2Label": "tlsCipher", "cs3": "inbound"} {
		if flow.ext[k] != v {
			t.Errorf("flow: %s = %q, want %q", k, flow.ext[k], v)
		}
	}
	if !strings.HasPrefix(flow.ext["cs2"], "TLS_") || flow.ext["in"] == "" || flow.ext["in"] == "0" {
		t.Errorf("flow: %v", flow.ext)
	}
	if want := "spiffe_id=spiffe://test.local/ns/shop/sa/proxy serial=1f2e3d not_after=2026-12-06T01:02:03Z authority=root-2"; event.ext["cs2"] != want ||
		event.ext["cs1"] != "certificate_rotated" {
		t.Errorf("event: %v, want cs2 %q", event.ext, want)
	}
}
