package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// serveH2C starts a real HTTP/2 server without TLS (prior knowledge).
func serveH2C(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protocols}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestStreamBothWays sends a body piece by piece and reads each answer
// before sending the next, as a bidirectional gRPC stream does; the
// trailers arrive with the end of the response.
func TestStreamBothWays(t *testing.T) {
	addr := serveH2C(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Count")
		w.Header().Set("X-Path", r.URL.Path)
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		n := 0
		buf := make([]byte, 64)
		for {
			k, err := r.Body.Read(buf)
			if k > 0 {
				n++
				w.Write(bytes.ToUpper(buf[:k]))
				w.(http.Flusher).Flush()
			}
			if err != nil {
				break
			}
		}
		w.Header().Set("X-Count", strconv.Itoa(n))
	})
	ps := NewPools()
	set := Set{
		"h2": testCluster(t, ps, config.Cluster{Endpoints: eps(addr), Protocol: config.ProtocolHTTP2}),
		"h1": testCluster(t, ps, config.Cluster{Endpoints: eps(addr)}),
	}
	if _, err := set.StreamCluster("h1"); !errors.Is(err, filter.ErrNotHTTP2) {
		t.Errorf("HTTP/1.1 cluster: %v", err)
	}
	if _, err := set.StreamCluster("none"); !errors.Is(err, filter.ErrUnknownCluster) {
		t.Errorf("unknown cluster: %v", err)
	}
	sc, err := set.StreamCluster("h2")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/svc/Method")
	req.Header.SetHost("h2")
	var resp fasthttp.Response
	body, err := sc.Stream(context.Background(), &req, pr, &resp)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Path")) != "/svc/Method" {
		t.Fatalf("response %d, x-path %q", resp.StatusCode(), resp.Header.Peek("X-Path"))
	}
	e := set["h2"].Endpoints()[0]
	if n := e.ActiveRequests(); n != 1 {
		t.Errorf("%d active requests during the stream", n)
	}
	buf := make([]byte, 16)
	for _, piece := range []string{"one", "two", "three"} {
		if _, err := pw.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
		n, err := io.ReadAtLeast(body, buf, len(piece))
		if err != nil || string(buf[:n]) != string(bytes.ToUpper([]byte(piece))) {
			t.Fatalf("answer to %q: %q, %v", piece, buf[:n], err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %q, %v", rest, err)
	}
	if got := string(resp.Header.Peek("X-Count")); got != "3" {
		t.Errorf("trailer x-count %q", got)
	}
	body.Close()
	if n := e.ActiveRequests(); n != 0 {
		t.Errorf("%d active requests after the stream", n)
	}
}

// TestStreamCancel ends a stream in the middle through its context: the
// server sees its request go.
func TestStreamCancel(t *testing.T) {
	gone := make(chan error, 1)
	addr := serveH2C(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		gone <- r.Context().Err()
	})
	c := testCluster(t, NewPools(), config.Cluster{Endpoints: eps(addr), Protocol: config.ProtocolHTTP2})
	ctx, cancel := context.WithCancel(context.Background())
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/")
	var resp fasthttp.Response
	pr, pw := io.Pipe()
	defer pw.Close()
	body, err := c.Stream(ctx, &req, pr, &resp)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	cancel()
	select {
	case err := <-gone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("server saw %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the stream end")
	}
	if _, err := io.ReadAll(body); err == nil {
		t.Error("reading a cancelled stream succeeded")
	}
}
