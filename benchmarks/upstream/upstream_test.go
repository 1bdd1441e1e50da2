package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// origin starts serve on a free port for the life of the test binary.
func origin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	go func() {
		panic(serve(addr, newResponses()))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("origin did not come up on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestAnswers(t *testing.T) {
	addr := origin(t)
	client := &http.Client{Timeout: 5 * time.Second}
	tests := []struct {
		method, path string
		body         string
		status       int
		want         []byte
	}{
		{"GET", "/64", "", 200, bytes.Repeat([]byte("a"), 64)},
		{"GET", "/16k", "", 200, bytes.Repeat([]byte("b"), 16<<10)},
		{"GET", "/64?q=1", "", 200, bytes.Repeat([]byte("a"), 64)},
		{"POST", "/64", "some body", 200, bytes.Repeat([]byte("a"), 64)},
		{"GET", "/missing", "", 404, []byte("not found")},
	}
	for _, tt := range tests {
		for i := 0; i < 3; i++ { // the client's connection is reused
			req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader(tt.body))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s %s: reading the body: %v", tt.method, tt.path, err)
			}
			if resp.StatusCode != tt.status || !bytes.Equal(body, tt.want) {
				t.Fatalf("%s %s: %d with %d bytes, want %d with %d", tt.method, tt.path, resp.StatusCode, len(body), tt.status, len(tt.want))
			}
			if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
				t.Fatalf("%s %s: Date %q: %v", tt.method, tt.path, resp.Header.Get("Date"), err)
			}
		}
	}
}

// TestPipelinedPastAFullSocket sends many requests without reading, so the
// answers outgrow the socket's buffers and wait in the origin, then reads
// them all back in order.
func TestPipelinedPastAFullSocket(t *testing.T) {
	c := dial(t, origin(t))
	const n = 300 // about 5 MB of answers
	var reqs bytes.Buffer
	for i := 0; i < n; i++ {
		path := "/16k"
		if i%3 == 2 {
			path = "/64"
		}
		reqs.WriteString("GET " + path + " HTTP/1.1\r\nHost: origin\r\n\r\n")
	}
	go c.Write(reqs.Bytes())
	r := bufio.NewReader(c)
	time.Sleep(100 * time.Millisecond) // let the socket fill
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		want := 16 << 10
		if i%3 == 2 {
			want = 64
		}
		if resp.StatusCode != 200 || len(body) != want {
			t.Fatalf("answer %d: %d with %d bytes, want 200 with %d", i, resp.StatusCode, len(body), want)
		}
	}
}

// TestBadRequests checks that what cannot be framed is refused with its
// status and the connection closed after it.
func TestBadRequests(t *testing.T) {
	addr := origin(t)
	tests := []struct {
		name, raw string
		status    int
	}{
		{"no version", "GET /64\r\n\r\n", 400},
		{"not http", "GET /64 SPDY/3\r\n\r\n", 400},
		{"field without colon", "GET /64 HTTP/1.1\r\nHost origin\r\n\r\n", 400},
		{"bad content length", "POST /64 HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400},
		{"body too large", "POST /64 HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413},
		{"gzip coding", "POST /64 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"bad chunk size", "POST /64 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk without its end", "POST /64 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n", 400},
		{"chunks too large", "POST /64 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n", 413},
		{"head too large", "GET /64 HTTP/1.1\r\nX: " + strings.Repeat("x", maxRequest) + "\r\n\r\n", 431},
		{"head never ends", "GET /64 HTTP/1.1\r\nX: " + strings.Repeat("x", maxRequest+10), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			go c.Write([]byte(tt.raw))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status || !resp.Close {
				t.Fatalf("status %d, close %v; want %d and close", resp.StatusCode, resp.Close, tt.status)
			}
		})
	}
}

func TestConnectionClose(t *testing.T) {
	addr := origin(t)
	for _, raw := range []string{
		"GET /64 HTTP/1.1\r\nConnection: close\r\n\r\nGET /64 HTTP/1.1\r\n\r\n",
		"GET /64 HTTP/1.0\r\n\r\nGET /64 HTTP/1.1\r\n\r\n",
	} {
		c := dial(t, addr)
		c.Write([]byte(raw))
		all, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if got := bytes.Count(all, []byte("HTTP/1.1 200 OK")); got != 1 {
			t.Fatalf("%q: %d answers before the close, want 1:\n%s", raw, got, all)
		}
	}
	// HTTP/1.0 asking to be kept alive is.
	c := dial(t, addr)
	r := bufio.NewReader(c)
	for i := 0; i < 2; i++ {
		c.Write([]byte("GET /64 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("HTTP/1.0 keep-alive, request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}

func TestDateFollowsTheClock(t *testing.T) {
	r := newResponses()
	then := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	r.tick(then)
	if !bytes.Contains(r.small.buf, []byte("Date: Wed, 02 Jan 2030 03:04:05 GMT\r\n")) {
		t.Fatalf("Date not refreshed:\n%s", r.small.buf[:r.small.dateAt+40])
	}
}

// TestChunked sends a chunked body, with an extension and a trailer, in
// pieces, then a request behind it on the same connection.
func TestChunked(t *testing.T) {
	c := dial(t, origin(t))
	raw := "POST /64 HTTP/1.1\r\nHost: origin\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5;ext=1\r\nhello\r\n10\r\n" + strings.Repeat("x", 16) + "\r\n0\r\nX-Trailer: 1\r\n\r\n" +
		"GET /16k HTTP/1.1\r\nHost: origin\r\n\r\n"
	go func() {
		for i := 0; i < len(raw); i += 7 {
			c.Write([]byte(raw[i:min(i+7, len(raw))]))
			time.Sleep(time.Millisecond)
		}
	}()
	r := bufio.NewReader(c)
	for i, want := range []int{64, 16 << 10} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || len(body) != want {
			t.Fatalf("answer %d: %d with %d bytes, want 200 with %d", i, resp.StatusCode, len(body), want)
		}
	}

	// And net/http's client, which chunks a body of unknown length.
	resp, err := http.Post("http://"+c.RemoteAddr().String()+"/64", "text/plain", struct{ io.Reader }{strings.NewReader("a body")})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chunked POST from net/http: %d", resp.StatusCode)
	}
}
