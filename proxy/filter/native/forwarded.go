package native

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/internal/h1"
)

// Forwarded sets the forwarding headers of one listener: X-Forwarded-For
// (the client's address, after the ones a trusted proxy sent),
// X-Forwarded-Proto and X-Forwarded-Host. From a client that is not a
// trusted proxy it first removes every X-Forwarded-* and Forwarded header
// the client sent. It always removes a client's X-Forwarded-Client-Cert
// and, when the listener says so, sets it from the verified client
// certificate.
type Forwarded struct {
	headersOnly
	trusted []netip.Prefix
	setXFCC bool
}

var _ filter.HeadersOnly = (*Forwarded)(nil)

// NewForwarded returns the forwarding filter of a listener. Its trusted
// proxies were validated with the configuration; a bad one is still an
// error that names its field.
func NewForwarded(l *config.Listener, path string) (*Forwarded, error) {
	f := &Forwarded{setXFCC: l.TLS != nil && l.TLS.ForwardClientCert == config.ForwardClientCertSanitizeSet}
	for i, p := range l.TrustedProxies {
		pfx, err := config.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%s.trusted_proxies[%d]: %w", path, i, err)
		}
		f.trusted = append(f.trusted, pfx)
	}
	return f, nil
}

// Same reports whether f does what NewForwarded(l) would: a reload reuses
// it then, and with it the routes that hold it.
func (f *Forwarded) Same(l *config.Listener) bool {
	if f.setXFCC != (l.TLS != nil && l.TLS.ForwardClientCert == config.ForwardClientCertSanitizeSet) ||
		len(f.trusted) != len(l.TrustedProxies) {
		return false
	}
	for i, p := range l.TrustedProxies {
		pfx, err := config.ParsePrefix(p)
		if err != nil || pfx != f.trusted[i] {
			return false
		}
	}
	return true
}

func (f *Forwarded) Name() string { return config.NativeForwarded }

// NewStream returns the filter itself: it keeps no state per request.
func (f *Forwarded) NewStream(*filter.Exchange) (filter.Stream, error) { return f, nil }

// Headers that forwarding rewrites or removes, as bits.
const (
	hasXFF = 1 << iota
	hasXFProto
	hasXFHost
	hasXFPort
	hasForwarded
	hasXFCC
)

// Names and values of the headers forwarding sets, in fasthttp's canonical
// form.
var (
	keyXFF     = []byte("X-Forwarded-For")
	keyXFProto = []byte("X-Forwarded-Proto")
	keyXFHost  = []byte("X-Forwarded-Host")
	keyXFCC    = []byte("X-Forwarded-Client-Cert")
	valHTTP    = []byte("http")
	valHTTPS   = []byte("https")
)

// connIdentity is what a TLS connection tells about its client
// certificate, computed once per connection.
type connIdentity interface {
	XFCC() []byte
}

func (f *Forwarded) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	h := &x.Ctx.Request.Header
	remote := x.Conn.Remote.Addr().Unmap()
	trusted := slices.ContainsFunc(f.trusted, func(p netip.Prefix) bool { return p.Contains(remote) })
	has, xff := scanForwarded(h)
	var buf [64]byte
	b := buf[:0]
	if trusted {
		if has&hasXFF != 0 {
			b = append(b, xff...)
			b = append(b, ", "...)
		}
	} else {
		// All of them: SetCanonical replaces only the first.
		del(h, has, hasXFF, "X-Forwarded-For")
		del(h, has, hasXFProto, "X-Forwarded-Proto")
		del(h, has, hasXFHost, "X-Forwarded-Host")
		del(h, has, hasXFPort, "X-Forwarded-Port")
		del(h, has, hasForwarded, "Forwarded")
	}
	// SetCanonical, with names already in fasthttp's canonical form,
	// spares each header the copy and normalisation of its name.
	b = remote.AppendTo(b)
	h.SetCanonical(keyXFF, b)
	if !trusted || has&hasXFProto == 0 {
		if x.Ctx.IsTLS() {
			h.SetCanonical(keyXFProto, valHTTPS)
		} else {
			h.SetCanonical(keyXFProto, valHTTP)
		}
	}
	if !trusted || has&hasXFHost == 0 {
		h.SetCanonical(keyXFHost, h.Host())
	}
	del(h, has, hasXFCC, "X-Forwarded-Client-Cert")
	if f.setXFCC {
		if ci, ok := h1.Unwrap(x.Ctx.Conn()).(connIdentity); ok {
			if v := ci.XFCC(); v != nil {
				h.SetCanonical(keyXFCC, v)
			}
		}
	}
	return filter.Continue
}

// scanForwarded finds, in one pass, which of the headers that forwarding
// rewrites or removes a request has (most have none, and a Del or Peek
// per name would scan every header each time), and its first
// X-Forwarded-For, valid until the headers change.
func scanForwarded(h *fasthttp.RequestHeader) (has uint8, xff []byte) {
	for k, v := range h.All() {
		if len(k) < 9 {
			continue
		}
		switch k[0] | 0x20 {
		case 'x', 'f':
		default:
			continue
		}
		switch {
		case bytes.EqualFold(k, keyXFF):
			if has&hasXFF == 0 {
				xff = v
			}
			has |= hasXFF
		case bytes.EqualFold(k, keyXFProto):
			has |= hasXFProto
		case bytes.EqualFold(k, keyXFHost):
			has |= hasXFHost
		case bytes.EqualFold(k, []byte("X-Forwarded-Port")):
			has |= hasXFPort
		case bytes.EqualFold(k, []byte("Forwarded")):
			has |= hasForwarded
		case bytes.EqualFold(k, keyXFCC):
			has |= hasXFCC
		}
	}
	return has, xff
}

// del removes a header the request was found to have.
func del(h *fasthttp.RequestHeader, has, bit uint8, name string) {
	if has&bit != 0 {
		h.Del(name)
	}
}
