package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// pattern is a deterministic body of n bytes.
type pattern struct {
	n, off int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = byte('a' + (p.off+int64(i))%26)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &pattern{n: n})
	return hex.EncodeToString(h.Sum(nil))
}

const bodyConfig = `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - {name: up, endpoints: [{address: "{{up}}"}]}
  - {name: echo, endpoints: [{address: "{{echo}}"}]}
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - {match: {prefix: /echo}, cluster: echo, timeout: 60s}
      - {match: {prefix: /}, cluster: up, timeout: 60s}
`

// TestUploadStreams sends 64 MiB through the proxy and holds most of it
// back until the upstream has received its first bytes: a proxy that
// buffered the body whole would never pass any of it on.
func TestUploadStreams(t *testing.T) {
	const total = 64 << 20
	const head = 1 << 20
	firstBytes := make(chan struct{})
	up := testupstream.Start(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		var buf [32 << 10]byte
		n, err := io.ReadAtLeast(r.Body, buf[:], 1)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		close(firstBytes)
		h.Write(buf[:n])
		rest, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x %s", int64(n)+rest, h.Sum(nil), strings.Join(r.TransferEncoding, ","))
	}))
	echo := testupstream.Start(t, "echo", nil)
	e := newEnv(t, bodyConfig, vars{"up": up.Addr(), "echo": echo.Addr()})

	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) {
			if chunked {
				firstBytes = make(chan struct{})
			}
			pr, pw := io.Pipe()
			held := make(chan error, 1)
			go func() {
				src := &pattern{n: total}
				if _, err := io.CopyN(pw, src, head); err != nil {
					held <- err
					return
				}
				// The client holds the rest until the upstream has read
				// the first bytes.
				select {
				case <-firstBytes:
					held <- nil
				case <-time.After(10 * time.Second):
					err := fmt.Errorf("the upstream had read nothing after the client sent %d of %d bytes", head, total)
					held <- err
					pw.CloseWithError(err)
					return
				}
				_, err := io.Copy(pw, src)
				pw.CloseWithError(err)
			}()
			req := e.newRequest(t, request{method: "POST", path: "/upload", body: pr})
			if !chunked {
				req.ContentLength = total
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := <-held; err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			fields := strings.Fields(string(body))
			if len(fields) < 2 || fields[0] != strconv.Itoa(total) || fields[1] != patternSum(total) {
				t.Fatalf("upstream got %q, want %d bytes with sha256 %s", body, total, patternSum(total))
			}
		})
	}
}

// TestDownloadStreams has the upstream write the start of a large body and
// wait until the client has read it before writing the rest.
func TestDownloadStreams(t *testing.T) {
	const head, total = 1 << 20, 32 << 20
	type attempt struct{ release chan struct{} }
	attempts := make(chan attempt, 4)
	up := testupstream.Start(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := <-attempts
		if r.URL.Query().Has("length") {
			w.Header().Set("Content-Length", strconv.Itoa(total))
		}
		src := &pattern{n: total}
		if _, err := io.CopyN(w, src, head); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-a.release:
		case <-time.After(10 * time.Second):
			return // the test fails on the client's side
		case <-r.Context().Done():
			return
		}
		_, _ = io.Copy(w, src)
	}))
	echo := testupstream.Start(t, "echo", nil)
	e := newEnv(t, bodyConfig, vars{"up": up.Addr(), "echo": echo.Addr()})

	for _, tc := range []struct {
		name, path  string
		wantLength  int64
		wantChunked bool
	}{
		{"chunked", "/download", -1, true},
		{"content-length", "/download?length", total, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := attempt{release: make(chan struct{})}
			attempts <- a
			resp, err := e.client.Do(e.newRequest(t, request{path: tc.path}))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.ContentLength != tc.wantLength {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tc.wantLength)
			}
			if chunked := len(resp.TransferEncoding) > 0; chunked != tc.wantChunked {
				t.Errorf("Transfer-Encoding %q, want chunked %v", resp.TransferEncoding, tc.wantChunked)
			}
			h := sha256.New()
			got := make(chan error, 1)
			go func() {
				_, err := io.CopyN(h, resp.Body, head)
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the client had read nothing of the first %d bytes the upstream wrote", head)
			}
			close(a.release)
			n, err := io.Copy(h, resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if n+head != total || hex.EncodeToString(h.Sum(nil)) != patternSum(total) {
				t.Fatalf("got %d bytes, want %d with the upstream's sha256", n+head, total)
			}
		})
	}
}

func TestChunkedBodies(t *testing.T) {
	up := testupstream.Start(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		// Answer in several flushed pieces with no length: chunked.
		for _, part := range bytes.SplitAfter(body, []byte("\n")) {
			_, _ = w.Write(part)
			w.(http.Flusher).Flush()
		}
	}))
	echo := testupstream.Start(t, "echo", nil)
	e := newEnv(t, bodyConfig, vars{"up": up.Addr(), "echo": echo.Addr()})

	t.Run("raw chunked request and response", func(t *testing.T) {
		rc := dialRaw(t, e.addr(t, "main"))
		resp, body := rc.roundTrip(t, "POST", "POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"6\r\nhello\n\r\n7\r\nchunked\r\n8\r\n\nworld!\n\r\n0\r\n\r\n")
		if resp.StatusCode != 200 || string(body) != "hello\nchunked\nworld!\n" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
			t.Errorf("response Transfer-Encoding %q, want chunked", resp.TransferEncoding)
		}
		// The connection is still in step for a second request.
		resp, body = rc.roundTrip(t, "GET", "GET /echo/after HTTP/1.1\r\nHost: x\r\n\r\n")
		if got := testupstream.Decode(t, body); resp.StatusCode != 200 || got.URI != "/echo/after" {
			t.Fatalf("second request: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("chunked request as the upstream sees it", func(t *testing.T) {
		const n = 300 << 10
		// A reader of unknown length makes the client send chunks.
		r := e.do(t, request{method: "PUT", path: "/echo/put", body: io.MultiReader(&pattern{n: n})})
		got := r.echo(t)
		if got.BodyBytes != n {
			t.Errorf("upstream got %d body bytes, want %d", got.BodyBytes, n)
		}
		if got.ContentLength != -1 && got.ContentLength != n {
			t.Errorf("upstream saw Content-Length %d", got.ContentLength)
		}
	})
}

func TestBodilessResponses(t *testing.T) {
	up := testupstream.Start(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
			w.Header().Set("X-Method", r.Method)
			if r.Method != http.MethodHead {
				_, _ = w.Write(bytes.Repeat([]byte("x"), 1234))
			}
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		}
	}))
	echo := testupstream.Start(t, "echo", nil)
	e := newEnv(t, bodyConfig, vars{"up": up.Addr(), "echo": echo.Addr()})

	// Each response is followed by another request on the same
	// connection, which fails if a body was sent or expected.
	rc := dialRaw(t, e.addr(t, "main"))
	cases := []struct {
		name, method, path string
		status             int
		header             map[string]string
	}{
		{"HEAD", "HEAD", "/head", 200, map[string]string{"Content-Length": "1234", "X-Method": "HEAD"}},
		{"GET after HEAD", "GET", "/head", 200, map[string]string{"Content-Length": "1234"}},
		{"204", "GET", "/204", 204, nil},
		{"304", "GET", "/304", 304, map[string]string{"Etag": `"v1"`}},
		{"HEAD of a 204", "HEAD", "/204", 204, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rc.roundTrip(t, tc.method, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			wantBody := 0
			if tc.method == "GET" && tc.status == 200 {
				wantBody = 1234
			}
			if len(body) != wantBody {
				t.Errorf("body of %d bytes, want %d", len(body), wantBody)
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.status == 204 || tc.status == 304 {
				if len(resp.TransferEncoding) > 0 || resp.Header.Get("Content-Length") != "" && resp.Header.Get("Content-Length") != "0" {
					t.Errorf("a %d response carries a body framing: %v %q", tc.status, resp.Header, resp.TransferEncoding)
				}
			}
			resp, body = rc.roundTrip(t, "GET", "GET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != 200 || testupstream.Decode(t, body).URI != "/echo/next" {
				t.Fatalf("the next request on the connection: %d %q", resp.StatusCode, body)
			}
		})
	}
}
