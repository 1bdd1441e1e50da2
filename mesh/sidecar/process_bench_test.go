package sidecar_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/internal/testaddr"
	"github.com/wasmgate/wasmgate/mesh/sidecar"
)

// BenchmarkSidecarProcesses measures the pair as it runs in production:
// web's and orders' sidecars are `wasmgate run --sidecar` processes of
// their own, with their records (access, decision, flow, event) written
// to a file sink, while the control plane, the apps and the client run in
// this process. The client sends GET / with Host: orders to web's outbound
// listener from two goroutines; the call crosses in mTLS to orders'
// inbound listener, passes its policy, and reaches orders' app.
//
// pair-cpu-us/op is the two sidecar processes' CPU time (user and system,
// from /proc/PID/stat) per request, less what they spend per second with
// no request (measured for two seconds before the run: renewals, the
// registry's watch). Nothing else shares it: the client's and the app's
// work is in this process, not subtracted from a total. web-rss-MB and
// orders-rss-MB are each process's resident memory once the run ends.
// downstream is the same with --hop-protocol downstream, and
// http2-2-threads with --concurrency 2 instead of the default one thread.
// The sidecars listen on loopback, as on one host.
//
//	go test -run '^$' -bench SidecarProcesses -benchtime 20000x ./mesh/sidecar
func BenchmarkSidecarProcesses(b *testing.B) {
	bin := wasmgateBin(b)
	for _, c := range []struct {
		name, hop string
		threads   int
	}{{"http2", "", 0}, {"downstream", sidecar.HopDownstream, 0}, {"http2-2-threads", "", 2}} {
		pair := startProcessPair(b, bin, c.hop, c.threads)
		b.Run(c.name, func(b *testing.B) {
			cpu := func() time.Duration { return procCPU(b, pair.pids...) }
			benchRequestsCPU(b, pair.outbound, cpu, 2*time.Second, "pair-cpu-us/op", "pair-req-cpu-us/op")
			for i, svc := range []string{"orders", "web"} {
				b.ReportMetric(float64(procRSS(b, pair.pids[i]))/(1<<20), svc+"-rss-MB")
			}
		})
		pair.stop()
	}
	b.Run("nginx-pair", func(b *testing.B) {
		port, serve := app(b, "orders")
		serve("")
		pair := startNginxPair(b, port)
		cpu := func() time.Duration { return procCPU(b, pair.pids...) }
		benchRequestsCPU(b, pair.outbound, cpu, 2*time.Second, "pair-cpu-us/op", "pair-req-cpu-us/op")
	})
}

// processPair is web's and orders' sidecars as processes, or the two
// processes that stand in their place.
type processPair struct {
	outbound string // web's outbound listener
	pids     []int  // in the order started
	quit     os.Signal
	cmds     []*exec.Cmd
	outs     []*lockedBuffer
}

func (p *processPair) start(b testing.TB, bin string, args ...string) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p.cmds, p.outs, p.pids = append(p.cmds, cmd), append(p.outs, out), append(p.pids, cmd.Process.Pid)
}

// stop ends the processes and waits for them; their output is then in
// p.outs.
func (p *processPair) stop() {
	for _, c := range p.cmds {
		c.Process.Signal(p.quit)
	}
	for _, c := range p.cmds {
		c.Wait()
	}
	p.cmds = nil
}

// lockedBuffer is a process's output, read while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (p *processPair) output() string {
	var all []string
	for _, o := range p.outs {
		all = append(all, o.String())
	}
	return strings.Join(all, "\n")
}

// startProcessPair runs a control plane in this process, orders' app, and
// web's and orders' sidecars as wasmgate processes (with --hop-protocol
// hop and --concurrency threads when not empty or 0), and waits until a call
// from web's outbound listener reaches orders' app.
func startProcessPair(b *testing.B, bin, hop string, threads int) *processPair {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cp, admin, roots := startControlPlane(b)
	dir := b.TempDir()
	bundle := filepath.Join(dir, "trust-bundle.pem")
	if err := os.WriteFile(bundle, roots, 0o644); err != nil {
		b.Fatal(err)
	}
	ordersPort, serve := app(b, "orders")
	serve("")
	pair := &processPair{quit: syscall.SIGTERM}
	b.Cleanup(pair.stop)
	for _, svc := range []struct {
		name, calls string
		appPort     int
	}{{"orders", "", ordersPort}, {"web", "orders", port(b, testaddr.Free(b))}} {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{Namespace: "default", ServiceAccount: svc.name})
		if err != nil {
			b.Fatal(err)
		}
		own := filepath.Join(dir, svc.name)
		outbound := testaddr.Free(b)
		args := sidecarArgs(b, cp.APIURL(), tok.Token, bundle, own, svc.name, svc.appPort, outbound)
		args = append(args, "--local-config", localTelemetry(b, mkdir(b, own)))
		if svc.calls != "" {
			args = append(args, "--calls", svc.calls)
		}
		if hop != "" {
			args = append(args, "--hop-protocol", hop)
		}
		if threads != 0 {
			args = append(args, "--concurrency", strconv.Itoa(threads))
		}
		pair.start(b, bin, args...)
		pair.outbound = outbound
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := admin.Endpoints(ctx, "orders.default")
		if err == nil && len(l.Items) == 1 && getOrders(pair.outbound) == nil {
			break
		}
		if time.Now().After(deadline) {
			pair.stop()
			b.Fatalf("web's sidecar does not reach orders within 30s:\n%s", pair.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return pair
}

// sidecarArgs are the arguments of `wasmgate run --sidecar` for the
// service svc on loopback, its files under own, without --local-config.
func sidecarArgs(t testing.TB, controlPlane, token, bundle, own, svc string, appPort int, outbound string) []string {
	return []string{"run", "--sidecar", "--service", svc, "--app-port", strconv.Itoa(appPort),
		"--inbound", testaddr.Free(t), "--outbound", outbound,
		"--identity-server", controlPlane, "--join-token", token, "--trust-bundle-file", bundle,
		"--identity-dir", filepath.Join(own, "identity"), "--wasm-cache-dir", filepath.Join(own, "wasm"),
		"--cache-file", filepath.Join(own, "cache"), "--access-log", "", "--admin", "off"}
}

// getOrders sends one call to orders through the outbound listener addr.
func getOrders(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
	var buf [64]byte
	n, _ := c.Read(buf[:])
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200")) {
		return fmt.Errorf("answer %q", buf[:n])
	}
	return nil
}

// port is the port of the address addr.
func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	if err != nil || n == 0 {
		t.Fatalf("%q has no port", addr)
	}
	return n
}

func mkdir(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// procCPU is the user and system time of the processes pids, all their
// threads, from /proc/PID/stat.
func procCPU(t testing.TB, pids ...int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The fields after the command's name, which ends at the last ')':
		// state is the first, utime the 12th and stime the 13th.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return sum
}

// clockTicks is USER_HZ, the unit of /proc's times: 100 on Linux.
const clockTicks = 100

// procRSS is the resident memory of the process pid, in bytes.
func procRSS(t testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// startNginxPair runs the same path with two nginx processes in place of
// the sidecars, for reference: one takes the client's HTTP/1.1 and sends
// it over mutual TLS (HTTP/1.1, connections kept alive) to the other,
// which checks the client certificate and passes the request to orders'
// app. Each is one process (master_process off) with one worker's event
// loop, writes an access log line per request, and speaks TLS 1.3 with
// P-256 certificates, as the sidecars do. It skips when nginx is not
// installed.
func startNginxPair(b *testing.B, appPort int) *processPair {
	b.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		b.Skip("nginx is not installed (Debian: nginx-light)")
	}
	dir := b.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	caCert, caKey := newCert(b, nil, nil, "pair-ca")
	srvCert, srvKey := newCert(b, caCert, caKey, "inbound.pair")
	cliCert, cliKey := newCert(b, caCert, caKey, "outbound.pair")
	ca := write("ca.pem", pemBlock("CERTIFICATE", caCert.Raw))
	inboundAddr, outboundAddr := testaddr.Free(b), testaddr.Free(b)
	common := "daemon off; master_process off; worker_processes 1; pid %[1]s/%[2]s.pid; error_log %[1]s/%[2]s-error.log;\n" +
		"events { worker_connections 1024; }\n" +
		"http { access_log %[1]s/%[2]s-access.log; client_body_temp_path %[1]s; proxy_temp_path %[1]s;\n" +
		"fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s; keepalive_requests 1000000;\n%[3]s}\n"
	inbound := fmt.Sprintf(common, dir, "inbound", fmt.Sprintf(
		"upstream app { server 127.0.0.1:%d; keepalive 64; }\n"+
			"server { listen %s ssl; ssl_protocols TLSv1.3; ssl_certificate %s; ssl_certificate_key %s;\n"+
			"ssl_client_certificate %s; ssl_verify_client on;\n"+
			"location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }\n",
		appPort, inboundAddr, write("inbound.pem", pemBlock("CERTIFICATE", srvCert.Raw)), write("inbound.key", keyPEM(b, srvKey)), ca))
	outbound := fmt.Sprintf(common, dir, "outbound", fmt.Sprintf(
		"upstream inbound { server %s; keepalive 64; }\n"+
			"server { listen %s;\n"+
			"location / { proxy_pass https://inbound; proxy_http_version 1.1; proxy_set_header Connection \"\";\n"+
			"proxy_ssl_protocols TLSv1.3; proxy_ssl_certificate %s; proxy_ssl_certificate_key %s;\n"+
			"proxy_ssl_trusted_certificate %s; proxy_ssl_verify on; proxy_ssl_name inbound.pair; proxy_ssl_session_reuse on; } }\n",
		inboundAddr, outboundAddr, write("outbound.pem", pemBlock("CERTIFICATE", cliCert.Raw)), write("outbound.key", keyPEM(b, cliKey)), ca))
	pair := &processPair{outbound: outboundAddr, quit: syscall.SIGQUIT}
	b.Cleanup(pair.stop)
	for i, conf := range []string{outbound, inbound} {
		pair.start(b, bin, "-p", dir, "-c", write(fmt.Sprintf("nginx-%d.conf", i), []byte(conf)))
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := getOrders(pair.outbound); err != nil; err = getOrders(pair.outbound) {
		if time.Now().After(deadline) {
			pair.stop()
			logs, _ := os.ReadFile(filepath.Join(dir, "outbound-error.log"))
			more, _ := os.ReadFile(filepath.Join(dir, "inbound-error.log"))
			b.Fatalf("nginx pair does not answer: %v\n%s\n%s\n%s", err, logs, more, pair.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return pair
}

// newCert makes a P-256 certificate for the DNS name, signed by parent,
// and its key (a CA signing itself when parent is nil).
func newCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{name}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func keyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
