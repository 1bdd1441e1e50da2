package proxy

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// A listener with tcp_proxy carries opaque TCP, as Envoy's tcp_proxy
// does: each client connection gets one to an endpoint of the cluster,
// and the bytes of each direction pass through the listener's network
// filters (Wasm plugins) on their way. A filter may hold the bytes of a
// direction (they gather until it lets them go), change them, or close
// the connection.
//
// One goroutine drives a connection: it calls the filters and dials. A
// reader goroutine per side hands it what it reads, one chunk at a time,
// and a writer goroutine per side writes what it passes on, so that the
// driver never blocks on a peer: a side whose bytes wait (a filter holds
// them, or the other side reads slowly) is not read from past
// tcpBufferLimit (back-pressure), while the other direction moves on.

// DefaultTCPIdleTimeout closes a TCP listener's connection on which
// neither side sent anything for this long, as Envoy's tcp_proxy.
const DefaultTCPIdleTimeout = time.Hour

// tcpConnectAttempts is how many endpoints a connection tries before it
// gives up, when the cluster has that many.
const tcpConnectAttempts = 3

// A reader starts with tcpReadMin bytes of buffer, so that an idle or
// chatty connection costs little, and doubles it, up to tcpReadMax, each
// time a read fills it.
const (
	tcpReadMin = 4 << 10
	tcpReadMax = 32 << 10
)

// tcpBufferLimit is how many bytes of one side a connection holds, while
// a filter holds them or the other side is slow, before it stops reading
// that side, as Envoy's per-connection buffer limit.
const tcpBufferLimit = 1 << 20

// tcpListener is what a TCP listener's connections read from the
// snapshot.
type tcpListener struct {
	stats   *metrics.TCPStats
	cluster *cluster.Cluster
	name    string // the cluster's
	filters []filter.NetworkFactory
	idle    time.Duration
	// dial, when set, connects the upstream instead of the cluster
	// (ServeOpaque): the connection and its address.
	dial func(ctx context.Context) (net.Conn, string, error)
	// noLog leaves the connection out of the access log: its caller
	// records it (ServeOpaque).
	noLog bool
}

// compileTCP builds the TCP part of a listener's snapshot.
func compileTCP(t *config.TCPProxy, listener string, clusters cluster.Set, set filter.PluginSet, m *metrics.Metrics) (*tcpListener, error) {
	tl := &tcpListener{cluster: clusters[t.Cluster], name: t.Cluster, idle: t.IdleTimeout.Or(DefaultTCPIdleTimeout),
		stats: m.TCP(listener, t.Cluster)}
	if tl.cluster == nil {
		return nil, errors.New("listener " + listener + ": unknown cluster " + t.Cluster)
	}
	if len(t.Filters) == 0 {
		return tl, nil
	}
	np, ok := set.(filter.NetworkPlugins)
	if !ok {
		return nil, errors.New("listener " + listener + ": network filters need the proxy's Wasm host")
	}
	for _, ref := range t.Filters {
		f, err := np.NetworkFactory(ref, listener)
		if err != nil {
			return nil, err
		}
		tl.filters = append(tl.filters, f)
	}
	return tl, nil
}

// tcpConnIDs numbers the TCP listeners' connections (the connection.id
// property).
var tcpConnIDs atomic.Uint64

var tcpHashSeed = maphash.MakeSeed()

// serveTCP serves one connection of the TCP listener name.
func (s *Server) serveTCP(name string, c net.Conn) {
	defer c.Close()
	var tlsInfo *filter.TLSInfo
	if tc, ok := c.(connIdentity); ok {
		if tlsInfo = tc.TLSInfo(); tlsInfo == nil {
			return // the handshake failed
		}
	}
	snap := s.acquire()
	if snap == nil {
		return
	}
	ls := snap.listeners[name]
	if ls == nil || ls.tcp == nil {
		snap.release()
		return
	}
	tl := ls.tcp
	tl.stats.Connections.Inc()
	tl.stats.Active.Inc()
	defer tl.stats.Active.Dec()
	s.newTCPConn(snap, c, tl, name, tlsInfo).serve(snap)
}

// newTCPConn makes the state of connection c of listener, with snap
// acquired.
func (s *Server) newTCPConn(snap *Snapshot, c net.Conn, tl *tcpListener, listener string, tlsInfo *filter.TLSInfo) *tcpConn {
	x := filter.NewExchange()
	x.Conn = &filter.ConnInfo{ID: tcpConnIDs.Add(1), Remote: addrPort(c.RemoteAddr()), Local: addrPort(c.LocalAddr()), TLS: tlsInfo}
	x.Listener, x.Cluster = listener, tl.name
	x.Upstreams, x.Node, x.Start = snap.Clusters, snap.node, time.Now()
	return &tcpConn{
		srv: s, down: c, x: x, tl: tl, heldAt: -1,
		events: make(chan tcpEvent), resume: make(chan struct{}, 1), closed: make(chan struct{}),
		log: s.log.With(zap.String("listener", listener), zap.Uint64("connection", x.Conn.ID)),
	}
}

// serve drives the connection to its end and releases snap, once the
// filters' states are made: a connection may live for hours, and its
// filters hold their plugins themselves.
func (t *tcpConn) serve(snap *Snapshot) {
	ok := t.open()
	snap.release()
	if ok {
		t.run()
	}
	t.finish()
}

// tcpEvent is what a reader or a writer tells the driver.
type tcpEvent struct {
	side *tcpSide
	// A read: a chunk (valid until the driver answers on ack), or the
	// end of the side (err, io.EOF for a clean end).
	data []byte
	err  error
	ack  chan struct{} // the reader's, with room for one answer
	// written: the writer is done with data (nil: the half-close); err
	// is its failure.
	written bool
}

// tcpSide is one direction of a connection: the bytes read from one end
// on their way to the other.
type tcpSide struct {
	buf filter.Body
	// out has passed the filters and waits for the writer; spare is a
	// buffer the writer gave back.
	out, spare []byte
	ended      bool // the reading end's bytes ended (the filters saw it)
	endOut     bool // out is to be followed by a half-close
	writing    int  // bytes the writer holds; -1 for the half-close
	closeSent  bool // the half-close went to the writer
	wr         chan []byte
	heldAck    chan struct{} // the reader's answer, held back
	read       prometheus.Counter
	received   int64 // bytes read from the side's end
	sent       int64 // bytes written to the other end
}

// waiting is how many of the side's bytes the connection holds.
func (s *tcpSide) waiting() int { return len(s.buf.B) + len(s.out) + max(s.writing, 0) }

// waiting is s.waiting() under the lock of the filters' bytes.
func (t *tcpConn) waiting(s *tcpSide) int {
	t.dataMu.Lock()
	defer t.dataMu.Unlock()
	return s.waiting()
}

// done reports whether the side has ended and its end reached the other.
func (s *tcpSide) done() bool { return s.closeSent && s.writing == 0 }

// tcpConn is one connection of a TCP listener.
type tcpConn struct {
	srv     *Server
	down    net.Conn
	up      net.Conn // nil until connected
	x       *filter.Exchange
	tl      *tcpListener
	streams []filter.NetworkStream
	log     *zap.Logger

	events chan tcpEvent
	// dataMu guards ds.buf and us.buf against a filter that reads or
	// changes the bytes it holds from outside its callbacks (filter.NetConn
	// Data); the driver, their only other user, takes it to change them.
	dataMu sync.Mutex
	resume chan struct{} // ResumeDownstream
	closed chan struct{} // Close
	once   sync.Once

	// ds carries the client's bytes upstream, us the upstream's to the
	// client.
	ds, us tcpSide
	// heldAt is the filter that holds the connection (a paused
	// OnNewConnection) or the client's bytes, or -1.
	heldAt    int
	connected bool // on_new_connection has passed every filter
	// downPeer is who ended the client's side, as the filters hear it.
	downPeer filter.PeerType
	// why is the access log's details when the connection did not end
	// with both sides' ends (with x.Flags).
	why string
}

// fail records why the connection ends early, the first reason only.
func (t *tcpConn) fail(flag filter.Flags, why string) {
	if t.why == "" {
		t.x.Flags |= flag
		t.why = why
	}
}

var _ filter.NetControl = (*tcpConn)(nil)

// ResumeDownstream implements filter.NetControl.
func (t *tcpConn) ResumeDownstream() {
	select {
	case t.resume <- struct{}{}:
	default:
	}
}

// Close implements filter.NetControl.
func (t *tcpConn) Close() { t.once.Do(func() { close(t.closed) }) }

// open makes the connection's filter states. It reports false when one
// failed and the connection must close.
func (t *tcpConn) open() bool {
	t.ds = tcpSide{wr: make(chan []byte, 1), read: t.tl.stats.BytesDown}
	t.us = tcpSide{wr: make(chan []byte, 1), read: t.tl.stats.BytesUp}
	nc := &filter.NetConn{X: t.x, Control: t, Data: &t.dataMu}
	for _, f := range t.tl.filters {
		st, err := f.NewConnection(nc)
		if err != nil {
			if errors.Is(err, filter.ErrFailOpen) {
				continue
			}
			t.log.Warn("network filter failed; closing the connection", zap.String("filter", f.Name()), zap.Error(err))
			t.downPeer = filter.PeerLocal
			t.fail(filter.FlagFilterFailed, "filter_failed")
			return false
		}
		t.streams = append(t.streams, st)
	}
	return true
}

// run drives the connection to its end.
func (t *tcpConn) run() {
	go t.read(t.down, &t.ds)
	go t.write(t.down, &t.us)
	if !t.newConnection(0) {
		return
	}
	idle := time.NewTimer(t.tl.idle)
	defer idle.Stop()
	for !(t.ds.done() && t.us.done()) {
		select {
		case ev := <-t.events:
			if !t.event(ev) {
				return
			}
		case <-t.resume:
			if !t.proceed() {
				return
			}
		case <-t.closed:
			t.downPeer = filter.PeerLocal
			t.fail(0, "filter_closed")
			return
		case <-idle.C:
			t.downPeer = filter.PeerLocal
			t.fail(0, "idle_timeout")
			t.log.Debug("connection idle; closing")
			return
		}
		idle.Reset(t.tl.idle)
	}
}

// newConnection calls OnNewConnection from filter i on, and connects
// upstream once every filter has let it through. It reports false when
// the connection must close.
func (t *tcpConn) newConnection(i int) bool {
	for ; i < len(t.streams); i++ {
		if t.streams[i].OnNewConnection() != filter.Continue {
			if t.isClosed() {
				return false
			}
			t.heldAt = i
			return true
		}
	}
	t.heldAt = -1
	t.connected = true
	return t.connect()
}

// proceed goes on after ResumeDownstream: past the filter that held the
// connection, or the client's bytes.
func (t *tcpConn) proceed() bool {
	i := t.heldAt
	if i < 0 {
		return true
	}
	if !t.connected {
		if !t.newConnection(i + 1) {
			return false
		}
		t.dataMu.Lock()
		none := len(t.ds.buf.B) == 0
		t.dataMu.Unlock()
		if !t.connected || none && !t.ds.ended {
			return true
		}
		return t.downstream(0) // the bytes that came meanwhile
	}
	return t.downstream(i + 1)
}

// connect dials an endpoint of the cluster, another when one cannot be
// reached, and starts reading and writing the upstream.
func (t *tcpConn) connect() bool {
	if t.tl.dial != nil {
		return t.connectWith(t.tl.dial)
	}
	cl := t.tl.cluster
	key := maphash.Comparable(tcpHashSeed, t.x.Conn.Remote.Addr())
	var tried *cluster.Endpoint
	for try := range tcpConnectAttempts {
		e := cl.PickConn(key + uint64(try)*0x9e3779b97f4a7c15)
		if e == nil {
			break
		}
		if e == tried && len(cl.Endpoints()) > 1 {
			continue
		}
		tried = e
		ctx, cancel := t.dialContext()
		c, err := e.DialOpaque(ctx)
		cancel()
		if err != nil {
			e.Observe(0, err)
			t.tl.stats.ConnectFailures.Inc()
			t.log.Debug("upstream connect failed", zap.String("endpoint", e.Addr), zap.Error(err))
			if t.isClosed() {
				return false
			}
			continue
		}
		t.attach(c, e.Addr)
		return true
	}
	t.log.Debug("no endpoint of the cluster could be reached", zap.String("cluster", t.tl.name))
	t.downPeer = filter.PeerLocal
	if tried == nil {
		t.fail(filter.FlagNoHealthyUpstream, "no_healthy_upstream")
	} else {
		t.fail(filter.FlagUpstreamConnectFailure, "upstream_connect_failure")
	}
	return false
}

// connectWith connects the upstream with dial, which gives up when the
// connection is closed meanwhile.
func (t *tcpConn) connectWith(dial func(ctx context.Context) (net.Conn, string, error)) bool {
	ctx, cancel := t.dialContext()
	c, addr, err := dial(ctx)
	cancel()
	if err != nil {
		t.log.Debug("upstream connect failed", zap.Error(err))
		t.downPeer = filter.PeerLocal
		t.fail(filter.FlagUpstreamConnectFailure, "upstream_connect_failure")
		return false
	}
	t.attach(c, addr)
	return true
}

// dialContext is the context of a dial: cancelled when the connection is
// closed meanwhile, or by cancel.
func (t *tcpConn) dialContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-t.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// attach starts reading and writing the upstream c, at addr, and passes
// on what the client sent meanwhile.
func (t *tcpConn) attach(c net.Conn, addr string) {
	t.up = c
	t.x.UpstreamAddr = addr
	go t.read(c, &t.us)
	go t.write(c, &t.ds)
	t.flush(&t.ds)
}

func (t *tcpConn) isClosed() bool {
	select {
	case <-t.closed:
		return true
	default:
		return false
	}
}

// read hands the driver what c sends, a chunk at a time, until c ends.
func (t *tcpConn) read(c net.Conn, s *tcpSide) {
	buf := make([]byte, tcpReadMin)
	ack := make(chan struct{}, 1)
	for {
		n, err := c.Read(buf)
		full := n == len(buf)
		if n > 0 {
			select {
			case t.events <- tcpEvent{side: s, data: buf[:n], ack: ack}:
			case <-t.closed:
				return
			}
			select {
			case <-ack:
			case <-t.closed:
				return
			}
		}
		if full && len(buf) < tcpReadMax {
			buf = make([]byte, 2*len(buf))
		}
		if err != nil {
			select {
			case t.events <- tcpEvent{side: s, err: err, ack: ack}:
			case <-t.closed:
			}
			return
		}
	}
}

// write writes to c what the driver passes on for side s: bytes, or nil
// for the half-close.
func (t *tcpConn) write(c net.Conn, s *tcpSide) {
	for {
		var b []byte
		select {
		case b = <-s.wr:
		case <-t.closed:
			return
		}
		var err error
		if b == nil {
			closeWrite(c)
		} else {
			_ = c.SetWriteDeadline(time.Now().Add(t.tl.idle))
			_, err = c.Write(b)
		}
		select {
		case t.events <- tcpEvent{side: s, data: b, err: err, written: true}:
		case <-t.closed:
			return
		}
	}
}

// event takes a reader's chunk or end, or a writer's report. It reports
// false when the connection must close.
func (t *tcpConn) event(ev tcpEvent) bool {
	s := ev.side
	if ev.written {
		if ev.err != nil {
			if s == &t.us {
				t.downPeer = filter.PeerRemote // the client went away
				t.fail(filter.FlagDownstreamTerminated, "downstream_write_failed")
			} else {
				t.fail(filter.FlagUpstreamReset, "upstream_write_failed")
			}
			return false
		}
		s.writing = 0
		if ev.data != nil {
			s.sent += int64(len(ev.data))
			s.spare = ev.data[:0]
		}
		if s.heldAck != nil && t.waiting(s) <= tcpBufferLimit {
			s.heldAck <- struct{}{}
			s.heldAck = nil
		}
		t.flush(s)
		return true
	}
	if ev.err != nil && !errors.Is(ev.err, io.EOF) {
		// A reset, or a failed read: nothing more moves either way.
		if s == &t.ds {
			t.downPeer = filter.PeerRemote
			t.fail(filter.FlagDownstreamTerminated, "downstream_reset")
		} else {
			t.fail(filter.FlagUpstreamReset, "upstream_reset")
		}
		return false
	}
	t.dataMu.Lock()
	s.buf.B = append(s.buf.B, ev.data...)
	waiting := s.waiting()
	t.dataMu.Unlock()
	s.read.Add(float64(len(ev.data)))
	s.received += int64(len(ev.data))
	if waiting > tcpBufferLimit {
		s.heldAck = ev.ack
	} else {
		ev.ack <- struct{}{}
	}
	if ev.err != nil {
		s.ended = true
		if s == &t.ds {
			t.downPeer = filter.PeerRemote
		}
	}
	if s == &t.us {
		return t.upstream()
	}
	if !t.connected {
		return true // held by OnNewConnection: the bytes wait
	}
	return t.downstream(0)
}

// downstream calls OnDownstreamData from filter i on with the client's
// bytes held, and passes them on once every filter has let them through.
func (t *tcpConn) downstream(i int) bool {
	for ; i < len(t.streams); i++ {
		if t.streams[i].OnDownstreamData(&t.ds.buf, t.ds.ended) != filter.Continue {
			if t.isClosed() {
				t.fail(0, "filter_closed")
				return false
			}
			t.heldAt = i
			return true
		}
	}
	t.heldAt = -1
	t.pass(&t.ds)
	return true
}

// upstream calls OnUpstreamData, the filters in reverse order as Envoy
// calls write filters, and passes the bytes on once every filter has let
// them through.
func (t *tcpConn) upstream() bool {
	for i := len(t.streams) - 1; i >= 0; i-- {
		if t.streams[i].OnUpstreamData(&t.us.buf, t.us.ended) != filter.Continue {
			if t.isClosed() {
				t.fail(0, "filter_closed")
				return false
			}
			return true
		}
	}
	t.pass(&t.us)
	return true
}

// pass moves the side's bytes, which the filters let through, to its
// writer's queue.
func (t *tcpConn) pass(s *tcpSide) {
	t.dataMu.Lock()
	if len(s.out) == 0 {
		s.out, s.buf.B = s.buf.B, s.out[:0]
	} else {
		s.out = append(s.out, s.buf.B...)
		s.buf.B = s.buf.B[:0]
	}
	t.dataMu.Unlock()
	s.endOut = s.ended
	t.flush(s)
}

// flush hands the writer of s what waits, unless it is busy or the other
// end is not connected yet.
func (t *tcpConn) flush(s *tcpSide) {
	if s.writing != 0 || s == &t.ds && t.up == nil {
		return
	}
	switch {
	case len(s.out) > 0:
		b := s.out
		s.out, s.spare = s.spare, nil
		s.writing = len(b)
		s.wr <- b // room for one, and the writer holds nothing
	case s.endOut && !s.closeSent:
		s.closeSent = true
		s.writing = -1
		s.wr <- nil
	}
}

// finish closes both ends, tells the filters, and releases them. The
// readers and writers stop on the closed connections, or on t.closed.
func (t *tcpConn) finish() {
	t.Close()
	_ = t.down.Close()
	if t.up != nil {
		_ = t.up.Close()
	}
	peer := t.downPeer
	if peer == filter.PeerUnknown {
		peer = filter.PeerLocal
	}
	for _, st := range t.streams {
		st.OnDownstreamClose(peer)
	}
	for _, st := range t.streams {
		st.Done()
	}
	t.accessLog()
}

// accessLog writes the connection's line to the live access log, if
// there is one: protocol TCP, the bytes each way, the duration, the
// upstream, and why it ended when it ended early (details, and flags).
func (t *tcpConn) accessLog() {
	if t.tl.noLog {
		return
	}
	snap := t.srv.acquire()
	if snap == nil {
		return
	}
	defer snap.release()
	if snap.log == nil {
		return
	}
	e := snap.log.Acquire()
	x := t.x
	e.Start, e.Duration = x.Start, time.Since(x.Start)
	e.RemoteAddr = x.Conn.Remote.AppendTo(e.RemoteAddr)
	e.Protocol, e.Listener = "TCP", x.Listener
	e.UpstreamClust, e.UpstreamHost = x.Cluster, x.UpstreamAddr
	e.BytesReceived, e.BytesSent = t.ds.received, t.us.sent
	e.Flags, e.Details = x.Flags, t.why
	for i, d := range snap.log.Dynamic() {
		if v, ok := x.FilterState[d.Name]; ok && d.Source == accesslog.FilterState {
			e.SetDynamic(i, v)
		}
	}
	snap.log.Log(e)
}

// closeWrite half-closes c when it can (TCP, or TLS with close_notify),
// so that the other end sees the end of the bytes and may still answer.
func closeWrite(c net.Conn) {
	for c != nil {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}
