package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/wasmgate/wasmgate/config"
)

// syslogWriter sends RFC 5424 messages: one per datagram over UDP, and
// octet-counted (RFC 6587 section 3.4.1, as RFC 5425 has it for TLS) over
// TCP and TLS. It connects on the first write and again after reset.
type syslogWriter struct {
	network  string // "udp", "tcp" or "tls"
	addr     string
	tls      *tls.Config
	facility int
	app      string
	host     string
	procID   string

	conn  net.Conn
	bw    *bufio.Writer
	frame []byte
}

var _ writer = (*syslogWriter)(nil)

// maxUDPMessage bounds a datagram's message; a longer one is cut.
const maxUDPMessage = 65000

func newSyslogWriter(c *config.SyslogSink, hostname string) (*syslogWriter, error) {
	w := &syslogWriter{
		network: c.Network, addr: c.Address, facility: config.SyslogFacilities["local0"],
		app: c.AppName, host: hostname, procID: strconv.Itoa(os.Getpid()),
	}
	if c.Facility != "" {
		w.facility = config.SyslogFacilities[c.Facility]
	}
	if w.app == "" {
		w.app = "wasmgate"
	}
	if w.host == "" {
		w.host = "-"
	}
	if c.Network == "tls" {
		tc, err := clientTLS(c.TLS, c.Address)
		if err != nil {
			return nil, err
		}
		w.tls = tc
	}
	return w, nil
}

// clientTLS builds the TLS configuration of a connection to addr.
func clientTLS(c *config.ClientTLS, addr string) (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(addr)
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c == nil {
		return tc, nil
	}
	if c.ServerName != "" {
		tc.ServerName = c.ServerName
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// severity is the syslog severity of a record: errors 3, warnings 4
// (a 5xx answer, a denial), the rest informational 6.
func severity(r *Record) uint8 {
	switch r.Kind {
	case KindAccess:
		if r.Access.Status >= 500 {
			return 4
		}
	case KindDecision:
		if r.Decision.Verdict == Deny {
			return 4
		}
	case KindEvent:
		switch r.Event.Severity {
		case Warning:
			return 4
		case Error:
			return 3
		}
	}
	return 6
}

// message builds one RFC 5424 message whose MSG is line.
func (w *syslogWriter) message(r *Record, line []byte) (string, error) {
	if !utf8.Valid(line) {
		line = bytes.ToValidUTF8(line, []byte("\uFFFD"))
	}
	m := &rfc5424.SyslogMessage{}
	m.SetPriority(uint8(w.facility*8) + severity(r))
	m.SetVersion(1)
	m.SetTimestamp(r.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	m.SetHostname(w.host)
	m.SetAppname(w.app)
	m.SetProcID(w.procID)
	m.SetMsgID(r.Kind.String())
	m.SetMessage(string(line))
	return m.String()
}

func (w *syslogWriter) connect(ctx context.Context) error {
	d := &net.Dialer{}
	var err error
	switch w.network {
	case "tls":
		td := &tls.Dialer{NetDialer: d, Config: w.tls}
		w.conn, err = td.DialContext(ctx, "tcp", w.addr)
	default:
		w.conn, err = d.DialContext(ctx, w.network, w.addr)
	}
	if err != nil {
		return fmt.Errorf("connecting to syslog %s %s: %w", w.network, w.addr, err)
	}
	if w.bw == nil {
		w.bw = bufio.NewWriterSize(w.conn, 64<<10)
	} else {
		w.bw.Reset(w.conn)
	}
	return nil
}

func (w *syslogWriter) write(ctx context.Context, r *Record, line []byte) error {
	msg, err := w.message(r, line)
	if err != nil {
		// A record the format cannot carry is lost, not the connection.
		return nil
	}
	if w.conn == nil {
		if err := w.connect(ctx); err != nil {
			return err
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = w.conn.SetWriteDeadline(dl)
	}
	if w.network == "udp" {
		if len(msg) > maxUDPMessage {
			msg = msg[:maxUDPMessage]
		}
		_, err := w.conn.Write([]byte(msg))
		return err
	}
	w.frame = appendOctetCounted(w.frame[:0], msg)
	_, err = w.bw.Write(w.frame)
	return err
}

// appendOctetCounted appends msg framed by its length: "LEN SP MSG".
func appendOctetCounted(b []byte, msg string) []byte {
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ' ')
	return append(b, msg...)
}

func (w *syslogWriter) flush(ctx context.Context) error {
	if w.conn == nil || w.network == "udp" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = w.conn.SetWriteDeadline(dl)
	}
	return w.bw.Flush()
}

func (w *syslogWriter) reset() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

// close closes the connection. Every batch was flushed, so nothing is
// left in the buffer.
func (w *syslogWriter) close() error {
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
