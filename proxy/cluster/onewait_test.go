package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// serveRaw accepts connections on 127.0.0.1 and hands each to serve.
func serveRaw(t *testing.T, serve func(net.Conn)) string {
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
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// answer reads requests from c and answers each with the length of its
// body, closing the connection after max answers (0: never).
func answer(c net.Conn, max int, closeAfter time.Duration) {
	defer c.Close()
	br := bufio.NewReader(c)
	var req fasthttp.Request
	for i := 1; ; i++ {
		if err := req.Read(br); err != nil {
			return
		}
		body := strconv.Itoa(len(req.Body()))
		if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)); err != nil {
			return
		}
		if i == max {
			time.Sleep(closeAfter)
			return
		}
	}
}

func doRequest(t *testing.T, e *Endpoint, body []byte, timeout time.Duration) (string, error) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + e.Addr + "/x")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetBody(body)
	var s Body
	err := e.Do(req, resp, timeout, &s)
	return string(resp.Body()), err
}

func TestOneWaitConnKeepsAliveAndCarriesLargeRequests(t *testing.T) {
	addr := serveRaw(t, func(c net.Conn) { answer(c, 0, 0) })
	c := testCluster(t, NewPools(), config.Cluster{Endpoints: eps(addr)})
	e := c.Endpoints()[0]
	for i := range 200 {
		// Sizes on both sides of what a request may hold.
		body := bytes.Repeat([]byte("x"), (i%4)*maxHeld/2+i)
		got, err := doRequest(t, e, body, time.Second)
		if err != nil || got != strconv.Itoa(len(body)) {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
	}
	if n := e.Conns(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
	cc, err := e.pool.client.AcquireConn(time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cc.Conn().(*oneWaitConn); !ok {
		t.Fatalf("pooled connection is %T", cc.Conn())
	}
	e.pool.client.ReleaseConn(cc)
}

func TestOneWaitConnRetriesAConnectionTheUpstreamClosed(t *testing.T) {
	// Each connection answers once and closes soon after, as an upstream
	// with a short keep-alive does; the next request finds the pooled
	// connection dead and goes out again on a new one.
	addr := serveRaw(t, func(c net.Conn) { answer(c, 1, 10*time.Millisecond) })
	c := testCluster(t, NewPools(), config.Cluster{Endpoints: eps(addr)})
	e := c.Endpoints()[0]
	for i := range 5 {
		got, err := doRequest(t, e, []byte("abc"), time.Second)
		if err != nil || got != "3" {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOneWaitConnTimesOut(t *testing.T) {
	addr := serveRaw(t, func(c net.Conn) {
		defer c.Close()
		time.Sleep(2 * time.Second)
	})
	c := testCluster(t, NewPools(), config.Cluster{Endpoints: eps(addr)})
	start := time.Now()
	_, err := doRequest(t, c.Endpoints()[0], []byte("abc"), 100*time.Millisecond)
	if !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the timeout took %s", d)
	}
}

// loopbackOneWaitConn returns an oneWaitConn on a loopback connection.
func loopbackOneWaitConn(tb testing.TB) *oneWaitConn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err == nil {
			tb.Cleanup(func() { c.Close() })
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	x, ok := newOneWaitConn(c, c.(*net.TCPConn)).(*oneWaitConn)
	if !ok {
		tb.Fatal("not an oneWaitConn")
	}
	return x
}

// TestDeadlineSlack: the upstream deadline follows the requests on a
// connection within the slack, and is set anew after anything else set
// one.
func TestDeadlineSlack(t *testing.T) {
	x := loopbackOneWaitConn(t)
	const timeout = 6400 * time.Millisecond // a slack of 100ms
	start := time.Now()
	for i := range 50 {
		d := start.Add(timeout + time.Duration(i)*7*time.Millisecond)
		if err := setDeadline(x, d, timeout); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	d := start.Add(timeout + 343*time.Millisecond)
	if _, set := x.dl.Next(d, 100*time.Millisecond); !set {
		t.Error("after SetReadDeadline, the deadline is not set again")
	}
}

// BenchmarkSetDeadline is what a request pays for its upstream deadline:
// a SetDeadline each time, or one within the slack.
func BenchmarkSetDeadline(b *testing.B) {
	const timeout = 15 * time.Second
	b.Run("always", func(b *testing.B) {
		x := loopbackOneWaitConn(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := x.Conn.SetDeadline(time.Now().Add(timeout)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("within-slack", func(b *testing.B) {
		x := loopbackOneWaitConn(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := setDeadline(x, time.Now().Add(timeout), timeout); err != nil {
				b.Fatal(err)
			}
		}
	})
}
