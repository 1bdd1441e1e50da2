package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// ErrorKind is the class of a failed request, as the report counts them.
type ErrorKind int

// The kinds of error a request can end with.
const (
	ErrRefused  ErrorKind = iota // the target refused the connection
	ErrReset                     // the connection was reset or closed before the response was whole
	ErrTimeout                   // the request, or its dial, took longer than the timeout
	ErrTLS                       // the TLS handshake failed (certificate, alert, protocol)
	ErrProtocol                  // the response could not be parsed, or the peer broke the protocol
	ErrOther                     // anything else
	numErrorKinds
)

var errorKindNames = [numErrorKinds]string{"refused", "reset", "timeout", "tls", "protocol", "other"}

// String returns the kind's name as it appears in reports.
func (k ErrorKind) String() string {
	if k < 0 || k >= numErrorKinds {
		return "unknown"
	}
	return errorKindNames[k]
}

// classify sorts err into a kind. It never returns a kind for a nil error.
func classify(err error) ErrorKind {
	var (
		certErr   *tls.CertificateVerificationError
		recErr    tls.RecordHeaderError
		alertErr  tls.AlertError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		idle      *quic.IdleTimeoutError
		hsTimeout *quic.HandshakeTimeoutError
		transport *quic.TransportError
		appErr    *quic.ApplicationError
		h2Stream  http2.StreamError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrRefused
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alertErr),
		errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid):
		return ErrTLS
	case errors.As(err, &transport):
		if transport.ErrorCode.IsCryptoError() {
			return ErrTLS
		}
		return ErrProtocol
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, fasthttp.ErrTimeout),
		errors.As(err, &idle), errors.As(err, &hsTimeout):
		return ErrTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &appErr):
		return ErrReset
	case errors.As(err, &h2Stream): // net/http's stream errors convert to x/net's
		return ErrProtocol
	case errors.As(err, &netErr) && netErr.Timeout():
		return ErrTimeout
	}
	// net/http keeps its HTTP/2 connection errors unexported: a GOAWAY
	// reads "http2: server sent GOAWAY and closed the connection; ..." or
	// "http2: Transport received GOAWAY from server ...", a connection
	// error "connection error: PROTOCOL_ERROR". A GOAWAY is matched first,
	// since its debug data is the peer's own text.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "GOAWAY"):
		return ErrReset
	case strings.Contains(msg, "connection error:"):
		return ErrProtocol
	case strings.Contains(msg, "tls:"), strings.Contains(msg, "x509:"):
		return ErrTLS
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"),
		strings.Contains(msg, "server closed"), strings.Contains(msg, "connection lost"):
		return ErrReset
	case strings.Contains(msg, "timeout"), strings.Contains(msg, "deadline exceeded"):
		return ErrTimeout
	case strings.Contains(msg, "malformed"), strings.Contains(msg, "cannot parse"), strings.Contains(msg, "unexpected"):
		return ErrProtocol
	}
	return ErrOther
}
