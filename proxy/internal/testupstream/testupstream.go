// Package testupstream runs real upstream servers on loopback for the
// proxy's tests: an echo that says which instance answered and what it
// received, and servers that misbehave (hang, answer late, reset, speak
// raw bytes). Every server listens on 127.0.0.1 on a random port, counts the
// connections it accepts and the requests it serves, and is closed when
// the test that started it ends.
package testupstream

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server is one running upstream.
type Server struct {
	// Name is what the echo handler reports as the instance.
	Name string

	ln       net.Listener
	srv      *http.Server
	accepted atomic.Int64
	requests atomic.Int64
	closeMu  sync.Once
	rawWG    sync.WaitGroup
	rawDone  chan struct{}
}

// Start serves h on a random loopback port until the test ends. A nil h
// serves Echo(name).
func Start(tb testing.TB, name string, h http.Handler) *Server {
	tb.Helper()
	if h == nil {
		h = Echo(name)
	}
	s := &Server{Name: name}
	s.ln = s.listen(tb)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.requests.Add(1)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = s.srv.Serve(s.ln) }()
	tb.Cleanup(s.Close)
	return s
}

// StartRaw calls serve with every accepted connection, on its own
// goroutine, for servers that misbehave below HTTP. serve owns the
// connection and must return when it is closed.
func StartRaw(tb testing.TB, name string, serve func(c net.Conn)) *Server {
	tb.Helper()
	s := &Server{Name: name, rawDone: make(chan struct{})}
	s.ln = s.listen(tb)
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				mu.Lock()
				for c := range conns {
					_ = c.Close()
				}
				mu.Unlock()
				close(s.rawDone)
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			s.rawWG.Add(1)
			go func() {
				defer s.rawWG.Done()
				defer func() {
					_ = c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				s.requests.Add(1)
				serve(c)
			}()
		}
	}()
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("upstream %s: %v", s.Name, err)
	}
	return &countingListener{Listener: ln, n: &s.accepted}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is http://Addr.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Accepted is the number of connections the server has accepted.
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Requests is the number of requests (for a raw server: connections) the
// server has served or is serving.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops the server and closes its connections. Handlers blocked on
// their request's context return.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		if s.srv != nil {
			_ = s.srv.Close()
			return
		}
		_ = s.ln.Close()
		<-s.rawDone
		s.rawWG.Wait()
	})
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// Echoed is what Echo answers: who answered and what it received.
type Echoed struct {
	Instance string `json:"instance"`
	Method   string `json:"method"`
	// URI is the request target as received, path and query.
	URI   string `json:"uri"`
	Path  string `json:"path"`
	Query string `json:"query"`
	Host  string `json:"host"`
	Proto string `json:"proto"`
	// Header is the request's header as received, minus Host.
	Header           http.Header `json:"header"`
	TransferEncoding []string    `json:"transfer_encoding"`
	ContentLength    int64       `json:"content_length"`
	// BodyBytes is the length of the body read.
	BodyBytes int64 `json:"body_bytes"`
	// Body is the body when it is at most 4 KiB.
	Body string `json:"body"`
	// RemoteAddr is the peer of the upstream connection.
	RemoteAddr string `json:"remote_addr"`
}

// Echo answers every request with a JSON Echoed, status 200. Query
// parameters change the answer:
//
//	delay=DURATION   wait before answering (or until the client goes away)
//	status=N         answer with status N (the body is kept unless N forbids one)
//	header=NAME:VAL  add a response header (repeatable)
func Echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, body := readBody(r.Body)
		if d, err := time.ParseDuration(q.Get("delay")); err == nil && d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		e := Echoed{
			Instance: name, Method: r.Method, URI: r.RequestURI, Path: r.URL.Path,
			Query: r.URL.RawQuery, Host: r.Host, Proto: r.Proto, Header: r.Header,
			TransferEncoding: r.TransferEncoding, ContentLength: r.ContentLength,
			BodyBytes: n, Body: body, RemoteAddr: r.RemoteAddr,
		}
		for _, h := range q["header"] {
			if k, v, ok := strings.Cut(h, ":"); ok {
				w.Header().Add(k, v)
			}
		}
		status := http.StatusOK
		if s, err := strconv.Atoi(q.Get("status")); err == nil && s >= 200 && s <= 599 {
			status = s
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Instance", name)
		w.WriteHeader(status)
		if status == http.StatusNoContent || status == http.StatusNotModified || r.Method == http.MethodHead {
			return
		}
		_ = json.NewEncoder(w).Encode(e)
	})
}

func readBody(r io.Reader) (int64, string) {
	var head [4 << 10]byte
	n, err := io.ReadFull(r, head[:])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return int64(n), string(head[:n])
	}
	rest, _ := io.Copy(io.Discard, r)
	return int64(n) + rest, ""
}

// Decode parses an Echo answer.
func Decode(tb testing.TB, body []byte) Echoed {
	tb.Helper()
	var e Echoed
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("not an echo answer (%v): %.300q", err, body)
	}
	return e
}

// Hang reads the request and never answers: it returns only when the
// client goes away or the server closes.
func Hang() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
}

// ClosedAddr returns a loopback address on which nothing listens: a
// connection to it is refused.
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// ResetAfterHead is a raw server that reads one request head and closes the
// connection without a byte of answer.
func ResetAfterHead(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return
		}
	}
}

// OneShot is a raw server that answers one request per connection and
// then closes it without saying so (no Connection: close), as a server
// whose keep-alive timeout just expired does. The answer is 200 with the
// number of body bytes received; the request's body must have a
// Content-Length or be chunked.
func OneShot(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	n, _ := io.Copy(io.Discard, req.Body)
	body := strconv.FormatInt(n, 10)
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
}
