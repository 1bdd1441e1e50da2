package listener_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/listener"
)

func answer(body string) listener.Handler {
	return listener.Handler{
		Serve: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(body) },
		Error: func(ctx *fasthttp.RequestCtx, err error) { ctx.Error(err.Error(), 400) },
	}
}

func start(t *testing.T, c config.Listener, prev *listener.Listener, body string) *listener.Listener {
	t.Helper()
	l, err := listener.New(c, nil, prev, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Serve(answer(body), zap.NewNop())
	t.Cleanup(func() { _ = l.Shutdown(context.Background()) })
	return l
}

func get(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestPortSharingIsOptIn: a port that is in use is an error unless every
// listener on it asks for reuse_port.
func TestPortSharingIsOptIn(t *testing.T) {
	first := start(t, config.Listener{Name: "a", Address: "127.0.0.1:0"}, nil, "a")
	addr := first.Addr().String()
	_, err := listener.New(config.Listener{Name: "b", Address: addr}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("binding a busy port: %v, want address already in use", err)
	}

	shared := start(t, config.Listener{Name: "c", Address: "127.0.0.1:0", ReusePort: true}, nil, "c")
	addr = shared.Addr().String()
	other := start(t, config.Listener{Name: "d", Address: addr, ReusePort: true}, nil, "d")
	if other.Addr().String() != addr {
		t.Fatalf("bound %s, want %s", other.Addr(), addr)
	}
	if got := get(t, addr); got != "c" && got != "d" {
		t.Fatalf("answered %q", got)
	}
}

// TestNewGenerationTakesTheSocketOver: a changed listener at the same
// address serves on the socket of the one it replaces, which stops
// accepting; the socket closes with its last generation.
func TestNewGenerationTakesTheSocketOver(t *testing.T) {
	old, err := listener.New(config.Listener{Name: "a", Address: "127.0.0.1:0"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	old.Serve(answer("old"), zap.NewNop())
	addr := old.Addr().String()
	if got := get(t, addr); got != "old" {
		t.Fatalf("answered %q, want old", got)
	}
	next, err := listener.New(config.Listener{Name: "a", Address: addr, IdleTimeout: config.Duration(5e9)}, nil, old, nil)
	if err != nil {
		t.Fatal(err)
	}
	next.Serve(answer("new"), zap.NewNop())
	if err := old.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
	for range 5 {
		if got := get(t, addr); got != "new" {
			t.Fatalf("answered %q, want new", got)
		}
	}
	if err := next.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the socket is still open after its last generation stopped")
	}
}

// TestRequestWithFIN: a client that writes its request and half-closes
// in one segment gets its response and then the connection's end at once,
// not at the idle timeout. The request before it, on the same connection,
// leaves the server's read waiting on the poller when the segment comes.
func TestRequestWithFIN(t *testing.T) {
	l := start(t, config.Listener{Name: "a", Address: "127.0.0.1:0"}, nil, "ok")
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tcp := c.(*net.TCPConn)
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	const req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
		t.Fatalf("first response %q", b)
	}

	// With TCP_CORK the request waits in the send queue, and the FIN is
	// set on its segment.
	raw, err := tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if err := tcp.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The idle timeout is 60s: an end within the 10s deadline is the FIN's.
	began := time.Now()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("after %v and %q: %v, want the connection closed", time.Since(began), rest, err)
	}
	if !strings.HasPrefix(string(rest), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(rest), "\r\n\r\nok") {
		t.Fatalf("second response %q", rest)
	}
}
