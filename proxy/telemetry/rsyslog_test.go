package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rsyslog is a real rsyslogd listening on one loopback port and writing
// every message it receives, parsed, as one JSON line to out.
type rsyslog struct {
	addr string
	out  string
	ca   string
}

// rsyslogLine is what rsyslog parsed out of one message.
type rsyslogLine struct {
	Pri      string `json:"pri"`
	Time     string `json:"timereported"`
	Hostname string `json:"hostname"`
	AppName  string `json:"app-name"`
	ProcID   string `json:"procid"`
	MsgID    string `json:"msgid"`
	Msg      string `json:"msg"`
	Protocol string `json:"protocol-version"`
}

// startRsyslog starts rsyslogd for network ("udp", "tcp" or "tls") and
// stops it when the test ends. It skips the test when rsyslogd is not
// installed (Debian packages rsyslog and, for TLS, rsyslog-gnutls).
func startRsyslog(t *testing.T, network string) *rsyslog {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/rsyslogd"); err != nil {
			t.Skip("rsyslogd is not installed (Debian package rsyslog)")
		}
		bin = "/usr/sbin/rsyslogd"
	}
	if network == "tls" {
		if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil {
			if matches, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(matches) == 0 {
				t.Skip("rsyslog's TLS driver is not installed (Debian package rsyslog-gnutls)")
			}
		}
	}
	dir := t.TempDir()
	rs := &rsyslog{out: filepath.Join(dir, "out.jsonl")}
	var global, input string
	switch network {
	case "udp":
		port := freeUDPPort(t)
		rs.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		input = fmt.Sprintf(`module(load="imudp")
input(type="imudp" address="127.0.0.1" port="%d")`, port)
	case "tcp", "tls":
		portFile := filepath.Join(dir, "port")
		if network == "tls" {
			rs.ca = writeTestPKI(t, dir)
			global = fmt.Sprintf(`global(DefaultNetstreamDriverCAFile="%[1]s/ca.pem" DefaultNetstreamDriverCertFile="%[1]s/server.pem" DefaultNetstreamDriverKeyFile="%[1]s/server.key")`, dir)
			input = `module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")`
		} else {
			input = `module(load="imtcp")`
		}
		input += fmt.Sprintf("\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"0\" listenPortFileName=\"%s\")", portFile)
		defer func() {
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, err := os.ReadFile(portFile)
				if p := strings.TrimSpace(string(b)); err == nil && p != "" && p != "0" {
					rs.addr = net.JoinHostPort("127.0.0.1", p)
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("rsyslogd did not report its port in %s", portFile)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	conf := fmt.Sprintf(`global(workDirectory="%[1]s" maxMessageSize="64k")
%[2]s
%[3]s
template(name="parsed" type="list") {
  constant(value="{")
  property(name="pri" format="jsonf") constant(value=",")
  property(name="timereported" dateFormat="rfc3339" format="jsonf") constant(value=",")
  property(name="hostname" format="jsonf") constant(value=",")
  property(name="app-name" format="jsonf") constant(value=",")
  property(name="procid" format="jsonf") constant(value=",")
  property(name="msgid" format="jsonf") constant(value=",")
  property(name="protocol-version" format="jsonf") constant(value=",")
  property(name="msg" format="jsonf")
  constant(value="}\n")
}
action(type="omfile" file="%[4]s" template="parsed" flushOnTXEnd="on" asyncWriting="off")
`, dir, global, input, rs.out)
	confPath := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rsyslogd.pid"))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rsyslogd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", stderr.String())
		}
	})
	return rs
}

// lines reads what rsyslog wrote so far.
func (rs *rsyslog) lines(t *testing.T) []rsyslogLine {
	t.Helper()
	f, err := os.Open(rs.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []rsyslogLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l rsyslogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("rsyslog wrote %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// waitFor polls rsyslog's output until cond holds for the lines read, for
// at most 15 seconds.
func (rs *rsyslog) waitFor(t *testing.T, what string, cond func([]rsyslogLine) bool) []rsyslogLine {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines := rs.lines(t)
		if cond(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog never received %s; it has %d lines: %+v", what, len(lines), lines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// testClientID is the SPIFFE ID of writeTestPKI's client certificate.
const testClientID = "spiffe://test.local/ns/shop/sa/web"

// writeTestPKI writes a CA (ca.pem), a server certificate for 127.0.0.1
// (server.pem, server.key) and a client certificate (client.pem,
// client.key) it signs, and returns the CA's path.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "telemetry test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("server.pem", "CERTIFICATE", der)
	write("server.key", "PRIVATE KEY", keyDER)
	// A client certificate whose URI SAN is a SPIFFE ID.
	ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(testClientID)
	ctmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "web"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), URIs: []*url.URL{id},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cder, err := x509.CreateCertificate(rand.Reader, ctmpl, caCert, &ckey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ckeyDER, err := x509.MarshalPKCS8PrivateKey(ckey)
	if err != nil {
		t.Fatal(err)
	}
	write("client.pem", "CERTIFICATE", cder)
	write("client.key", "PRIVATE KEY", ckeyDER)
	return filepath.Join(dir, "ca.pem")
}

// probe sends event records until rsyslog shows one: for UDP this is the
// only way to know the listener is up.
func probe(t *testing.T, rs *rsyslog, p *Pipeline) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := p.Acquire(KindEvent)
		r.Time = time.Now()
		r.Event.Type = "probe"
		p.Emit(r)
		time.Sleep(50 * time.Millisecond)
		for _, l := range rs.lines(t) {
			if l.MsgID == "event" && strings.Contains(l.Msg, "probe") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("rsyslog received no probe")
		}
	}
}

// ctx10s is a drain context for tests.
func ctx10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
