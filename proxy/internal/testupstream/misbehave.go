package testupstream

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Status answers every request with status and a short body.
func Status(code int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code)+"\n")
	})
}

// SlowStatus answers every request with status after d.
func SlowStatus(code int, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		Status(code).ServeHTTP(w, r)
	})
}

// Switch is a handler that is healthy (answering as its Healthy handler)
// or not (answering 503) until told otherwise: a service that fails and
// recovers.
type Switch struct {
	Healthy http.Handler
	failing atomic.Bool
}

// NewSwitch returns a healthy Switch over Echo(name).
func NewSwitch(name string) *Switch { return &Switch{Healthy: Echo(name)} }

// Fail makes the switch answer 503 until Recover.
func (s *Switch) Fail() { s.failing.Store(true) }

// Recover makes the switch answer as its Healthy handler again.
func (s *Switch) Recover() { s.failing.Store(false) }

// ServeHTTP implements http.Handler.
func (s *Switch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.failing.Load() {
		Status(http.StatusServiceUnavailable).ServeHTTP(w, r)
		return
	}
	s.Healthy.ServeHTTP(w, r)
}

// readHead reads one request head from br.
func readHead(br *bufio.Reader) bool {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			return true
		}
	}
}

// Reset is a raw server that reads one request head and resets the
// connection (an RST, not a FIN).
func Reset(c net.Conn) {
	if !readHead(bufio.NewReader(c)) {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// CloseMidBody is a raw server that answers one request with a body
// announced as 1000 bytes, sends 10 and closes the connection.
func CloseMidBody(c net.Conn) {
	if !readHead(bufio.NewReader(c)) {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789")
	_ = c.Close()
}

// Silent is a raw server that accepts a connection and never answers: it
// reads until the client goes away.
func Silent(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
}
