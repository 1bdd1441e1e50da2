package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// tlsHandshake is the first byte of a TLS connection: a handshake record.
const tlsHandshake = 0x16

// errSNIRead ends the handshake serverName runs once it has the
// ClientHello: nothing is ever sent back.
var errSNIRead = errors.New("relay: ClientHello read")

// serverName reads the TLS ClientHello that c, whose first bytes are
// first, sends, within timeout, and returns the server name it asks for
// ("" when it names none or is no ClientHello) and every byte read, which
// the connection's next reader must see first. crypto/tls parses the
// ClientHello; the handshake stops there and writes nothing.
func serverName(c net.Conn, first []byte, timeout time.Duration) (string, []byte, error) {
	rec := &recording{Conn: c, pending: first}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	var name string
	err := tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		name = h.ServerName
		return nil, errSNIRead
	}}).Handshake()
	if name == "" && !errors.Is(err, errSNIRead) {
		return "", rec.read, err
	}
	return name, rec.read, nil
}

// recording reads pending first, then the connection, keeping what it
// read; it writes nothing (a failed handshake's alert stays unsent).
type recording struct {
	net.Conn
	pending, read []byte
}

func (r *recording) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		r.read = append(r.read, p[:n]...)
		return n, nil
	}
	n, err := r.Conn.Read(p)
	r.read = append(r.read, p[:n]...)
	return n, err
}

func (r *recording) Write(p []byte) (int, error) { return len(p), nil }
