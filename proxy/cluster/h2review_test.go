//lint:file-ignore SA1019 startH2Peer serves with x/net's HTTP/2 server (h2_test.go says why).

package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock encodes name, value pairs as a header block of its own.
func headerBlock(kv ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i < len(kv); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return buf.Bytes()
}

func rawClient(t *testing.T, addr string) *h2Client {
	t.Helper()
	c := newH2Client(poolKey{addr: addr, connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
	t.Cleanup(c.tr.CloseIdleConnections)
	return c
}

// TestH2ClientPaddingGivesBackStreamWindow has the peer pad its DATA
// frames heavily. Padding counts against the stream's window as it
// arrives (RFC 9113, 6.1 and 6.9.1), so it must be given back with the
// stream's WINDOW_UPDATE too: else the stream stalls once the padding adds
// up to half the window.
func TestH2ClientPaddingGivesBackStreamWindow(t *testing.T) {
	const frame = 1 + 255 + 1 // a byte of data, 255 of padding, the pad length
	const frames = h2StreamWindow / frame
	addr := listenRaw(t, nil, func(p *rawPeer) {
		id, err := p.readHeaders()
		if err != nil {
			return
		}
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(":status", "200"), EndHeaders: true})
		// The client's SETTINGS_INITIAL_WINDOW_SIZE, used up.
		window := int64(h2StreamWindow - frames*frame)
		pad := make([]byte, 255)
		for range frames {
			p.fr.WriteDataPadded(id, false, []byte{'x'}, pad)
		}
		// The window comes back as the client reads, or the stream is
		// stuck: the peer gives up and closes the connection.
		p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for window < frame {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == id {
				window += int64(wu.Increment)
			}
		}
		p.fr.WriteData(id, true, []byte("end"))
		io.Copy(io.Discard, p.conn)
	})
	c := rawClient(t, addr)
	var resp fasthttp.Response
	var s Body
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	b := readAll(t, &resp, &s)
	if want := strings.Repeat("x", frames) + "end"; string(b) != want {
		t.Errorf("%d bytes, want %d", len(b), len(want))
	}
}

// TestH2ClientTruncatedHeaders has the peer answer with a header list
// larger than the client's SETTINGS_MAX_HEADER_LIST_SIZE: the response
// is refused rather than passed on with fields missing, and the
// connection goes on serving (its HPACK state is intact).
func TestH2ClientTruncatedHeaders(t *testing.T) {
	addr := listenRaw(t, nil, func(p *rawPeer) {
		value := strings.Repeat("a", 8000)
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for {
			id, err := p.readHeaders()
			if err != nil {
				return
			}
			if id > 1 {
				p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(":status", "200", "x-after", "ok"), EndHeaders: true, EndStream: true})
				continue
			}
			// 130 fields of 8 KB keep within 1 MiB, the 131st does not; it
			// comes in the last fragment, so that the framer reads the block
			// whole.
			buf.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			for i := range 130 {
				enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-f%03d", i), Value: value})
			}
			head := append([]byte(nil), buf.Bytes()...)
			buf.Reset()
			enc.WriteField(hpack.HeaderField{Name: "x-last", Value: value})
			last := buf.Bytes()
			first := true
			for len(head) > 0 {
				frag := head[:min(len(head), 16<<10)]
				head = head[len(frag):]
				if first {
					p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: true})
					first = false
				} else {
					p.fr.WriteContinuation(id, false, frag)
				}
			}
			p.fr.WriteContinuation(id, true, last)
		}
	})
	c := rawClient(t, addr)
	var resp fasthttp.Response
	var s Body
	err := c.do(get("/"), &resp, 5*time.Second, &s)
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != http2.ErrCodeProtocol {
		t.Errorf("a truncated header list: %v (status %d, %d header bytes)", err, resp.StatusCode(), len(resp.Header.Header()))
	}
	s.Close()
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil || string(resp.Header.Peek("X-After")) != "ok" {
		t.Errorf("after: %v, %q", err, resp.Header.Peek("X-After"))
	}
}

// TestH2ClientLongerThanContentLength has the peer send more DATA than
// its content-length says, again and again: the stream is reset, and
// the DATA frame that went over is given back to the connection's window
// like any other (RFC 9113, 6.9), which otherwise runs dry.
func TestH2ClientLongerThanContentLength(t *testing.T) {
	const frame = 16 << 10
	addr := listenRaw(t, nil, func(p *rawPeer) {
		window := int64(65535) // and the WINDOW_UPDATEs that follow
		data := make([]byte, frame)
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					p.fr.WriteSettingsAck()
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					window += int64(f.Increment)
				}
			case *http2.MetaHeadersFrame:
				if window < frame {
					// The client gave back too little to go on.
					p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: headerBlock(":status", "503"), EndHeaders: true, EndStream: true})
					continue
				}
				p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: headerBlock(":status", "200", "content-length", "1"), EndHeaders: true})
				p.fr.WriteData(f.StreamID, false, data)
				window -= frame
			}
		}
	})
	c := rawClient(t, addr)
	var resp fasthttp.Response
	var s Body
	// More than the connection's window in all.
	for i := range h2ConnWindow/frame + 8 {
		err := c.do(get("/"), &resp, 5*time.Second, &s)
		if err == nil && s.Active() {
			// The headers came alone: the DATA fails the body.
			_, err = io.ReadAll(&s)
		}
		s.Close()
		var se http2.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("request %d: %v, status %d", i, err, resp.StatusCode())
		}
	}
}

// TestH2ClientStreamCancelledContext opens filters' exchanges whose
// context ends at once: each fails with the context's error, and the
// exchange's end does not race with its setting up (go test -race).
func TestH2ClientStreamCancelledContext(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	c := p.client(t)
	for range 2000 {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var resp fasthttp.Response
		_, err := c.stream(ctx, get("/"), bytes.NewReader(nil), &resp)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want the context's", err)
		}
	}
}

// TestH2ClientHeadKeepsContentLength asks for HEAD and a conditional GET:
// the answers' Content-Length names the representation they describe
// (RFC 9110, 8.6), and is passed on as the endpoint gave it, not as the
// length of the empty content that came.
func TestH2ClientHeadKeepsContentLength(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(304)
			return
		}
		w.WriteHeader(200)
		if r.Method != "HEAD" {
			w.Write(make([]byte, 1234))
		}
	})
	c := p.client(t)
	for _, cond := range []bool{false, true} {
		req := get("/")
		req.Header.SetMethod("HEAD")
		want := 200
		if cond {
			req.Header.SetMethod("GET")
			req.Header.Set("If-None-Match", `"v1"`)
			want = 304
		}
		var resp fasthttp.Response
		var s Body
		if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
			t.Fatal(err)
		}
		readAll(t, &resp, &s)
		if resp.StatusCode() != want || resp.Header.ContentLength() != 1234 {
			t.Errorf("%d: Content-Length %d, want 1234 (%s)", resp.StatusCode(), resp.Header.ContentLength(), strconv.Quote(string(resp.Header.Header())))
		}
	}
}

// TestH2ClientSlowReadersHoldUpNoOthers leaves as many large responses
// unread as the connection's window holds stream windows: another
// response on the connection still comes. Each stream's window bounds
// what it holds unread; the connection's is given back as data arrives,
// so that slow readers starve no other stream (RFC 9113, 5.2.2).
func TestH2ClientSlowReadersHoldUpNoOthers(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(make([]byte, 2*h2StreamWindow))
			return
		}
		io.WriteString(w, "ok")
	})
	c := p.client(t)
	const slow = h2ConnWindow / h2StreamWindow
	for range slow {
		resp := new(fasthttp.Response)
		s := new(Body)
		if err := c.do(get("/big"), resp, 5*time.Second, s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	// Every slow stream's window is full.
	c.tr.mu.Lock()
	cc := c.tr.conns[0]
	c.tr.mu.Unlock()
	for full := false; !full; time.Sleep(time.Millisecond) {
		cc.mu.Lock()
		held := 0
		for _, s := range cc.streams {
			held += len(s.buf) - s.off
		}
		full = held == slow*h2StreamWindow
		cc.mu.Unlock()
	}
	got := make(chan string, 1)
	go func() {
		var resp fasthttp.Response
		var s Body
		if err := c.do(get("/small"), &resp, 5*time.Second, &s); err != nil {
			got <- err.Error()
			return
		}
		b := resp.Body()
		if s.Active() {
			b, _ = io.ReadAll(&s)
			s.Close()
		}
		got <- string(b)
	}()
	select {
	case b := <-got:
		if b != "ok" {
			t.Errorf("body %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a small response waits behind unread ones")
	}
}
