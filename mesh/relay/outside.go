package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy"
)

// Outside is what an Outbound does with an intercepted connection bound
// for a host outside the mesh that does not speak HTTP (an HTTP one goes
// to the proxy's outbound listener, whose outside virtual host answers it
// by the same policy).
type Outside int32

const (
	// OutsideRefuse closes it (outbound_policy: registry_only), with a
	// flow record whose close_reason is outside_mesh.
	OutsideRefuse Outside = iota
	// OutsidePass relays its bytes, unchanged and unencrypted, to its
	// original destination (outbound_policy: allow_any), as Istio's
	// PassthroughCluster does.
	OutsidePass
)

// DefaultDetectTimeout is how long an intercepted connection bound
// outside the mesh may stay silent before it is taken for a protocol in
// which the server speaks first (SMTP, MySQL, SSH), which is not HTTP.
const DefaultDetectTimeout = 100 * time.Millisecond

// sniffLen is enough of a request line to tell HTTP: the longest method
// the sniffer accepts, a space and "https://".
const sniffLen = maxMethod + 1 + len("https://")

const maxMethod = 20

// SetOutside sets what becomes of connections outside the mesh that do
// not speak HTTP, from the next one on.
func (o *Outbound) SetOutside(v Outside) { o.outside.Store(int32(v)) }

// SetEntries sets the service entries of the sidecar's service, from the
// next connection on: under OutsideRefuse, an intercepted connection bound
// for an address one of them admits, or a TLS connection whose server
// name (SNI) one admits, on its port, is relayed to its original
// destination all the same.
func (o *Outbound) SetEntries(entries []policy.ServiceEntry) {
	if len(entries) == 0 {
		o.entries.Store(nil)
		return
	}
	o.entries.Store(&entries)
}

// entryAddress reports whether a service entry admits connections to
// dst by its address: they are relayed whatever they speak, HTTP too.
func (o *Outbound) entryAddress(dst netip.AddrPort) bool {
	entries := o.entries.Load()
	return entries != nil && Outside(o.outside.Load()) != OutsidePass && policy.AnyAdmitsAddr(*entries, dst.Addr(), int(dst.Port()))
}

// admitted reads the server name of a TLS connection c bound for dst,
// whose first bytes are first, when a service entry may let it out. It
// reports whether one does, the bytes read (first and more), and the name.
func (o *Outbound) admitted(c net.Conn, dst netip.AddrPort, first []byte) (bool, []byte, string) {
	entries := o.entries.Load()
	if entries == nil {
		return false, first, ""
	}
	if o.entryAddress(dst) {
		return true, first, ""
	}
	if len(first) == 0 || first[0] != tlsHandshake {
		return false, first, ""
	}
	name, read, err := serverName(c, first, max(o.o.DetectTimeout, time.Second))
	if err != nil || name == "" {
		return false, read, name
	}
	return policy.AnyAdmits(*entries, name, int(dst.Port())), read, name
}

// sniff reads the first bytes c sends, for at most timeout, and tells
// whether they begin an HTTP/1.x request line or the HTTP/2 preface: a
// method token, a space, then a request target as HTTP's forms begin
// ('/', '*', "http://", "https://", or any authority after CONNECT). A
// connection silent until timeout, or closed after sending something that
// is not HTTP, is not HTTP. It returns the bytes read, which the
// connection's next reader must see first; err is set when c ended
// before sending a byte.
func sniff(c net.Conn, timeout time.Duration) (first []byte, isHTTP bool, err error) {
	if timeout <= 0 {
		timeout = DefaultDetectTimeout
	}
	buf := make([]byte, 0, sniffLen)
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		n, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch looksHTTP(buf) {
		case verdictHTTP:
			return buf, true, nil
		case verdictOther:
			return buf, false, nil
		}
		if len(buf) == cap(buf) {
			return buf, false, nil
		}
		if rerr != nil {
			if len(buf) == 0 && !errors.Is(rerr, os.ErrDeadlineExceeded) {
				return nil, false, rerr
			}
			// Silent (a server that speaks first), or ended mid-line.
			return buf, false, nil
		}
	}
}

type verdict int

const (
	verdictMore verdict = iota
	verdictHTTP
	verdictOther
)

// looksHTTP tells whether b begins an HTTP request line, is not one, or
// is too short to tell.
func looksHTTP(b []byte) verdict {
	i := 0
	for ; i < len(b) && i <= maxMethod; i++ {
		ch := b[i]
		if ch == ' ' {
			break
		}
		if (ch < 'A' || ch > 'Z') && ch != '-' && ch != '_' {
			return verdictOther
		}
	}
	switch {
	case i == len(b):
		return verdictMore
	case i == 0 || i > maxMethod:
		return verdictOther
	}
	method, target := b[:i], b[i+1:]
	if len(target) == 0 {
		return verdictMore
	}
	if bytes.Equal(method, []byte("CONNECT")) {
		return verdictHTTP
	}
	switch target[0] {
	case '/', '*':
		return verdictHTTP
	case 'h', 'H':
		for _, scheme := range []string{"http://", "https://"} {
			n := min(len(target), len(scheme))
			if bytes.EqualFold(target[:n], []byte(scheme[:n])) {
				if n == len(scheme) {
					return verdictHTTP
				}
				return verdictMore
			}
		}
	}
	return verdictOther
}

// passthrough relays down, bound for dst outside the mesh, to dst itself
// in plain TCP, through the outbound's network filters when it has any
// (their cluster is "passthrough").
func (o *Outbound) passthrough(down net.Conn, dst netip.AddrPort) {
	f := flow{listener: "outbound", start: time.Now(), source: addrString(down.RemoteAddr()), destination: dst.String(),
		sourceID: o.identity()}
	defer func() { f.emit(o.tel.Load()) }()
	st := o.met.stats(listenerOutbound, clusterPass)
	defer st.open()()
	var up net.Conn
	var key netip.AddrPort
	defer func() {
		if key.IsValid() {
			o.dials.Delete(key)
		}
		if up != nil {
			o.cs.Done(up)
		}
	}()
	connect := func(ctx context.Context) error {
		c, err := (&net.Dialer{Timeout: o.o.ConnectTimeout}).DialContext(ctx, "tcp", dst.String())
		if err != nil {
			st.connectFailed()
			o.log.Info("a host outside the mesh could not be reached", zapAddr("destination", dst), zap.Error(err))
			return err
		}
		// Remember the connection's address: should the interception send
		// it back (the sidecar's user not excluded), it is refused, not
		// looped.
		if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
			key = la.AddrPort()
			o.dials.Store(key, struct{}{})
		}
		if !o.cs.Add(c) {
			_ = c.Close()
			return net.ErrClosed
		}
		up = c
		return nil
	}
	if fl := o.filters.Load(); fl.on() {
		f.n, f.reason = fl.serve(down, proxy.OpaqueOptions{Listener: listenerOutbound, Cluster: clusterPass, Idle: o.o.IdleTimeout,
			Dial: func(ctx context.Context) (net.Conn, string, error) {
				if err := connect(ctx); err != nil {
					return nil, "", err
				}
				return up, dst.String(), nil
			}}, st)
		return
	}
	if err := connect(context.Background()); err != nil {
		f.reason = reasonUpstream
		_ = down.Close()
		return
	}
	f.n = st.counts()
	f.reason = pipe(down, up, f.n, o.o.IdleTimeout)
}

// ownDial tells whether c is one of the passthrough's own connections,
// sent back by an interception that does not exclude the sidecar.
func (o *Outbound) ownDial(c net.Conn) bool {
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return false
	}
	ap := ra.AddrPort()
	_, own := o.dials.Load(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	return own
}

// identity is the sidecar's SPIFFE ID, or "".
func (o *Outbound) identity() string {
	if cert, err := o.o.Mesh.Certificate(); err == nil && cert.Leaf != nil && len(cert.Leaf.URIs) > 0 {
		return cert.Leaf.URIs[0].String()
	}
	return ""
}

func zapAddr(key string, a netip.AddrPort) zap.Field { return zap.String(key, a.String()) }
