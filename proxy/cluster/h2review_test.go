//lint:file-ignore SA1019 startH2Peer serves with x/net's HTTP/2 server (h2_test.go says why).

package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
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
	deadline := time.Now().Add(30 * time.Second)
	for full := false; !full; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow streams' windows did not fill")
		}
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
		// A streamed body is read from s: resp.Body() would drain the
		// stream and leave s nothing to read.
		var b []byte
		if s.Active() {
			b, _ = io.ReadAll(&s)
			s.Close()
		} else {
			b = resp.Body()
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

// answerAll answers each request on the peer's connection with answer,
// given the request's stream and :path; SETTINGS are acknowledged.
func (p *rawPeer) answerAll(answer func(p *rawPeer, id uint32, path string)) {
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
		case *http2.MetaHeadersFrame:
			answer(p, f.StreamID, f.PseudoValue("path"))
		}
	}
}

// TestH2ClientMalformedResponses has the peer answer with responses
// RFC 9113 calls malformed (8.1.1, 8.2, 8.3): each fails its exchange
// with a stream error, and the connection goes on serving. Interim
// responses (100, 103) before the final one are passed over.
func TestH2ClientMalformedResponses(t *testing.T) {
	headers := func(p *rawPeer, id uint32, end bool, kv ...string) {
		p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(kv...), EndHeaders: true, EndStream: end})
	}
	cases := map[string]func(p *rawPeer, id uint32){
		"/uppercase-name":        func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "200", "X-Up", "1") },
		"/pseudo-after-regular":  func(p *rawPeer, id uint32) { headers(p, id, true, "x-a", "1", ":status", "200") },
		"/no-status":             func(p *rawPeer, id uint32) { headers(p, id, true, "x-a", "1") },
		"/bad-status":            func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "2x0") },
		"/request-pseudo-header": func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "200", ":path", "/") },
		"/duplicate-status":      func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "200", ":status", "204") },
		"/bad-value":             func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "200", "x-a", "1\r\n2") },
		"/self-dependency": func(p *rawPeer, id uint32) {
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headerBlock(":status", "200"), EndHeaders: true, EndStream: true, Priority: http2.PriorityParam{StreamDep: id, Weight: 15}})
		},
		"/interim-ends": func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "103") },
		"/data-first":   func(p *rawPeer, id uint32) { p.fr.WriteData(id, true, []byte("x")) },
		"/shorter": func(p *rawPeer, id uint32) {
			headers(p, id, false, ":status", "200", "content-length", "5")
			p.fr.WriteData(id, true, []byte("abc"))
		},
		"/longer": func(p *rawPeer, id uint32) {
			headers(p, id, false, ":status", "200", "content-length", "2")
			p.fr.WriteData(id, true, []byte("abc"))
		},
		"/bad-length": func(p *rawPeer, id uint32) { headers(p, id, true, ":status", "200", "content-length", "-1") },
		"/open-trailers": func(p *rawPeer, id uint32) {
			headers(p, id, false, ":status", "200")
			p.fr.WriteData(id, false, []byte("abc"))
			headers(p, id, false, "x-t", "1")
		},
		"/pseudo-trailers": func(p *rawPeer, id uint32) {
			headers(p, id, false, ":status", "200")
			headers(p, id, true, ":status", "200")
		},
	}
	addr := listenRaw(t, nil, func(p *rawPeer) {
		p.answerAll(func(p *rawPeer, id uint32, path string) {
			if bad := cases[path]; bad != nil {
				bad(p, id)
				return
			}
			headers(p, id, false, ":status", "100")
			headers(p, id, false, ":status", "103", "link", "</a.css>; rel=preload")
			headers(p, id, false, ":status", "200", "content-length", "2")
			p.fr.WriteData(id, true, []byte("ok"))
		})
	})
	c := rawClient(t, addr)
	for path := range cases {
		t.Run(path[1:], func(t *testing.T) {
			var resp fasthttp.Response
			var s Body
			err := c.do(get(path), &resp, 5*time.Second, &s)
			if err == nil && s.Active() {
				_, err = io.ReadAll(&s)
			}
			s.Close()
			var se http2.StreamError
			if !errors.As(err, &se) || se.Code != http2.ErrCodeProtocol {
				t.Errorf("err %v, status %d, want a stream's PROTOCOL_ERROR", err, resp.StatusCode())
			}
			if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil || resp.StatusCode() != 200 || string(readAll(t, &resp, &s)) != "ok" {
				t.Errorf("the next exchange: %v, %d", err, resp.StatusCode())
			}
		})
	}
	if n := c.conns.Load(); n != 1 {
		t.Errorf("%d connections: a malformed response ended its connection", n)
	}
}

// TestH2ClientPeerSettingsMidConnection has the peer change its settings
// while requests are open: a larger SETTINGS_INITIAL_WINDOW_SIZE lets a
// request body that waits on it go on (RFC 9113, 6.9.2), and a lower
// SETTINGS_MAX_CONCURRENT_STREAMS sends the next request to another
// connection.
func TestH2ClientPeerSettingsMidConnection(t *testing.T) {
	const bodyLen = 1000
	var conns atomic.Int32
	addr := listenRaw(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 10}}, func(p *rawPeer) {
		if conns.Add(1) > 1 {
			p.answerAll(func(p *rawPeer, id uint32, path string) { p.respond(id, "second") })
			return
		}
		got := 0
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			d, ok := f.(*http2.DataFrame)
			if !ok {
				continue
			}
			got += len(d.Data())
			if got == 10 {
				// The stream's window is used up: more of it, and no
				// more than one stream.
				p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: bodyLen},
					http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
			}
			if d.StreamEnded() {
				p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: d.StreamID, BlockFragment: headerBlock(":status", "200"), EndHeaders: true})
				p.fr.WriteData(d.StreamID, false, []byte(strconv.Itoa(got)))
				io.Copy(io.Discard, p.conn)
				return
			}
		}
	})
	c := rawClient(t, addr)
	req := get("/")
	req.Header.SetMethod("POST")
	req.SetBody(make([]byte, bodyLen))
	var resp fasthttp.Response
	var s Body
	if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 16)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != strconv.Itoa(bodyLen) {
		t.Fatalf("the peer got %q, %v", buf[:n], err)
	}
	var resp2 fasthttp.Response
	var s2 Body
	if err := c.do(get("/"), &resp2, 5*time.Second, &s2); err != nil || string(readAll(t, &resp2, &s2)) != "second" {
		t.Errorf("the second request: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestH2ClientResponseBeforeRequestEnds has the peer answer whole before
// the request body ends and reset the stream with NO_ERROR, asking the
// client to stop sending (RFC 9113, 8.1): the response stands, the body
// is read no more, and the connection goes on serving.
func TestH2ClientResponseBeforeRequestEnds(t *testing.T) {
	addr := listenRaw(t, nil, func(p *rawPeer) {
		p.answerAll(func(p *rawPeer, id uint32, path string) {
			p.respond(id, "early")
			if path == "/early" {
				p.fr.WriteRSTStream(id, http2.ErrCodeNo)
			}
		})
	})
	c := rawClient(t, addr)
	body := &abortableBody{data: make(chan []byte, 1), aborted: make(chan struct{})}
	body.data <- []byte("first")
	req := get("/early")
	req.Header.SetMethod("POST")
	req.SetBodyStream(body, -1)
	var resp fasthttp.Response
	var s Body
	if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, &resp, &s); string(b) != "early" || resp.StatusCode() != 200 {
		t.Errorf("%d %q", resp.StatusCode(), b)
	}
	<-body.aborted
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	readAll(t, &resp, &s)
	if n := c.conns.Load(); n != 1 {
		t.Errorf("%d connections", n)
	}
}

// TestH2ClientQuietGRPCStream keeps a gRPC server stream open and quiet
// for several of the client's ping intervals, against grpc-go's server:
// it closes a connection whose client pings a quiet stream more often than
// its keepalive enforcement allows (MinTime, 5 minutes by default; more
// than two such pings). The stream must live on. Both sides' times are
// scaled down alike.
func TestH2ClientQuietGRPCStream(t *testing.T) {
	const scale = 3000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Minute / scale}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	c := rawClient(t, ln.Addr().String())
	c.tr.sendPingTimeout = h2SendPingTimeout / scale
	c.tr.pingTimeout = 5 * time.Second // not scaled: a loaded machine answers late
	c.tr.pingInterval = h2PingInterval / scale
	req := get("/grpc.health.v1.Health/Watch")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/grpc")
	var resp fasthttp.Response
	// An empty HealthCheckRequest: the server's own health.
	rc, err := c.stream(t.Context(), req, bytes.NewReader(make([]byte, 5)), &resp)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	readStatus := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		var prefix [5]byte
		if _, err := io.ReadFull(rc, prefix[:]); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(prefix[1:]))
		if _, err := io.ReadFull(rc, msg); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		var m healthpb.HealthCheckResponse
		if err := proto.Unmarshal(msg, &m); err != nil {
			t.Fatal(err)
		}
		return m.Status
	}
	if s := readStatus(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v", s)
	}
	// Quiet while the client sends pings, or until the connection ends.
	c.tr.mu.Lock()
	cc := c.tr.conns[0]
	c.tr.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cc.mu.Lock()
		pings, ended := binary.BigEndian.Uint64(cc.pingData[:]), cc.err != nil
		cc.mu.Unlock()
		if pings >= 6 || ended {
			break
		}
		time.Sleep(time.Millisecond)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if s := readStatus(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status %v", s)
	}
}

// TestH2ClientPeerHeaderTableSize has the peer shrink its HPACK table to
// nothing (SETTINGS_HEADER_TABLE_SIZE 0) once the client has indexed
// fields in it: the client's next header block starts with the table
// size update (RFC 7541, 4.2 and 6.3) and refers to no entry of the old
// table.
func TestH2ClientPeerHeaderTableSize(t *testing.T) {
	errs := make(chan error, 8)
	addr := listenRaw(t, nil, func(p *rawPeer) {
		p.fr.ReadMetaHeaders = nil // the blocks are decoded here
		dec := hpack.NewDecoder(4096, nil)
		n := 0
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
			case *http2.HeadersFrame:
				n++
				block := f.HeaderBlockFragment()
				if n == 3 && block[0]&0xe0 != 0x20 {
					errs <- fmt.Errorf("the block after the change starts with %#x, not a table size update", block[0])
				}
				fields, err := dec.DecodeFull(block)
				if err != nil {
					errs <- err
					return
				}
				stable := ""
				for _, hf := range fields {
					if hf.Name == "x-stable" {
						stable = hf.Value
					}
				}
				if stable != "v" {
					errs <- fmt.Errorf("request %d: x-stable %q", n, stable)
				}
				if n == 2 {
					p.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
					dec.SetAllowedMaxDynamicTableSize(0)
				}
				p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: headerBlock(":status", "200"), EndHeaders: true, EndStream: true})
				if n == 3 {
					close(errs)
				}
			}
		}
	})
	c := rawClient(t, addr)
	for range 3 {
		req := get("/")
		req.Header.Set("X-Stable", "v")
		var resp fasthttp.Response
		var s Body
		if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	for err := range errs {
		t.Error(err)
	}
}
