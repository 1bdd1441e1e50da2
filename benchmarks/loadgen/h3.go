package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/ipv4"
)

// h3Group is one UDP socket, with its QUIC transport and HTTP/3 round
// tripper, shared by the streams of one Config.Connections slot.
type h3Group struct {
	r    *runner
	st   *stats
	udp  *net.UDPConn
	qt   *quic.Transport
	tr   *http3.Transport
	qcfg *quic.Config
	err  error // set when the socket could not be opened
}

func newH3Group(r *runner, st *stats) *h3Group {
	g := &h3Group{r: r, st: st}
	g.qcfg = &quic.Config{
		HandshakeIdleTimeout: r.cfg.timeout(),
		MaxIdleTimeout:       max(r.cfg.timeout(), 30*time.Second),
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		g.err = fmt.Errorf("opening UDP socket: %w", err)
		return g
	}
	g.udp = udp
	g.qt = &quic.Transport{Conn: &countingUDP{UDPConn: udp, batch: ipv4.NewPacketConn(udp), in: &st.bytesIn, out: &st.bytesOut}}
	g.tr = &http3.Transport{
		TLSClientConfig:    r.tlsConfig(""),
		QUICConfig:         g.qcfg,
		DisableCompression: true,
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
			conn, err := g.dial(ctx, addr, tlsCfg, qcfg)
			if err != nil {
				return nil, &dialError{err}
			}
			return conn, nil
		},
	}
	return g
}

func (g *h3Group) dial(ctx context.Context, addr string, tlsCfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", addr, err)
	}
	conn, err := g.qt.DialEarly(ctx, ua, tlsCfg, qcfg)
	if err != nil {
		return nil, fmt.Errorf("QUIC handshake with %s: %w", addr, err)
	}
	return conn, nil
}

func (g *h3Group) close() {
	if g.tr != nil {
		_ = g.tr.Close()
	}
	if g.qt != nil {
		_ = g.qt.Close()
	}
}

// h3Client is one stream of an h3Group, driven by one worker.
type h3Client struct {
	g    *h3Group
	body []byte
}

var _ requester = (*h3Client)(nil)

func newH3Client(r *runner, _ *stats, g *h3Group) *h3Client {
	return &h3Client{g: g, body: r.cfg.Body}
}

// connect completes one QUIC handshake with every endpoint and closes it.
func (c *h3Client) connect(ctx context.Context) error {
	g := c.g
	if g.err != nil {
		return g.err
	}
	for _, ep := range g.r.endpoints {
		ctx, cancel := context.WithTimeout(ctx, g.r.cfg.timeout())
		tlsCfg := ep.tls.Clone()
		conn, err := g.dial(ctx, ep.addr, tlsCfg, g.qcfg)
		cancel()
		if err != nil {
			return &dialError{err}
		}
		_ = conn.CloseWithError(0, "")
	}
	return nil
}

func (c *h3Client) do(ctx context.Context, t *target, deadline time.Time) (int, error) {
	if c.g.err != nil {
		return 0, &dialError{c.g.err}
	}
	return roundTrip(ctx, c.g.tr, t, c.body, deadline, c.g.r.cfg.NewConnPerRequest)
}

func (c *h3Client) interrupt() {}
func (c *h3Client) close()     {}

// countingUDP counts the UDP payload read and written through it, without
// hiding the optimizations quic-go uses on a *net.UDPConn (batched reads,
// GSO, ECN).
type countingUDP struct {
	*net.UDPConn
	batch   *ipv4.PacketConn
	in, out *atomic.Int64
}

func (c *countingUDP) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := c.batch.ReadBatch(ms, flags)
	for i := range n {
		c.in.Add(int64(ms[i].N))
	}
	return n, err
}

func (c *countingUDP) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(p)
	c.in.Add(int64(n))
	return n, addr, err
}

func (c *countingUDP) ReadMsgUDP(b, oob []byte) (int, int, int, *net.UDPAddr, error) {
	n, oobn, flags, addr, err := c.UDPConn.ReadMsgUDP(b, oob)
	c.in.Add(int64(n))
	return n, oobn, flags, addr, err
}

func (c *countingUDP) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(p, addr)
	c.out.Add(int64(n))
	return n, err
}

func (c *countingUDP) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	n, oobn, err := c.UDPConn.WriteMsgUDP(b, oob, addr)
	c.out.Add(int64(n))
	return n, oobn, err
}
