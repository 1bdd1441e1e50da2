package h2_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
	"github.com/wasmgate/wasmgate/proxy/internal/testpki"
)

// TestCertificateRotation rotates the proxy's certificate again and again
// while clients keep opening new TLS connections (HTTP/1.1 and HTTP/2):
// no handshake and no request fails, and every new certificate is served.
func TestCertificateRotation(t *testing.T) {
	p := prototest.NewPKI(t)
	srv := prototest.Start(t, webConfig, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, &prototest.IdentityPlugins{})
	url := "https://" + srv.Addr("tls").String() + "/rotate"
	time.Sleep(50 * time.Millisecond) // let the watchers start

	var (
		stop     atomic.Bool
		requests atomic.Int64
		mu       sync.Mutex
		serials  = map[string]bool{}
		failures []error
		wg       sync.WaitGroup
	)
	for i := range 4 {
		alpn := "h2"
		if i%2 == 1 {
			alpn = "http/1.1"
		}
		wg.Go(func() {
			for !stop.Load() {
				conf := p.ClientTLS(alpn)
				var serial string
				conf.VerifyConnection = func(cs tls.ConnectionState) error {
					serial = cs.PeerCertificates[0].SerialNumber.String()
					return nil
				}
				tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: alpn == "h2", DisableKeepAlives: true}
				resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				tr.CloseIdleConnections()
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					serials[serial] = true
				}
				mu.Unlock()
				requests.Add(1)
			}
		})
	}
	const rotations = 4
	dir := p.CertFile[:strings.LastIndexByte(p.CertFile, '/')]
	for range rotations {
		time.Sleep(150 * time.Millisecond)
		next := p.CA.Issue(t, testpki.Leaf{CommonName: "proxy", DNS: []string{"proxy.test"}})
		next.Write(t, dir, "proxy")
		want := next.Leaf.SerialNumber.String()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			ok := serials[want]
			mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the rotated certificate was not served within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", len(failures), requests.Load(), failures[0])
	}
	t.Logf("%d requests on new connections, %d certificates served, none failed", requests.Load(), len(serials))
}

// TestSmokeCurlH2load runs curl and h2load, where installed, against the
// TLS and h2c listeners.
func TestSmokeCurlH2load(t *testing.T) {
	curl, errCurl := exec.LookPath("curl")
	h2load, errH2load := exec.LookPath("h2load")
	if errCurl != nil && errH2load != nil {
		t.Skip("neither curl nor h2load is installed (apt-get install curl nghttp2-client)")
	}
	p := prototest.NewPKI(t)
	srv := prototest.Start(t, webConfig, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "clientca": p.ClientCAFile, "web": prototest.Echo(t),
	}, &prototest.IdentityPlugins{})
	tlsAddr, plainAddr := srv.Addr("tls").String(), srv.Addr("plain").String()

	if errCurl == nil {
		for _, args := range [][]string{
			{"--http2", "--cacert", p.CAFile, "--resolve", "proxy.test:" + port(tlsAddr) + ":127.0.0.1", "https://proxy.test:" + port(tlsAddr) + "/curl-h2"},
			{"--http1.1", "--cacert", p.CAFile, "--resolve", "proxy.test:" + port(tlsAddr) + ":127.0.0.1", "https://proxy.test:" + port(tlsAddr) + "/curl-h1"},
			{"--http2-prior-knowledge", "http://" + plainAddr + "/curl-h2c"},
		} {
			out, err := exec.Command(curl, append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"}, args...)...).CombinedOutput()
			if err != nil {
				t.Errorf("curl %v: %v: %s", args, err, out)
				continue
			}
			want := "2 200"
			if args[0] == "--http1.1" {
				want = "1.1 200"
			}
			if string(out) != want {
				t.Errorf("curl %s: %q, want %q", args[len(args)-1], out, want)
			}
		}
	}
	if errH2load == nil {
		for _, target := range []string{"http://" + plainAddr + "/h2load", "https://" + tlsAddr + "/h2load"} {
			out, err := exec.Command(h2load, "-n", "2000", "-c", "4", "-m", "10", target).CombinedOutput()
			if err != nil {
				t.Errorf("h2load %s: %v: %s", target, err, out)
				continue
			}
			m := regexp.MustCompile(`requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`).FindSubmatch(out)
			if m == nil || string(m[3]) != "2000" || string(m[4]) != "0" || string(m[5]) != "0" {
				t.Errorf("h2load %s:\n%s", target, out)
				continue
			}
			if rps := regexp.MustCompile(`finished in [^,]+, ([\d.]+) req/s`).FindSubmatch(out); rps != nil {
				t.Logf("h2load %s: 2000 requests, 4 connections, 10 streams each: %s req/s", target, rps[1])
			}
		}
	}
}

func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
