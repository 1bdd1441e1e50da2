package h2_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/h2"
	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
)

// errCounter collects the names Options.CountError receives.
type errCounter struct {
	mu    sync.Mutex
	names []string
}

func (c *errCounter) count(name string) {
	c.mu.Lock()
	c.names = append(c.names, name)
	c.mu.Unlock()
}

func (c *errCounter) has(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.names {
		if n == name {
			return true
		}
	}
	return false
}

func (c *errCounter) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...)
}

// serve starts a Server on a loopback listener, every connection h2c with
// prior knowledge, and returns its address.
func serve(t *testing.T, h fasthttp.RequestHandler, opts h2.Options) (*h2.Server, string) {
	t.Helper()
	srv := h2.NewServer(h, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = srv.ServeConn(c) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String()
}

// rawClient speaks HTTP/2 frame by frame, to drive what well-behaved
// clients never do.
type rawClient struct {
	t     *testing.T
	c     net.Conn
	fr    *http2.Framer
	enc   *hpack.Encoder
	hbuf  bytes.Buffer
	resps map[uint32]*rawResponse
}

func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	if err := rc.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	// The server's SETTINGS come first; acknowledge them.
	f := rc.read()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if err := rc.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) read() http2.Frame {
	rc.t.Helper()
	f, err := rc.fr.ReadFrame()
	if err != nil {
		rc.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// next returns the next frame other than SETTINGS, PING and connection
// WINDOW_UPDATE.
func (rc *rawClient) next() http2.Frame {
	rc.t.Helper()
	for {
		switch f := rc.read().(type) {
		case *http2.SettingsFrame, *http2.PingFrame:
		case *http2.WindowUpdateFrame:
			if f.StreamID != 0 {
				return f
			}
		default:
			return f
		}
	}
}

func (rc *rawClient) block(fields ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), rc.hbuf.Bytes()...)
}

func (rc *rawClient) headers(id uint32, end bool, fields ...string) {
	rc.t.Helper()
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(fields...), EndStream: end, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawClient) get(id uint32, path string, extra ...string) {
	rc.t.Helper()
	rc.headers(id, true, append([]string{":method", "GET", ":scheme", "http", ":authority", "test", ":path", path}, extra...)...)
}

// rawResponse is a response as rawClient reads it.
type rawResponse struct {
	status   string
	body     []byte
	trailers map[string]string
	done     bool
}

// response reads stream id's response to its end: status, body, trailers.
// Frames of other streams are kept for their own call.
func (rc *rawClient) response(id uint32) (status string, body []byte, trailers map[string]string) {
	rc.t.Helper()
	if rc.resps == nil {
		rc.resps = map[uint32]*rawResponse{}
	}
	get := func(id uint32) *rawResponse {
		r := rc.resps[id]
		if r == nil {
			r = &rawResponse{}
			rc.resps[id] = r
		}
		return r
	}
	for {
		if r := rc.resps[id]; r != nil && r.done {
			delete(rc.resps, id)
			return r.status, r.body, r.trailers
		}
		switch f := rc.next().(type) {
		case *http2.MetaHeadersFrame:
			r := get(f.StreamID)
			if r.status == "" || r.status[0] == '1' {
				r.status = f.PseudoValue("status")
			} else {
				r.trailers = map[string]string{}
				for _, hf := range f.RegularFields() {
					r.trailers[hf.Name] = hf.Value
				}
			}
			r.done = f.StreamEnded()
		case *http2.DataFrame:
			r := get(f.StreamID)
			r.body = append(r.body, f.Data()...)
			if n := len(f.Data()); n > 0 {
				_ = rc.fr.WriteWindowUpdate(0, uint32(n))
				_ = rc.fr.WriteWindowUpdate(f.StreamID, uint32(n))
			}
			r.done = f.StreamEnded()
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				rc.t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}

// reset reads until stream id's RST_STREAM and returns its code.
func (rc *rawClient) reset(id uint32) http2.ErrCode {
	rc.t.Helper()
	for {
		switch f := rc.next().(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return f.ErrCode
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v, want a reset of stream %d", f.ErrCode, id)
		}
	}
}

// goAway reads until GOAWAY.
func (rc *rawClient) goAway() *http2.GoAwayFrame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g
		}
	}
}

// closed reports whether the server closes the connection (after
// whatever frames) within the connection's deadline.
func (rc *rawClient) closed() bool {
	for {
		if _, err := rc.fr.ReadFrame(); err != nil {
			var ne net.Error
			return !errors.As(err, &ne) || !ne.Timeout()
		}
	}
}

func echoPath(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain")
	ctx.SetBodyString(string(ctx.Path()))
}

// TestFlowControlResponse sends a response larger than the client's
// windows: the server sends no more than the client grants, per stream
// and per connection, and no frame larger than the client's maximum.
func TestFlowControlResponse(t *testing.T) {
	const size = 300 << 10
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"body", false}, {"body stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
				if tc.stream {
					ctx.SetBodyStream(bytes.NewReader(payload), -1)
				} else {
					ctx.SetBody(payload)
				}
			}, h2.Options{})
			const window = 1000
			rc := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
			rc.get(1, "/big")
			var got []byte
			granted := int64(window)    // stream window the client granted
			connGranted := int64(65535) // connection window
			for {
				f := rc.next()
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					if f.PseudoValue("status") != "200" {
						t.Fatalf("status %q", f.PseudoValue("status"))
					}
					continue
				case *http2.DataFrame:
					n := int64(len(f.Data()))
					if n > 16384 {
						t.Fatalf("DATA of %d bytes, beyond the maximum frame size", n)
					}
					granted -= n
					connGranted -= n
					if granted < 0 || connGranted < 0 {
						t.Fatalf("the server sent beyond the window: stream %d, connection %d", granted, connGranted)
					}
					got = append(got, f.Data()...)
					if f.StreamEnded() {
						if !bytes.Equal(got, payload) {
							t.Fatalf("got %d bytes, want %d", len(got), len(payload))
						}
						return
					}
					if granted == 0 {
						// Grant a little at a time, the connection only when
						// it runs out.
						if connGranted < window {
							_ = rc.fr.WriteWindowUpdate(0, 65535)
							connGranted += 65535
						}
						_ = rc.fr.WriteWindowUpdate(1, window)
						granted += window
					}
				default:
					t.Fatalf("unexpected %v", f)
				}
			}
		})
	}
}

// TestFlowControlLargeFrames has the client allow large frames and
// windows: a large body goes out in frames of its maximum size.
func TestFlowControlLargeFrames(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 200<<10)
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(payload) }, h2.Options{})
	rc := dialRaw(t, addr,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 16})
	_ = rc.fr.WriteWindowUpdate(0, 1<<30)
	rc.get(1, "/big")
	largest := 0
	var got int
	for {
		f := rc.next()
		if d, ok := f.(*http2.DataFrame); ok {
			largest = max(largest, len(d.Data()))
			got += len(d.Data())
			if d.StreamEnded() {
				break
			}
		}
	}
	if got != len(payload) || largest != 1<<16 {
		t.Errorf("got %d bytes in frames of at most %d, want %d in frames of %d", got, largest, len(payload), 1<<16)
	}
}

// sha256Handler answers with the SHA-256 of the request body, read as a
// stream, and the trailer x-check if the client sent one.
func sha256Handler(ctx *fasthttp.RequestCtx) {
	h := sha256.New()
	if _, err := io.Copy(h, ctx.RequestBodyStream()); err != nil {
		ctx.Error(err.Error(), 599)
		return
	}
	ctx.Response.Header.Set("x-check", string(ctx.Request.Header.Peek("x-check")))
	ctx.SetBodyString(hex.EncodeToString(h.Sum(nil)))
}

// TestRequestBodyWindows uploads bodies far larger than the windows the
// server grants: it must grant them again as the handler reads.
func TestRequestBodyWindows(t *testing.T) {
	_, addr := serve(t, sha256Handler, h2.Options{StreamWindow: 16 << 10, ConnectionWindow: 64 << 10})
	c := &http.Client{Transport: prototest.H2CTransport(), Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			body := bytes.Repeat([]byte{byte('a' + i)}, 1<<20+i*1000)
			resp, err := c.Post("http://"+addr+"/up", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			sum := sha256.Sum256(body)
			if resp.StatusCode != 200 || string(got) != hex.EncodeToString(sum[:]) {
				t.Errorf("upload %d: status %d, %q", i, resp.StatusCode, got)
			}
		})
	}
	wg.Wait()
}

// TestRequestBodyBeyondWindow has a client send more than the stream
// window without waiting: the stream is reset with FLOW_CONTROL_ERROR.
func TestRequestBodyBeyondWindow(t *testing.T) {
	errs := &errCounter{}
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(100 * time.Millisecond)
		_, _ = io.Copy(io.Discard, ctx.RequestBodyStream())
	}, h2.Options{StreamWindow: 70000, CountError: errs.count})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/")
	chunk := make([]byte, 16384)
	for range 5 { // 80 KiB > 70000
		if err := rc.fr.WriteData(1, false, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if code := rc.reset(1); code != http2.ErrCodeFlowControl {
		t.Errorf("reset %v, want FLOW_CONTROL_ERROR", code)
	}
	if !errs.has("stream_flow_control") {
		t.Errorf("errors counted: %v", errs.all())
	}
}

// TestRequestTrailers sends a body and trailers: the handler finds the
// trailer in the request header once it has read the body.
func TestRequestTrailers(t *testing.T) {
	_, addr := serve(t, sha256Handler, h2.Options{})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/", "trailer", "x-check")
	_ = rc.fr.WriteData(1, false, []byte("hello "))
	_ = rc.fr.WriteData(1, false, []byte("world"))
	rc.headers(1, true, "x-check", "42")
	status, body, _ := rc.response(1)
	sum := sha256.Sum256([]byte("hello world"))
	if status != "200" || string(body) != hex.EncodeToString(sum[:]) {
		t.Errorf("status %s, body %q", status, body)
	}
}

// TestResponseTrailers answers with a body stream and trailers set at
// its end, as the HTTP/2 cluster does for gRPC.
func TestResponseTrailers(t *testing.T) {
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/grpc")
		ctx.SetBodyStream(&trailingBody{r: strings.NewReader("message"), resp: &ctx.Response}, -1)
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.get(1, "/rpc")
	status, body, trailers := rc.response(1)
	if status != "200" || string(body) != "message" || trailers["grpc-status"] != "0" || trailers["grpc-message"] != "ok" {
		t.Errorf("status %s, body %q, trailers %v", status, body, trailers)
	}
}

// trailingBody sets trailers on the response when its end is read.
type trailingBody struct {
	r    io.Reader
	resp *fasthttp.Response
}

func (b *trailingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		_ = b.resp.Header.AddTrailer("Grpc-Status")
		_ = b.resp.Header.AddTrailer("Grpc-Message")
		b.resp.Header.Set("Grpc-Status", "0")
		b.resp.Header.Set("Grpc-Message", "ok")
	}
	return n, err
}

// TestClientResetMidBody resets a stream while its handler reads the
// request body: the read fails at once, and the connection serves on.
func TestClientResetMidBody(t *testing.T) {
	readErr := make(chan error, 1)
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/upload" {
			echoPath(ctx)
			return
		}
		_, err := io.Copy(io.Discard, ctx.RequestBodyStream())
		readErr <- err
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/upload")
	_ = rc.fr.WriteData(1, false, []byte("part of a body"))
	time.Sleep(50 * time.Millisecond)
	_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the handler read the body to a clean end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's read did not end")
	}
	rc.get(3, "/after")
	if status, body, _ := rc.response(3); status != "200" || string(body) != "/after" {
		t.Errorf("after the reset: %s %q", status, body)
	}
}

// TestClientResetMidResponse resets a stream while its response streams:
// the server stops sending it and closes the response's body stream.
func TestClientResetMidResponse(t *testing.T) {
	closed := make(chan struct{})
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyStream(&endlessBody{closed: closed}, -1)
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.get(1, "/endless")
	for n := 0; n < 3; {
		if _, ok := rc.next().(*http2.DataFrame); ok {
			n++
		}
	}
	_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the response body stream was not closed after the reset")
	}
}

// endlessBody yields a chunk every few milliseconds until closed.
type endlessBody struct {
	closed chan struct{}
	once   sync.Once
}

func (b *endlessBody) Read(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return copy(p, "tick\n"), nil
}

func (b *endlessBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// TestBodyStreamFailure has the response body fail mid-way: the client
// sees the stream reset, not a clean end.
func TestBodyStreamFailure(t *testing.T) {
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyStream(io.MultiReader(strings.NewReader("half"), errReader{}), -1)
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.get(1, "/broken")
	if code := rc.reset(1); code != http2.ErrCodeInternal {
		t.Errorf("reset %v, want INTERNAL_ERROR", code)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("upstream broke off") }

// TestStreamErrors sends malformed requests: each stream is reset with
// PROTOCOL_ERROR, the error is counted, and the connection serves on.
func TestStreamErrors(t *testing.T) {
	get := []string{":method", "GET", ":scheme", "http", ":authority", "test", ":path", "/"}
	for _, tc := range []struct {
		name   string
		fields []string
		count  string
	}{
		{"missing :path", get[:6], "pseudo_missing"},
		{"missing :method", get[2:], "pseudo_method_missing"},
		{"unknown pseudo-header", append(get[:8:8], ":foo", "bar"), "pseudo_unknown"},
		{"duplicate :path", append(get[:8:8], ":path", "/again"), "pseudo_duplicate"},
		{"pseudo-header after a regular one", []string{":method", "GET", "accept", "*/*", ":scheme", "http", ":path", "/"}, "pseudo_after_regular"},
		{"upper case name", append(get[:8:8], "X-Upper", "1"), "header_name_invalid"},
		{"connection-specific", append(get[:8:8], "connection", "keep-alive"), "header_connection_specific"},
		{"te other than trailers", append(get[:8:8], "te", "gzip"), "header_te"},
		{"value with a newline", append(get[:8:8], "x-a", "b\nc"), "header_value_invalid"},
		{"relative path", append(get[:6:6], ":path", "nope"), "pseudo_path_invalid"},
		{"CONNECT with a path", []string{":method", "CONNECT", ":authority", "x:443", ":path", "/"}, "pseudo_connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := &errCounter{}
			_, addr := serve(t, echoPath, h2.Options{CountError: errs.count})
			rc := dialRaw(t, addr)
			rc.headers(1, true, tc.fields...)
			if code := rc.reset(1); code != http2.ErrCodeProtocol {
				t.Errorf("reset %v, want PROTOCOL_ERROR", code)
			}
			if !errs.has(tc.count) {
				t.Errorf("errors counted %v, want %q", errs.all(), tc.count)
			}
			rc.get(3, "/next")
			if status, body, _ := rc.response(3); status != "200" || string(body) != "/next" {
				t.Errorf("next request: %s %q", status, body)
			}
		})
	}
}

// TestConnectionErrors sends what breaks the connection itself: GOAWAY
// with the right code, then the close.
func TestConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		send  func(rc *rawClient)
		code  http2.ErrCode
		count string
	}{
		{"DATA on an idle stream", func(rc *rawClient) { _ = rc.fr.WriteData(5, true, []byte("x")) }, http2.ErrCodeProtocol, "data_on_idle_stream"},
		{"even stream id", func(rc *rawClient) { rc.get(2, "/") }, http2.ErrCodeProtocol, "headers_even_stream"},
		{"decreasing stream id", func(rc *rawClient) {
			rc.get(5, "/")
			rc.headers(3, false, ":method", "GET", ":scheme", "http", ":path", "/")
		}, http2.ErrCodeProtocol, "headers_on_closed_stream"},
		{"decreasing stream id, END_STREAM", func(rc *rawClient) {
			rc.get(5, "/")
			rc.get(3, "/")
		}, http2.ErrCodeProtocol, "headers_on_closed_stream"},
		{"connection window overflow", func(rc *rawClient) { _ = rc.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl, "conn_window_overflow"},
		{"CONTINUATION out of place", func(rc *rawClient) { _ = rc.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol, "conn_PROTOCOL_ERROR"},
		{"undecodable header block", func(rc *rawClient) {
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xbf}, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression, "hpack_decode"},
		{"invalid setting", func(rc *rawClient) {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl, "conn_FLOW_CONTROL_ERROR"},
		{"frame too large", func(rc *rawClient) { _ = rc.fr.WriteData(1, false, make([]byte, 20000)) }, http2.ErrCodeFrameSize, "frame_too_large"},
		{"PUSH_PROMISE", func(rc *rawClient) {
			_ = rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol, "push_promise_from_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := &errCounter{}
			_, addr := serve(t, echoPath, h2.Options{CountError: errs.count})
			rc := dialRaw(t, addr)
			rc.fr.AllowIllegalWrites = true
			tc.send(rc)
			if g := rc.goAway(); g.ErrCode != tc.code {
				t.Errorf("GOAWAY %v, want %v", g.ErrCode, tc.code)
			}
			if !rc.closed() {
				t.Error("the connection stayed open")
			}
			if !errs.has(tc.count) {
				t.Errorf("errors counted %v, want %q", errs.all(), tc.count)
			}
		})
	}
}

// TestBadPreface sends HTTP/1.1 to the HTTP/2 server: it closes the
// connection.
func TestBadPreface(t *testing.T) {
	errs := &errCounter{}
	srv := h2.NewServer(echoPath, h2.Options{CountError: errs.count})
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { _ = srv.ServeConn(server); close(done) }()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	_, _ = io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not closed")
	}
	if !errs.has("conn_preface") {
		t.Errorf("errors counted %v", errs.all())
	}
}

// TestLimits: streams beyond MaxConcurrentStreams are refused, a header
// list beyond MaxHeaderBytes is answered 431, CONNECT 405.
func TestLimits(t *testing.T) {
	release := make(chan struct{})
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/wait" {
			<-release
		}
		echoPath(ctx)
	}, h2.Options{MaxConcurrentStreams: 2, MaxHeaderBytes: 1000})
	rc := dialRaw(t, addr)
	rc.get(1, "/wait")
	rc.get(3, "/wait")
	rc.get(5, "/refused")
	if code := rc.reset(5); code != http2.ErrCodeRefusedStream {
		t.Errorf("third stream: %v, want REFUSED_STREAM", code)
	}
	close(release)
	for _, id := range []uint32{1, 3} {
		if status, _, _ := rc.response(id); status != "200" {
			t.Errorf("stream %d: %s", id, status)
		}
	}
	rc.get(7, "/big", "x-big", strings.Repeat("a", 2000))
	if status, _, _ := rc.response(7); status != "431" {
		t.Errorf("large header list: %s, want 431", status)
	}
	rc.headers(9, false, ":method", "CONNECT", ":authority", "example.com:443")
	if status, _, _ := rc.response(9); status != "405" {
		t.Errorf("CONNECT: %s, want 405", status)
	}
	rc.get(11, "/still")
	if status, body, _ := rc.response(11); status != "200" || string(body) != "/still" {
		t.Errorf("after: %s %q", status, body)
	}
}

// TestPingAndPriority: PING is answered, PRIORITY ignored, HEAD has no
// body but its length.
func TestPingAndPriority(t *testing.T) {
	_, addr := serve(t, echoPath, h2.Options{})
	rc := dialRaw(t, addr)
	_ = rc.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 200})
	_ = rc.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	for {
		if p, ok := rc.read().(*http2.PingFrame); ok {
			if !p.IsAck() || p.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
				t.Fatalf("PING %v", p)
			}
			break
		}
	}
	rc.headers(1, true, ":method", "HEAD", ":scheme", "http", ":authority", "test", ":path", "/head")
	f := rc.next().(*http2.MetaHeadersFrame)
	if !f.StreamEnded() || f.PseudoValue("status") != "200" {
		t.Errorf("HEAD: %v", f)
	}
	for _, hf := range f.RegularFields() {
		if hf.Name == "content-length" && hf.Value != "5" {
			t.Errorf("HEAD content-length %s, want 5", hf.Value)
		}
	}
}

// TestShutdown shuts the server down while a stream is in flight: the
// client gets GOAWAY naming that stream, the stream completes, then the
// connection closes and Shutdown returns.
func TestShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		close(started)
		<-release
		ctx.SetBodyString("finished")
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.get(1, "/slow")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	g := rc.goAway()
	if g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
		t.Errorf("GOAWAY %v last stream %d, want NO_ERROR and 1", g.ErrCode, g.LastStreamID)
	}
	// A stream opened after GOAWAY is ignored.
	rc.get(3, "/ignored")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a stream in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if status, body, _ := rc.response(1); status != "200" || string(body) != "finished" {
		t.Errorf("in-flight stream: %s %q", status, body)
	}
	if !rc.closed() {
		t.Error("the connection stayed open")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestShutdownDeadline: a stream that does not finish in time has its
// connection closed when Shutdown's context ends.
func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, addr := serve(t, func(ctx *fasthttp.RequestCtx) { <-release }, h2.Options{})
	rc := dialRaw(t, addr)
	rc.get(1, "/stuck")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	if !rc.closed() {
		t.Error("the connection stayed open")
	}
}

// TestIdleTimeout: a connection without streams is closed with GOAWAY
// NO_ERROR after IdleTimeout; one with a stream open is not.
func TestIdleTimeout(t *testing.T) {
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/long" {
			time.Sleep(400 * time.Millisecond)
		}
		echoPath(ctx)
	}, h2.Options{IdleTimeout: 200 * time.Millisecond})
	rc := dialRaw(t, addr)
	// Requests closer together than the timeout keep the connection,
	// however long it lives.
	for id := uint32(1); id < 7; id += 2 {
		time.Sleep(120 * time.Millisecond)
		rc.get(id, "/quick")
		if status, _, _ := rc.response(id); status != "200" {
			t.Fatalf("status %s", status)
		}
	}
	start := time.Now()
	rc.get(7, "/long")
	if status, _, _ := rc.response(7); status != "200" {
		t.Fatalf("status %s", status)
	}
	g := rc.goAway()
	if g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 7 {
		t.Errorf("GOAWAY %v %d", g.ErrCode, g.LastStreamID)
	}
	if d := time.Since(start); d < 550*time.Millisecond {
		t.Errorf("closed after %v, before the stream's end and the idle timeout", d)
	}
	if !rc.closed() {
		t.Error("the connection stayed open")
	}
}

// TestStalledFrame: a client that stops in the middle of a frame has its
// connection closed even though a stream is open.
func TestStalledFrame(t *testing.T) {
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		_, _ = io.Copy(io.Discard, ctx.RequestBodyStream())
	}, h2.Options{IdleTimeout: 300 * time.Millisecond})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/")
	// A DATA frame header announcing 100 bytes, then 10 of them.
	_, _ = rc.c.Write([]byte{0, 0, 100, 0, 0, 0, 0, 0, 1})
	_, _ = rc.c.Write(make([]byte, 10))
	start := time.Now()
	if !rc.closed() {
		t.Fatal("the connection stayed open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v", d)
	}
}

// TestRequestFields checks what the handler sees of a request.
func TestRequestFields(t *testing.T) {
	got := make(chan string, 1)
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		got <- fmt.Sprintf("%s %s %s host=%s cookie=%s a=%q len=%d body=%v",
			h.Method(), h.RequestURI(), h.Protocol(), h.Host(), h.Peek("Cookie"), h.PeekAll("X-A"), h.ContentLength(), ctx.Request.IsBodyStream())
	}, h2.Options{})
	rc := dialRaw(t, addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", "/p?q=1",
		"cookie", "a=1", "cookie", "b=2", "x-a", "1", "x-a", "2", "host", "other.example")
	_, _, _ = rc.response(1)
	want := `GET /p?q=1 HTTP/2 host=example.com cookie=a=1; b=2 a=["1" "2"] len=0 body=false`
	if s := <-got; s != want {
		t.Errorf("handler saw\n%s\nwant\n%s", s, want)
	}
}

// TestExpectContinue: a client that waits for 100 (Continue) gets it when
// the handler first reads the body.
func TestExpectContinue(t *testing.T) {
	_, addr := serve(t, sha256Handler, h2.Options{})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "PUT", ":scheme", "http", ":authority", "test", ":path", "/", "expect", "100-continue", "content-length", "3")
	f := rc.next().(*http2.MetaHeadersFrame)
	if f.PseudoValue("status") != "100" || f.StreamEnded() {
		t.Fatalf("first response %v", f)
	}
	_ = rc.fr.WriteData(1, true, []byte("abc"))
	sum := sha256.Sum256([]byte("abc"))
	if status, body, _ := rc.response(1); status != "200" || string(body) != hex.EncodeToString(sum[:]) {
		t.Errorf("%s %q", status, body)
	}
}

// TestConcurrentStreams hammers one connection with streams of every
// kind from many goroutines, some cancelled: run it with -race.
func TestConcurrentStreams(t *testing.T) {
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/echo":
			sha256Handler(ctx)
		case "/stream":
			ctx.SetBodyStream(strings.NewReader(strings.Repeat("s", 50000)), -1)
		default:
			ctx.SetBodyString(strings.Repeat("b", 1000))
		}
	}, h2.Options{MaxConcurrentStreams: 50, StreamWindow: 32 << 10})
	c := &http.Client{Transport: prototest.H2CTransport(), Timeout: 20 * time.Second}
	var wg sync.WaitGroup
	var ok atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := range 30 {
				ctx, cancel := context.WithCancel(context.Background())
				var req *http.Request
				switch (g + i) % 3 {
				case 0:
					body := strings.Repeat(strconv.Itoa(i), 5000*(i%4+1))
					req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/echo", strings.NewReader(body))
				case 1:
					req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stream", nil)
				default:
					req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/small", nil)
				}
				if i%7 == 3 {
					time.AfterFunc(time.Millisecond, cancel)
				}
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode == 200 {
						ok.Add(1)
					}
				}
				if err != nil && ctx.Err() == nil {
					t.Errorf("request %d/%d: %v", g, i, err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if ok.Load() < 16*30*3/4 {
		t.Errorf("only %d requests succeeded", ok.Load())
	}
}

// TestCurl serves curl --http2-prior-knowledge: a GET and an upload.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	_, addr := serve(t, sha256Handler, h2.Options{StreamWindow: 16 << 10})
	body := strings.Repeat("curl", 100000)
	cmd := exec.Command(curl, "-sS", "--http2-prior-knowledge", "--data-binary", "@-", "-w", " %{http_version} %{http_code}", "http://"+addr+"/up")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	sum := sha256.Sum256([]byte(body))
	if want := hex.EncodeToString(sum[:]) + " 2 200"; string(out) != want {
		t.Errorf("curl: %q, want %q", out, want)
	}
}

// TestFlowControlStall: a client that grants no window at all has the
// stream reset after IdleTimeout instead of holding its handler forever.
func TestFlowControlStall(t *testing.T) {
	errs := &errCounter{}
	done := make(chan struct{})
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		defer close(done)
		ctx.SetBodyString("a body the client never lets through")
	}, h2.Options{IdleTimeout: 300 * time.Millisecond, CountError: errs.count})
	rc := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.get(1, "/stalled")
	start := time.Now()
	if code := rc.reset(1); code != http2.ErrCodeCancel {
		t.Errorf("reset %v, want CANCEL", code)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("reset after %v, before IdleTimeout", d)
	}
	<-done
	if !errs.has("flow_control_stall") {
		t.Errorf("errors counted %v", errs.all())
	}
	rc.get(3, "/next")
	if _, err := rc.fr.ReadFrame(); err != nil {
		t.Errorf("the connection did not serve on: %v", err)
	}
}

// TestShutdownStopsWorkers: the goroutines kept for later streams end
// with the server.
func TestShutdownStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	srv, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(20 * time.Millisecond)
		echoPath(ctx)
	}, h2.Options{})
	rc := dialRaw(t, addr)
	for id := uint32(1); id < 100; id += 2 {
		rc.get(id, "/w")
	}
	for id := uint32(1); id < 100; id += 2 {
		if status, _, _ := rc.response(id); status != "200" {
			t.Fatalf("stream %d: %s", id, status)
		}
	}
	if n := runtime.NumGoroutine(); n < before+40 {
		t.Fatalf("%d goroutines while serving, %d before: the streams did not run at once", n, before)
	}
	_ = rc.c.Close()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Shutdown, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLargeFrames: with MaxReadFrameSize above the default, frames larger
// than the read buffer (DATA, and HEADERS with CONTINUATION) are read
// whole.
func TestLargeFrames(t *testing.T) {
	_, addr := serve(t, sha256Handler, h2.Options{MaxReadFrameSize: 1 << 16})
	rc := dialRaw(t, addr)
	// The connection window starts at 64 KiB less one byte until the
	// server's WINDOW_UPDATE, which dialRaw has already read past.
	body := bytes.Repeat([]byte("z"), 60000)
	big := strings.Repeat("v", 30000)
	block := rc.block(":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/", "x-big", big)
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:25000], EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteContinuation(1, true, block[25000:]); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteData(1, true, body); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if status, got, _ := rc.response(1); status != "200" || string(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("%s %q", status, got)
	}
}

// TestPrematureResets: a client that resets most of its streams as soon
// as it opens them gets GOAWAY ENHANCE_YOUR_CALM even when the handlers
// are fast enough that no queue builds up.
func TestPrematureResets(t *testing.T) {
	errs := &errCounter{}
	_, addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(time.Millisecond)
		echoPath(ctx)
	}, h2.Options{CountError: errs.count})
	rc := dialRaw(t, addr)
	block := hpackGET("test", "/r")
	go func() {
		for id := uint32(1); id < 1000; id += 2 {
			if rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
				rc.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	if g := rc.goAway(); g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", g.ErrCode)
	}
	if !errs.has("premature_resets") {
		t.Errorf("errors counted %v", errs.all())
	}
}

// TestLateFrames: a response that ends before its request does asks the
// client to stop (RST_STREAM NO_ERROR); the DATA and trailers it sent
// meanwhile are ignored, and the connection serves on.
func TestLateFrames(t *testing.T) {
	_, addr := serve(t, echoPath, h2.Options{})
	rc := dialRaw(t, addr)
	rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "test", ":path", "/early")
	if status, body, _ := rc.response(1); status != "200" || string(body) != "/early" {
		t.Fatalf("%s %q", status, body)
	}
	if code := rc.reset(1); code != http2.ErrCodeNo {
		t.Errorf("reset %v, want NO_ERROR", code)
	}
	_ = rc.fr.WriteData(1, false, []byte("late"))
	rc.headers(1, true, "x-trailer", "late")
	rc.get(3, "/after")
	if status, body, _ := rc.response(3); status != "200" || string(body) != "/after" {
		t.Errorf("after: %s %q", status, body)
	}
}

// TestSettingsTimeout: a client that never acknowledges the server's
// SETTINGS gets GOAWAY SETTINGS_TIMEOUT; one that does keeps its
// connection past the timeout.
func TestSettingsTimeout(t *testing.T) {
	var ec errCounter
	_, addr := serve(t, echoPath, h2.Options{SettingsTimeout: 200 * time.Millisecond, CountError: ec.count})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	silent := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	if err := silent.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if g := silent.goAway(); g.ErrCode != http2.ErrCodeSettingsTimeout {
		t.Fatalf("GOAWAY %v, want SETTINGS_TIMEOUT", g.ErrCode)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("GOAWAY after %v", d)
	}
	if !ec.has("settings_timeout") {
		t.Errorf("errors counted: %v", ec.all())
	}

	polite := dialRaw(t, addr)
	time.Sleep(400 * time.Millisecond)
	polite.get(1, "/still-here")
	if status, body, _ := polite.response(1); status != "200" || string(body) != "/still-here" {
		t.Fatalf("after the timeout: %s %q", status, body)
	}
}
