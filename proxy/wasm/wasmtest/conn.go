package wasmtest

import (
	"cmp"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// Conn is one connection through the plugin as a network (L4) filter, as
// a TCP listener (tcp_proxy) runs it, with no socket: a test hands it the
// client's bytes and the upstream's, and reads what the filter passes on.
// Bytes the filter holds gather, as the proxy's do, and are handed to it
// again with the next ones.
//
//	c, err := h.Connect(wasmtest.ConnOptions{})
//	up, err := c.Downstream([]byte("PING\r\n"), false) // what goes upstream
//	down, err := c.Upstream([]byte("+PONG\r\n"), false) // what reaches the client
//	c.Close()                                           // the client goes away
type Conn struct {
	h   *Harness
	st  filter.NetworkStream
	ctl *connControl
	// mu guards down and up, which the filter may reach from a timer
	// while it holds them (filter.NetConn Data).
	mu   sync.Mutex
	down filter.Body
	up   filter.Body
	done bool
}

// connControl is what the filter may do to the connection, from any
// goroutine: filter.NetControl.
type connControl struct {
	resumed chan struct{}
	mu      sync.Mutex
	closed  bool
}

func (cc *connControl) ResumeDownstream() {
	select {
	case cc.resumed <- struct{}{}:
	default:
	}
}

func (cc *connControl) Close() {
	cc.mu.Lock()
	cc.closed = true
	cc.mu.Unlock()
	cc.ResumeDownstream() // wakes a wait for a resume
}

func (cc *connControl) isClosed() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.closed
}

// ConnOptions describe a connection.
type ConnOptions struct {
	// Remote is the client's address; "" means 10.0.0.7:40000.
	Remote string
	// Upstream is the endpoint the connection reaches; "" means
	// 192.0.2.9:6379.
	Upstream string
	// Cluster and Listener name the connection's cluster and listener;
	// "" means "backend" and "main".
	Cluster, Listener string
	// TLS, when set, is the client connection's TLS.
	TLS *filter.TLSInfo
}

// ErrClosed is returned once the filter has closed the connection.
var ErrClosed = errors.New("the filter closed the connection")

// Connect opens a connection through the plugin and calls its
// proxy_on_new_connection. A filter that holds the connection is waited
// for (PauseTimeout): ErrNotResumed when it never lets it go, ErrClosed
// when it closes it.
func (h *Harness) Connect(o ConnOptions) (*Conn, error) {
	np, ok := any(h.shared.set).(filter.NetworkPlugins)
	if !ok {
		return nil, errors.New("wasmtest: the host has no network filters")
	}
	f, err := np.NetworkFactory(config.FilterRef{Plugin: h.shared.name, Config: h.cfg}, "main")
	if err != nil {
		return nil, err
	}
	remote, err := netip.ParseAddrPort(cmp.Or(o.Remote, "10.0.0.7:40000"))
	if err != nil {
		return nil, err
	}
	x := filter.NewExchange()
	x.Conn = &filter.ConnInfo{ID: 1, Remote: remote, Local: netip.MustParseAddrPort("192.0.2.1:8443"), TLS: o.TLS}
	x.Listener, x.Cluster = cmp.Or(o.Listener, "main"), cmp.Or(o.Cluster, "backend")
	x.UpstreamAddr = cmp.Or(o.Upstream, "192.0.2.9:6379")
	x.Node = h.shared.opts.Node
	x.Start = time.Now()
	c := &Conn{h: h, ctl: &connControl{resumed: make(chan struct{}, 1)}}
	st, err := f.NewConnection(&filter.NetConn{X: x, Control: c.ctl, Data: &c.mu})
	if err != nil {
		return nil, err
	}
	c.st = st
	if st.OnNewConnection() == filter.Continue || c.waitResume() {
		if c.ctl.isClosed() {
			c.finish(filter.PeerLocal)
			return c, ErrClosed
		}
		return c, nil
	}
	if c.ctl.isClosed() {
		c.finish(filter.PeerLocal)
		return c, ErrClosed
	}
	return c, ErrNotResumed
}

// waitResume waits PauseTimeout for the filter to resume the connection
// or close it.
func (c *Conn) waitResume() bool {
	pause := c.h.shared.opts.PauseTimeout
	if pause == 0 {
		pause = 5 * time.Second
	}
	select {
	case <-c.ctl.resumed:
		return true
	case <-time.After(pause):
		return false
	}
}

// Downstream hands the filter the client's bytes b (end: the client's
// last ones). It returns what goes upstream: the bytes held so far and b,
// as the filter let them through, or nil while the filter holds them.
// ErrClosed once the filter has closed the connection.
func (c *Conn) Downstream(b []byte, end bool) ([]byte, error) {
	return c.data(&c.down, b, end, false)
}

// Upstream is Downstream for the upstream's bytes, on their way to the
// client. Held upstream bytes go on only with more, as in the proxy.
func (c *Conn) Upstream(b []byte, end bool) ([]byte, error) {
	return c.data(&c.up, b, end, true)
}

// Resume waits, as the proxy does, for the filter to let held client
// bytes go on (from an HTTP call's answer, say), and returns them; nil
// when PauseTimeout passes first.
func (c *Conn) Resume() ([]byte, error) {
	if c.done {
		return nil, ErrClosed
	}
	if !c.waitResume() {
		return nil, nil
	}
	if c.ctl.isClosed() {
		c.finish(filter.PeerLocal)
		return nil, ErrClosed
	}
	return c.take(&c.down), nil
}

func (c *Conn) data(buf *filter.Body, b []byte, end, up bool) ([]byte, error) {
	if c.done {
		return nil, ErrClosed
	}
	c.mu.Lock()
	buf.B = append(buf.B, b...)
	c.mu.Unlock()
	var st filter.Status
	if up {
		st = c.st.OnUpstreamData(buf, end)
	} else {
		st = c.st.OnDownstreamData(buf, end)
	}
	if c.ctl.isClosed() {
		c.finish(filter.PeerLocal)
		return nil, ErrClosed
	}
	if st != filter.Continue {
		return nil, nil
	}
	return c.take(buf), nil
}

// take returns the bytes of buf, which go on, and empties it.
func (c *Conn) take(buf *filter.Body) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]byte(nil), buf.B...)
	buf.B = buf.B[:0]
	return out
}

// Closed reports whether the filter has closed the connection.
func (c *Conn) Closed() bool { return c.ctl.isClosed() }

// Close ends the connection as a client that goes away: the filter hears
// that the remote end closed it, then its log and delete callbacks run.
// After the filter closed it, it does nothing.
func (c *Conn) Close() { c.finish(filter.PeerRemote) }

// finish tells the filter the connection closed, once.
func (c *Conn) finish(peer filter.PeerType) {
	if c.done {
		return
	}
	c.done = true
	c.st.OnDownstreamClose(peer)
	c.st.Done()
}
