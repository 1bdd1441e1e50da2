//lint:file-ignore SA1019 x/net's HTTP/2 server is the independent peer these tests need: its ServeConn serves one connection, so one can be shut down (GOAWAY) while the others serve, which net/http's server does not offer.

package cluster

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Peer is a real golang.org/x/net/http2 server on loopback, cleartext
// (prior knowledge) or TLS with ALPN h2. Each connection has its own
// http.Server, so that one connection can be shut down (GOAWAY) while
// the others serve.
type h2Peer struct {
	addr    string
	tlsConf *tls.Config // the client's, nil for h2c
	h2      http2.Server
	mu      sync.Mutex
	conns   []*http.Server
	accepts atomic.Int32
}

func startH2Peer(t *testing.T, useTLS bool, h2 http2.Server, h http.HandlerFunc) *h2Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &h2Peer{addr: ln.Addr().String(), h2: h2}
	var srvConf *tls.Config
	if useTLS {
		ts := httptest.NewUnstartedServer(nil)
		ts.EnableHTTP2 = true
		ts.StartTLS()
		cert := ts.TLS.Certificates[0]
		p.tlsConf = &tls.Config{RootCAs: ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
		ts.Close()
		srvConf = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepts.Add(1)
			hs := &http.Server{Handler: h}
			h2s := p.h2
			if err := http2.ConfigureServer(hs, &h2s); err != nil {
				panic(err)
			}
			p.mu.Lock()
			p.conns = append(p.conns, hs)
			p.mu.Unlock()
			if srvConf != nil {
				tc := tls.Server(c, srvConf)
				if err := tc.Handshake(); err != nil {
					c.Close()
					continue
				}
				c = tc
			}
			go h2s.ServeConn(c, &http2.ServeConnOpts{BaseConfig: hs, Handler: h})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, hs := range p.conns {
			hs.Close()
		}
	})
	return p
}

func (p *h2Peer) client(t *testing.T) *h2Client {
	t.Helper()
	c := newH2Client(poolKey{addr: p.addr, connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, p.tlsConf)
	t.Cleanup(c.tr.CloseIdleConnections)
	return c
}

func get(path string) *fasthttp.Request {
	req := new(fasthttp.Request)
	req.SetRequestURI(path)
	req.Header.SetHost("peer.test")
	return req
}

// readAll reads the response's body, streamed in s or whole in resp.
func readAll(t *testing.T, resp *fasthttp.Response, s *Body) []byte {
	t.Helper()
	if !s.Active() {
		return append([]byte(nil), resp.Body()...)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("closing the body: %v", err)
	}
	return b
}

// TestH2ClientPeers sends a request with headers and a body to HTTP/2
// servers over TLS (ALPN h2) and cleartext, and reads the answer.
func TestH2ClientPeers(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			p := startH2Peer(t, useTLS, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				w.Header().Set("X-Host", r.Host)
				w.Header().Set("X-Proto", r.Proto)
				w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
				w.Header().Set("X-Conn", r.Header.Get("Connection")+r.Header.Get("Keep-Alive"))
				w.Header().Set("X-Length", strconv.FormatInt(r.ContentLength, 10))
				w.Header().Add("X-Multi", "a")
				w.Header().Add("X-Multi", "b")
				w.Write(append([]byte(r.Method+" "+r.URL.RequestURI()+" "), body...))
			})
			c := p.client(t)
			for i := range 3 {
				req := get("/p?q=" + strconv.Itoa(i))
				req.Header.SetMethod("POST")
				req.Header.Set("X-Custom", "v")
				req.Header.Set("Connection", "keep-alive")
				req.Header.Set("Keep-Alive", "timeout=5")
				req.SetBodyString("hello")
				var resp fasthttp.Response
				var s Body
				if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
					t.Fatal(err)
				}
				body := readAll(t, &resp, &s)
				if want := "POST /p?q=" + strconv.Itoa(i) + " hello"; string(body) != want {
					t.Errorf("body %q, want %q", body, want)
				}
				for k, want := range map[string]string{"X-Host": "peer.test", "X-Proto": "HTTP/2.0", "X-Custom": "v", "X-Conn": "", "X-Length": "5"} {
					if got := string(resp.Header.Peek(k)); got != want {
						t.Errorf("%s %q, want %q", k, got, want)
					}
				}
				if n := len(resp.Header.PeekAll("X-Multi")); n != 2 {
					t.Errorf("%d X-Multi values", n)
				}
			}
			// The answer to HEAD names a length it does not carry.
			req := get("/")
			req.Header.SetMethod("HEAD")
			var resp fasthttp.Response
			var s Body
			if err := c.do(req, &resp, 5*time.Second, &s); err != nil || resp.StatusCode() != 200 {
				t.Errorf("HEAD: %d, %v", resp.StatusCode(), err)
			}
			readAll(t, &resp, &s)
			if n := c.conns.Load(); n != 1 {
				t.Errorf("%d connections for sequential requests", n)
			}
		})
	}
}

// TestH2ClientMaxConcurrentStreams holds more requests in flight than the
// peer allows streams on one connection: they are spread over new
// connections, none beyond the limit.
func TestH2ClientMaxConcurrentStreams(t *testing.T) {
	const limit, total = 4, 10
	var (
		mu      sync.Mutex
		perConn = map[string]int{}
		most    int
		all     = make(chan struct{})
		arrived int
	)
	p := startH2Peer(t, true, http2.Server{MaxConcurrentStreams: limit}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		perConn[r.RemoteAddr]++
		most = max(most, perConn[r.RemoteAddr])
		if arrived++; arrived == total {
			close(all)
		}
		mu.Unlock()
		<-all // every request is in flight at once
		mu.Lock()
		perConn[r.RemoteAddr]--
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	c := p.client(t)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for range total {
		wg.Go(func() {
			var resp fasthttp.Response
			var s Body
			if err := c.do(get("/"), &resp, 10*time.Second, &s); err != nil {
				errs <- err
				return
			}
			if b := readAll(t, &resp, &s); string(b) != "ok" {
				errs <- fmt.Errorf("body %q", b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if most > limit {
		t.Errorf("%d streams on one connection, limit %d", most, limit)
	}
	if n := c.conns.Load(); n != (total+limit-1)/limit {
		t.Errorf("%d connections, want %d", n, (total+limit-1)/limit)
	}
}

// TestH2ClientFlowControl sends bodies larger than both peers' windows
// both ways: from memory and from a stream, echoed back whole.
func TestH2ClientFlowControl(t *testing.T) {
	p := startH2Peer(t, true, http2.Server{MaxUploadBufferPerStream: 16 << 10, MaxUploadBufferPerConnection: 64 << 10},
		func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
			// Three times the request back: more than our stream window.
			for range 3 {
				w.Write(bytes.Repeat([]byte{'x'}, int(n)))
			}
		})
	c := p.client(t)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := fmt.Sprintf("%x", sha256.Sum256(payload))
	for _, streamed := range []bool{false, true} {
		req := get("/")
		req.Header.SetMethod("PUT")
		if streamed {
			req.SetBodyStream(bytes.NewReader(payload), -1)
		} else {
			req.SetBody(payload)
		}
		var resp fasthttp.Response
		var s Body
		if err := c.do(req, &resp, 10*time.Second, &s); err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Header.Peek("X-Sum")); got != sum {
			t.Errorf("streamed=%v: the peer got a body with sum %s", streamed, got)
		}
		if b := readAll(t, &resp, &s); len(b) != 3*len(payload) {
			t.Errorf("streamed=%v: %d bytes back, want %d", streamed, len(b), 3*len(payload))
		}
	}
}

// TestH2ClientTrailers reads a response's trailers at the end of its
// body, and a gRPC-style answer whose trailers come without a body.
func TestH2ClientTrailers(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Te") != "trailers" {
			http.Error(w, "te "+r.Header.Get("Te"), 400)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(200)
		if r.URL.Path == "/body" {
			w.Write([]byte("data"))
		}
		w.Header().Set("Grpc-Status", "7")
		w.Header().Set("Grpc-Message", "denied")
	})
	c := p.client(t)
	for _, path := range []string{"/body", "/empty"} {
		req := get(path)
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/grpc")
		var resp fasthttp.Response
		var s Body
		if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
			t.Fatal(err)
		}
		if !s.Active() {
			t.Fatalf("%s: the trailers did not come as a stream's end", path)
		}
		b := readAll(t, &resp, &s)
		if path == "/body" && string(b) != "data" {
			t.Errorf("%s: body %q", path, b)
		}
		if resp.StatusCode() != 200 || string(resp.Header.Peek("Grpc-Status")) != "7" || string(resp.Header.Peek("Grpc-Message")) != "denied" {
			t.Errorf("%s: status %d, trailers %q", path, resp.StatusCode(), resp.Header.TrailerHeader())
		}
		if !bytes.Contains(resp.Header.TrailerHeader(), []byte("Grpc-Status")) {
			t.Errorf("%s: grpc-status is not a trailer: %q", path, resp.Header.TrailerHeader())
		}
	}
}

// TestH2ClientPeerResets has the peer reset a stream before its response
// and in the middle of its body: the exchange fails, the connection goes
// on serving.
func TestH2ClientPeerResets(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/before":
			panic(http.ErrAbortHandler)
		case "/during":
			w.WriteHeader(200)
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "fine")
	})
	c := p.client(t)
	var resp fasthttp.Response
	var s Body
	err := c.do(get("/before"), &resp, 5*time.Second, &s)
	var se http2.StreamError
	if !errors.As(err, &se) {
		t.Errorf("reset before the response: %v", err)
	}
	if err := c.do(get("/during"), &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	if !s.Active() {
		t.Fatal("a body reset midway was read whole")
	}
	if _, err := io.ReadAll(&s); !errors.As(err, &se) {
		t.Errorf("reset during the body: %v", err)
	}
	if err := s.Close(); err == nil {
		t.Error("a body that did not end closed without error")
	}
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, &resp, &s); string(b) != "fine" {
		t.Errorf("after the resets: %q", b)
	}
	if n := p.accepts.Load(); n != 1 {
		t.Errorf("%d connections: a stream's reset closed its connection", n)
	}
}

// TestH2ClientGoAway shuts the first connection down (GOAWAY) while
// requests are in flight on it and more are sent: those it took finish on
// it, the others go to a new connection, and none is lost.
func TestH2ClientGoAway(t *testing.T) {
	release := make(chan struct{})
	inFlight := make(chan struct{}, 16)
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Hold") != "" {
			inFlight <- struct{}{}
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})
	c := p.client(t)
	const held, after = 4, 40
	var wg sync.WaitGroup
	errs := make(chan error, held+2*after)
	send := func(path string, hold bool) {
		req := get(path)
		if hold {
			req.Header.Set("X-Hold", "1")
		}
		var resp fasthttp.Response
		var s Body
		if err := c.do(req, &resp, 10*time.Second, &s); err != nil {
			errs <- fmt.Errorf("%s: %w", path, err)
			return
		}
		if b := readAll(t, &resp, &s); string(b) != path {
			errs <- fmt.Errorf("%s: body %q", path, b)
		}
	}
	for i := range held {
		wg.Go(func() { send("/held"+strconv.Itoa(i), true) })
	}
	for range held {
		<-inFlight
	}
	c.tr.mu.Lock()
	firstConn := c.tr.conns[0]
	c.tr.mu.Unlock()
	p.mu.Lock()
	first := p.conns[0]
	p.mu.Unlock()
	shut := make(chan error, 1)
	go func() { shut <- first.Shutdown(t.Context()) }()
	// Sent as the GOAWAY comes: on the old connection or a new one.
	for i := range after {
		wg.Go(func() { send("/after"+strconv.Itoa(i), false) })
	}
	// Sent once the client has the GOAWAY: on a new connection.
	for gone := false; !gone; time.Sleep(time.Millisecond) {
		c.tr.mu.Lock()
		gone = len(c.tr.conns) == 0 || c.tr.conns[0] != firstConn
		c.tr.mu.Unlock()
	}
	for i := range after {
		wg.Go(func() { send("/late"+strconv.Itoa(i), false) })
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if n := p.accepts.Load(); n < 2 {
		t.Errorf("%d connections: nothing went to a new one", n)
	}
}

// rawPeer is an HTTP/2 peer driven frame by frame with x/net's Framer,
// for behaviour no server shows on demand.
type rawPeer struct {
	conn net.Conn
	fr   *http2.Framer
}

// listenRaw accepts connections and hands each, after the preface and the
// SETTINGS exchange, to serve.
func listenRaw(t *testing.T, settings []http2.Setting, serve func(*rawPeer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
					return
				}
				p := &rawPeer{conn: c, fr: http2.NewFramer(c, bufio.NewReader(c))}
				p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				if p.fr.WriteSettings(settings...) != nil {
					return
				}
				serve(p)
			})
		}
	}()
	return ln.Addr().String()
}

// readHeaders reads frames, answering SETTINGS, until a request's
// HEADERS, whose stream it returns.
func (p *rawPeer) readHeaders() (uint32, error) {
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return 0, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				p.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			return f.StreamID, nil
		}
	}
}

func (p *rawPeer) respond(id uint32, body string) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true})
	p.fr.WriteData(id, true, []byte(body))
}

// TestH2ClientGoAwayUnsent has the peer take two requests on its
// connection and answer GOAWAY naming the first as the last it
// processed: the first is answered there, the second is sent again on a
// new connection.
func TestH2ClientGoAwayUnsent(t *testing.T) {
	var conns atomic.Int32
	addr := listenRaw(t, nil, func(p *rawPeer) {
		if conns.Add(1) == 1 {
			a, err := p.readHeaders()
			if err != nil {
				return
			}
			b, err := p.readHeaders()
			if err != nil {
				return
			}
			p.fr.WriteGoAway(a, http2.ErrCodeNo, nil)
			p.respond(a, "first:"+strconv.Itoa(int(b)))
			io.Copy(io.Discard, p.conn)
			return
		}
		for {
			id, err := p.readHeaders()
			if err != nil {
				return
			}
			p.respond(id, "again")
		}
	})
	c := newH2Client(poolKey{addr: addr, connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
	defer c.tr.CloseIdleConnections()
	var wg sync.WaitGroup
	bodies := make([]string, 2)
	started := make(chan struct{})
	for i := range 2 {
		wg.Go(func() {
			if i == 1 {
				<-started
			} else {
				close(started)
			}
			var resp fasthttp.Response
			var s Body
			if err := c.do(get("/"), &resp, 10*time.Second, &s); err != nil {
				t.Error(err)
				return
			}
			bodies[i] = string(readAll(t, &resp, &s))
		})
	}
	wg.Wait()
	got := map[string]bool{}
	for _, b := range bodies {
		got[b] = true
	}
	if !got["again"] || len(got) != 2 {
		t.Errorf("bodies %q: want one answered on the first connection and one sent again", bodies)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestH2ClientPingTimeout has a peer that stops answering after the
// handshake: the connection is pinged, found dead and closed, and the
// request on it fails long before its own timeout.
func TestH2ClientPingTimeout(t *testing.T) {
	addr := listenRaw(t, nil, func(p *rawPeer) {
		if _, err := p.readHeaders(); err != nil {
			return
		}
		// Silent from now on: no answer, no PING ACK.
		io.Copy(io.Discard, p.conn)
	})
	c := newH2Client(poolKey{addr: addr, connectTimeout: 5 * time.Second, idleTimeout: time.Minute, http2: true}, nil)
	c.tr.sendPingTimeout = 50 * time.Millisecond
	c.tr.pingTimeout = 50 * time.Millisecond
	start := time.Now()
	var resp fasthttp.Response
	var s Body
	err := c.do(get("/"), &resp, time.Minute, &s)
	if !errors.Is(err, errH2PingTimeout) {
		t.Fatalf("err %v, want the ping timeout", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("found dead after %v", d)
	}
	if Classify(err) != FailureReset {
		t.Errorf("classified %v", Classify(err))
	}
	for c.conns.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
}

// TestH2ClientIdleTimeout closes a connection unused for the idle
// timeout.
func TestH2ClientIdleTimeout(t *testing.T) {
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {})
	c := newH2Client(poolKey{addr: p.addr, connectTimeout: 5 * time.Second, idleTimeout: 50 * time.Millisecond, http2: true}, nil)
	var resp fasthttp.Response
	var s Body
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	readAll(t, &resp, &s)
	for c.conns.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err != nil {
		t.Fatalf("after the idle close: %v", err)
	}
	readAll(t, &resp, &s)
	c.tr.CloseIdleConnections()
}

// abortableBody is a downstream request body that a read waits on until
// data comes or the body is aborted, as an HTTP/2 front end's is.
type abortableBody struct {
	data    chan []byte
	aborted chan struct{}
	once    sync.Once
	reads   atomic.Int32
}

func (b *abortableBody) Read(p []byte) (int, error) {
	b.reads.Add(1)
	select {
	case d := <-b.data:
		return copy(p, d), nil
	case <-b.aborted:
		return 0, errors.New("aborted")
	}
}

func (b *abortableBody) AbortBody() { b.once.Do(func() { close(b.aborted) }) }

// TestH2ClientDetachesRequestBody has the peer answer before the request
// body ends: closing the exchange aborts the read in progress and the
// body is read no more (the downstream request is reused after), and the
// stream is reset.
func TestH2ClientDetachesRequestBody(t *testing.T) {
	reset := make(chan error, 1)
	p := startH2Peer(t, false, http2.Server{}, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		io.ReadFull(r.Body, buf)
		w.Write(buf)
		w.(http.Flusher).Flush()
		_, err := io.ReadAll(r.Body)
		reset <- err
	})
	c := p.client(t)
	body := &abortableBody{data: make(chan []byte, 1), aborted: make(chan struct{})}
	body.data <- []byte("first")
	req := get("/")
	req.Header.SetMethod("POST")
	req.SetBodyStream(body, -1)
	var resp fasthttp.Response
	var s Body
	if err := c.do(req, &resp, 5*time.Second, &s); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(&s, buf); err != nil || string(buf) != "first" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	s.Close()
	select {
	case <-body.aborted:
	default:
		t.Error("closing the exchange did not abort the body's read")
	}
	n := body.reads.Load()
	body.data <- []byte("late")
	if err := <-reset; err == nil {
		t.Error("the peer read the request to its end: the stream was not reset")
	}
	// Another exchange on the connection has run its course meanwhile,
	// so the sender has had every chance to read again.
	if err := c.do(get("/"), &resp, 5*time.Second, &s); err == nil {
		s.Close()
	}
	if m := body.reads.Load(); m != n {
		t.Errorf("the body was read %d more times after the exchange", m-n)
	}
}
