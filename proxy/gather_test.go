package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/internal/testupstream"
)

// TestLargeResponsesOverOneConnection sends, on one cleartext connection,
// responses of sizes around those the proxy writes in one writev (a body of
// 3 KiB and more, whose first write it holds), pipelined and one by one,
// and one the upstream ends with Connection: close: each arrives whole and
// in order.
func TestLargeResponsesOverOneConnection(t *testing.T) {
	up := testupstream.Start(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Has("close") {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(body(n))
	}))
	e := newEnv(t, bodyConfig, vars{"up": up.Addr(), "echo": up.Addr()})
	c, err := net.Dial("tcp", e.addr(t, "main"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	sizes := []int{0, 64, 3<<10 - 1, 3 << 10, 4<<10 - 200, 4 << 10, 8<<10 - 300, 8 << 10, 16 << 10, 64<<10 + 1, 1 << 20}
	read := func(n int) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response of %d bytes: %v", n, err)
		}
		var got bytes.Buffer
		_, err = got.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got.Bytes(), body(n)) {
			t.Fatalf("response of %d bytes: status %d, %d bytes, %v", n, resp.StatusCode, got.Len(), err)
		}
	}
	// One by one.
	for _, n := range sizes {
		fmt.Fprintf(c, "GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n)
		read(n)
	}
	// Pipelined: every request is sent before any response is read.
	var reqs bytes.Buffer
	for _, n := range sizes {
		fmt.Fprintf(&reqs, "GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n)
	}
	if _, err := c.Write(reqs.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		read(n)
	}
	// The last response on the connection.
	fmt.Fprintf(c, "GET /?n=%d&close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 16<<10)
	read(16 << 10)
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the connection stayed open after Connection: close")
	}
}

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}
