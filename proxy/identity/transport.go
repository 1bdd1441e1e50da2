package identity

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// certTransport carries the agent's requests to the control plane on
// kept-alive connections, each of which presents the certificate that was
// current when it was made. A renewal starts a new set of connections for
// the new certificate; the previous set serves no new request, and its
// connections close once their requests have ended. A sidecar renews its
// registration every third of its lease and watches discovery: with a
// handshake per request, that was a TLS handshake every few seconds on
// both sides, and at the control plane one per sidecar every few seconds.
type certTransport struct {
	a   *Agent
	tls *tls.Config // without the client certificate

	mu   sync.Mutex
	svid *svid // the certificate tr's connections present; nil: none yet
	tr   *http.Transport
}

func (t *certTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.current().RoundTrip(req)
}

// CloseIdleConnections closes the connections that carry no request.
func (t *certTransport) CloseIdleConnections() {
	t.mu.Lock()
	tr := t.tr
	t.mu.Unlock()
	if tr != nil {
		tr.CloseIdleConnections()
	}
}

// current returns the transport of the current certificate, making it
// the first time the certificate is used.
func (t *certTransport) current() *http.Transport {
	s := t.a.svid.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tr != nil && t.svid == s {
		return t.tr
	}
	tc := t.tls.Clone()
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if s != nil {
			return s.cert, nil
		}
		return &tls.Certificate{}, nil
	}
	old := t.tr
	t.svid = s
	t.tr = &http.Transport{TLSClientConfig: tc,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second,
		// A replaced transport's connections that were carrying a request
		// close once idle this long: no request takes them any more.
		IdleConnTimeout: 30 * time.Second, MaxIdleConnsPerHost: 4}
	if old != nil {
		old.CloseIdleConnections()
	}
	return t.tr
}
