package h2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	frameHeaderLen  = 9
	minMaxFrameSize = 1 << 14
	maxMaxFrameSize = 1<<24 - 1
	maxWindow       = 1<<31 - 1
	initialWindow   = 65535

	// readBufferSize holds a whole frame of the default maximum size, so
	// the payloads of HEADERS and DATA frames are read in place.
	readBufferSize = frameHeaderLen + minMaxFrameSize + 4<<10

	// frameTimeout bounds how long a client may take to send the rest of
	// a frame, or of a header block, once it has begun it.
	frameTimeout = 10 * time.Second
	// drainTimeout bounds how long a closing connection is read (and
	// discarded) so that the client gets our GOAWAY before a TCP reset.
	drainTimeout = time.Second
	// defaultSettingsTimeout is Options.SettingsTimeout's zero value.
	defaultSettingsTimeout = 10 * time.Second
	// maxQueuedControl bounds the control frames (SETTINGS and PING
	// acknowledgements, resets) a client makes us queue faster than they
	// are written.
	maxQueuedControl = 10000
	// A connection on which the client has reset at least half of the
	// streams, within prematureLifetime of their start and before their
	// response's end, is closed once prematureMinStreams have been opened
	// (Envoy's rule against rapid resets that a fast upstream would not
	// otherwise bound).
	prematureLifetime   = time.Second
	prematureMinStreams = 100
	// queueFactor bounds, as a multiple of MaxConcurrentStreams, the
	// streams waiting for a handler of their connection.
	queueFactor = 4
)

// The read deadline a connection's reader has armed.
const (
	rdNone  = iota // between frames with streams open: none
	rdIdle         // between frames with no stream open: the idle timeout
	rdFrame        // inside a frame or a header block: frameTimeout
	rdDrain        // the connection is closing: drainTimeout
)

var (
	errClientReset  = errors.New("http2: the client reset the stream")
	errStreamReset  = errors.New("http2: stream reset")
	errResponseDone = errors.New("http2: the response has ended")
	errConnClosed   = errors.New("http2: connection closed")
	errBodyAborted  = errors.New("http2: request body aborted")
)

// serverConn is one HTTP/2 connection. Its reader goroutine (serve) reads
// and handles frames; handlers run on worker goroutines; a writer
// goroutine writes what they all queue in out.
type serverConn struct {
	srv  *Server
	conn net.Conn
	br   *bufio.Reader
	fr   *http2.Framer
	dec  *hpack.Decoder

	maxStreams   int
	maxHeader    int
	streamWindow int32 // what we grant per stream, once our SETTINGS are acknowledged
	connWindow   int32 // what we grant the connection

	// The reader goroutine's own.
	hb      headerBlock
	trailer []byte // the trailer fields of the header block being read: name, 0, value, 0
	discard int    // payload bytes peeked and still to be discarded
	scratch []byte // payloads larger than br's buffer
	closed  atomic.Bool

	mu sync.Mutex
	// Guarded by mu.
	streams      map[uint32]*stream
	maxClientID  uint32
	running      int // handlers started and not yet returned
	queue        []*stream
	qhead        int
	rdKind       int
	settingsAckd bool
	settingsWait *time.Timer // until settingsAckd
	goAwaySent   bool
	closing      bool // no frame is read or queued any more; the writer flushes and stops
	peerGoAway   bool
	opened       int // streams that reached the handler's queue
	premature    int // of them, reset early by the client

	// Flow control, guarded by mu.
	sendWindow  int64 // what we may still send on the connection
	peerInitial int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrm  int
	recvWindow  int64 // what the client may still send on the connection
	recvCredit  int64 // consumed, not yet granted back
	sendWaiters int
	sendCond    sync.Cond

	// The output, guarded by mu.
	out           []byte
	spare         []byte
	writing       bool
	writerIdle    bool
	writerDone    chan struct{}
	wcond         sync.Cond
	controlQueued int
	wdeadline     time.Time
	enc           *hpack.Encoder
	block         blockBuf
	lname         []byte
	num           []byte
	names         map[string]string
	values        map[string]string

	handlers sync.WaitGroup
}

func newServerConn(s *Server, c net.Conn) *serverConn {
	sc := &serverConn{
		srv:          s,
		conn:         c,
		br:           bufio.NewReaderSize(c, readBufferSize),
		maxStreams:   int(s.opts.MaxConcurrentStreams),
		maxHeader:    s.opts.MaxHeaderBytes,
		streamWindow: s.opts.StreamWindow,
		connWindow:   max(s.opts.ConnectionWindow, initialWindow),
		streams:      map[uint32]*stream{},
		sendWindow:   initialWindow,
		peerInitial:  initialWindow,
		peerMaxFrm:   minMaxFrameSize,
		recvWindow:   initialWindow,
		writerDone:   make(chan struct{}),
		names:        map[string]string{},
		values:       map[string]string{},
	}
	sc.fr = http2.NewFramer(nil, sc.br)
	sc.fr.SetMaxReadFrameSize(s.opts.MaxReadFrameSize)
	sc.fr.SetReuseFrames()
	sc.dec = hpack.NewDecoder(4096, sc.onField)
	// A single field over MaxHeaderBytes is answered 431 like a long list;
	// the bound on the encoded block bounds the strings too.
	sc.dec.SetMaxStringLength(2*sc.maxHeader + minMaxFrameSize)
	sc.enc = hpack.NewEncoder(&sc.block)
	sc.sendCond.L = &sc.mu
	sc.wcond.L = &sc.mu
	return sc
}

// serve runs the connection's reader until the connection ends, then
// waits for its handlers.
func (sc *serverConn) serve() {
	sc.mu.Lock()
	settings := [4]http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: uint32(sc.maxStreams)},
		{ID: http2.SettingMaxHeaderListSize, Val: uint32(sc.maxHeader)},
		{ID: http2.SettingInitialWindowSize, Val: uint32(sc.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: sc.srv.opts.MaxReadFrameSize},
	}
	sc.appendSettings(settings[:])
	wait := sc.srv.opts.SettingsTimeout
	if wait <= 0 {
		wait = defaultSettingsTimeout
	}
	sc.settingsWait = time.AfterFunc(wait, sc.settingsTimedOut)
	if d := int64(sc.connWindow) - initialWindow; d > 0 {
		sc.appendWindowUpdate(0, uint32(d))
		sc.recvWindow += d
	}
	sc.kickLocked()
	sc.mu.Unlock()
	go sc.writeLoop()

	if sc.readPreface() {
		sc.readLoop()
	}
	sc.teardown()
}

func (sc *serverConn) readPreface() bool {
	sc.mu.Lock()
	sc.armReadLocked(rdFrame)
	sc.mu.Unlock()
	p, err := sc.br.Peek(len(http2.ClientPreface))
	if err != nil || string(p) != http2.ClientPreface {
		if err == nil || errors.Is(err, io.EOF) {
			sc.srv.countError("conn_preface")
		}
		sc.mu.Lock()
		sc.closeLocked()
		sc.mu.Unlock()
		return false
	}
	_, _ = sc.br.Discard(len(p))
	return true
}

func (sc *serverConn) frameTimeout() time.Duration {
	return min(frameTimeout, sc.srv.opts.IdleTimeout)
}

// readLoop reads and handles frames until the connection fails or closes.
func (sc *serverConn) readLoop() {
	for !sc.closed.Load() {
		if err := sc.fill(frameHeaderLen, true); err != nil {
			sc.readFailed(err)
			break
		}
		fh, err := sc.fr.ReadFrameHeader()
		if err != nil {
			sc.frameError(err)
			break
		}
		switch fh.Type {
		case http2.FrameData:
			err = sc.onData(fh)
		case http2.FrameHeaders:
			err = sc.onHeaders(fh)
		case http2.FrameContinuation:
			err = sc.onContinuation(fh)
		default:
			err = sc.onOther(fh)
		}
		if sc.discard > 0 {
			_, _ = sc.br.Discard(sc.discard)
			sc.discard = 0
		}
		if err != nil && !sc.frameError(err) {
			break
		}
	}
	// Whatever ended the loop, the client gets to read our last frames.
	sc.drain()
}

// readFailed handles an error reading between or inside frames.
func (sc *serverConn) readFailed(err error) {
	var ne net.Error
	sc.mu.Lock()
	if errors.As(err, &ne) && ne.Timeout() && sc.rdKind == rdIdle && !sc.closing {
		// Idle: say goodbye properly.
		sc.goAwayLocked(http2.ErrCodeNo)
	}
	sc.closeLocked()
	sc.mu.Unlock()
}

// frameError handles an error from reading or handling a frame: it
// reports whether the reader may go on (a stream error) or must stop.
func (sc *serverConn) frameError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		sc.srv.countError("stream_" + se.Code.String())
		sc.mu.Lock()
		if st := sc.streams[se.StreamID]; st != nil {
			sc.resetLocked(st, se.Code)
		} else {
			sc.appendRST(se.StreamID, se.Code)
			sc.kickLocked()
		}
		sc.mu.Unlock()
		return true
	case errors.As(err, &ce):
		sc.connError(http2.ErrCode(ce), "conn_"+http2.ErrCode(ce).String())
		return false
	case errors.As(err, new(connErr)):
		var e connErr
		errors.As(err, &e)
		sc.connError(e.code, e.name)
		return false
	case errors.Is(err, http2.ErrFrameTooLarge):
		sc.connError(http2.ErrCodeFrameSize, "frame_too_large")
		return false
	case errors.Is(err, errConnClosing):
		return false
	}
	sc.mu.Lock()
	sc.closeLocked()
	sc.mu.Unlock()
	return false
}

var errConnClosing = errors.New("http2: connection closing")

// connError fails the connection: GOAWAY with code, then close.
func (sc *serverConn) connError(code http2.ErrCode, name string) {
	if name != "" {
		sc.srv.countError(name)
	}
	sc.mu.Lock()
	sc.goAwayLocked(code)
	sc.closeLocked()
	sc.mu.Unlock()
}

// settingsTimedOut ends a connection whose client has not acknowledged
// the server's SETTINGS in time.
func (sc *serverConn) settingsTimedOut() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.settingsAckd || sc.closing {
		return
	}
	sc.srv.countError("settings_timeout")
	sc.goAwayLocked(http2.ErrCodeSettingsTimeout)
	sc.closeLocked()
}

// connErr is a connection error with the name CountError receives.
type connErr struct {
	code http2.ErrCode
	name string
}

func (e connErr) Error() string { return "http2: connection error " + e.code.String() + ": " + e.name }

// fill makes sure n bytes are buffered, arming the read deadline that
// fits where the reader is when it has to wait for the client.
func (sc *serverConn) fill(n int, frameStart bool) error {
	if sc.br.Buffered() >= n {
		return nil
	}
	sc.mu.Lock()
	kind := rdFrame
	if frameStart && sc.br.Buffered() == 0 && !sc.hb.open {
		kind = rdNone
		if sc.busyLocked() == 0 {
			kind = rdIdle
		}
	}
	sc.armReadLocked(kind)
	sc.mu.Unlock()
	_, err := sc.br.Peek(n)
	return err
}

func (sc *serverConn) armReadLocked(kind int) {
	if sc.closing || kind == sc.rdKind && kind != rdFrame {
		return
	}
	sc.rdKind = kind
	var d time.Time
	switch kind {
	case rdIdle:
		d = time.Now().Add(sc.srv.opts.IdleTimeout)
	case rdFrame:
		d = time.Now().Add(sc.frameTimeout())
	case rdDrain:
		d = time.Now().Add(drainTimeout)
	}
	_ = sc.conn.SetReadDeadline(d)
}

// busyLocked counts what keeps the connection from being idle: open
// streams, running handlers and streams waiting for one.
func (sc *serverConn) busyLocked() int {
	return len(sc.streams) + sc.running + len(sc.queue) - sc.qhead
}

// payload returns the n bytes of the current frame's payload. They are
// valid until the reader reads on.
func (sc *serverConn) payload(n uint32) ([]byte, error) {
	if int(n) <= sc.br.Size() {
		if err := sc.fill(int(n), false); err != nil {
			return nil, err
		}
		p, err := sc.br.Peek(int(n))
		sc.discard = len(p)
		return p, err
	}
	sc.mu.Lock()
	sc.armReadLocked(rdFrame)
	sc.mu.Unlock()
	if cap(sc.scratch) < int(n) {
		sc.scratch = make([]byte, n)
	}
	p := sc.scratch[:n]
	_, err := io.ReadFull(sc.br, p)
	return p, err
}

// drain reads and discards what the client still sends, for at most
// drainTimeout, so that it reads our GOAWAY before the connection's end
// rather than a TCP reset.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	sc.closeLocked()
	sc.mu.Unlock()
	_, _ = io.Copy(io.Discard, sc.br)
}

// teardown ends the connection once the reader has stopped: streams
// still open see the connection closed, the writer stops, and the
// handlers still running are waited for.
func (sc *serverConn) teardown() {
	sc.mu.Lock()
	sc.settingsWait.Stop()
	sc.closeLocked()
	for id, st := range sc.streams {
		sc.abortLocked(st, errConnClosed)
		delete(sc.streams, id)
		st.inMap = false
	}
	queued := sc.queue[sc.qhead:]
	sc.queue, sc.qhead = nil, 0
	sc.mu.Unlock()
	for _, st := range queued {
		st.release()
	}
	// The writer flushes what is queued (a GOAWAY, say), unless the
	// client does not read it.
	t := time.NewTimer(drainTimeout)
	select {
	case <-sc.writerDone:
	case <-t.C:
	}
	t.Stop()
	_ = sc.conn.Close()
	<-sc.writerDone
	sc.handlers.Wait()
}

// shutdown starts a graceful close: GOAWAY now, the close once the
// streams open have finished.
func (sc *serverConn) shutdown() {
	sc.mu.Lock()
	sc.goAwayLocked(http2.ErrCodeNo)
	if sc.busyLocked() == 0 {
		sc.closeLocked()
	}
	sc.mu.Unlock()
}

// forceClose closes the connection at once.
func (sc *serverConn) forceClose() {
	sc.mu.Lock()
	sc.closeLocked()
	sc.mu.Unlock()
	_ = sc.conn.Close()
}

// goAwayLocked queues GOAWAY naming the last stream we took: streams
// above it are ignored from now on.
func (sc *serverConn) goAwayLocked(code http2.ErrCode) {
	if sc.closing || sc.goAwaySent && code == http2.ErrCodeNo {
		return
	}
	sc.goAwaySent = true
	sc.appendGoAway(sc.maxClientID, code)
	sc.kickLocked()
}

// closeLocked stops the connection: the reader stops handling frames and
// drains, the writer flushes what is queued and stops, whoever waits is
// woken.
func (sc *serverConn) closeLocked() {
	if sc.closing {
		return
	}
	sc.closing = true
	sc.closed.Store(true)
	sc.rdKind = rdDrain
	_ = sc.conn.SetReadDeadline(time.Now().Add(drainTimeout))
	for _, st := range sc.streams {
		sc.abortLocked(st, errConnClosed)
	}
	sc.sendCond.Broadcast()
	sc.kickLocked()
	sc.wcond.Broadcast()
}

// onHeaders handles a HEADERS frame: a new request, or trailers.
func (sc *serverConn) onHeaders(fh http2.FrameHeader) error {
	p, err := sc.payload(fh.Length)
	if err != nil {
		return err
	}
	id := fh.StreamID
	if id == 0 {
		return connErr{http2.ErrCodeProtocol, "headers_stream_0"}
	}
	if id%2 == 0 {
		return connErr{http2.ErrCodeProtocol, "headers_even_stream"}
	}
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) == 0 {
			return connErr{http2.ErrCodeFrameSize, "headers_pad_short"}
		}
		pad := int(p[0])
		p = p[1:]
		if pad > len(p) {
			return connErr{http2.ErrCodeProtocol, "headers_pad_too_big"}
		}
		p = p[:len(p)-pad]
	}
	selfDep := false
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return connErr{http2.ErrCodeFrameSize, "headers_prio_short"}
		}
		selfDep = binary.BigEndian.Uint32(p)&(1<<31-1) == id
		p = p[5:]
	}
	if err := sc.beginBlock(id, fh.Flags.Has(http2.FlagHeadersEndStream)); err != nil {
		return err
	}
	if selfDep {
		sc.hb.fail("headers_self_dependency")
	}
	return sc.blockFragment(p, fh.Flags.Has(http2.FlagHeadersEndHeaders))
}

func (sc *serverConn) onContinuation(fh http2.FrameHeader) error {
	// The Framer has checked that it follows HEADERS or CONTINUATION of
	// the same stream.
	p, err := sc.payload(fh.Length)
	if err != nil {
		return err
	}
	return sc.blockFragment(p, fh.Flags.Has(http2.FlagContinuationEndHeaders))
}

// onData hands request body bytes to their stream.
func (sc *serverConn) onData(fh http2.FrameHeader) error {
	p, err := sc.payload(fh.Length)
	if err != nil {
		return err
	}
	id := fh.StreamID
	if id == 0 {
		return connErr{http2.ErrCodeProtocol, "data_stream_0"}
	}
	total := int64(fh.Length)
	data := p
	if fh.Flags.Has(http2.FlagDataPadded) {
		if len(p) == 0 {
			return connErr{http2.ErrCodeFrameSize, "data_pad_short"}
		}
		pad := int(p[0])
		data = p[1:]
		if pad > len(data) {
			return connErr{http2.ErrCodeProtocol, "data_pad_too_big"}
		}
		data = data[:len(data)-pad]
	}
	end := fh.Flags.Has(http2.FlagDataEndStream)

	sc.mu.Lock()
	defer sc.mu.Unlock()
	if total > sc.recvWindow {
		return connErr{http2.ErrCodeFlowControl, "conn_flow_control"}
	}
	sc.recvWindow -= total
	st := sc.streams[id]
	if st == nil {
		if id > sc.maxClientID {
			return connErr{http2.ErrCodeProtocol, "data_on_idle_stream"}
		}
		// A stream closed or reset: the bytes are the connection's to
		// grant back.
		sc.creditConnLocked(total)
		return nil
	}
	if st.remoteClosed {
		sc.creditConnLocked(total)
		sc.srv.countError("data_after_end_stream")
		sc.resetLocked(st, http2.ErrCodeStreamClosed)
		return nil
	}
	if total > st.recvWindow {
		sc.creditConnLocked(total)
		sc.srv.countError("stream_flow_control")
		sc.resetLocked(st, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= total
	if pad := total - int64(len(data)); pad > 0 {
		sc.creditLocked(st, pad)
	}
	st.received += int64(len(data))
	if st.contentLength >= 0 && (st.received > st.contentLength || end && st.received != st.contentLength) {
		sc.creditConnLocked(int64(len(data)))
		sc.srv.countError("data_content_length")
		sc.resetLocked(st, http2.ErrCodeProtocol)
		return nil
	}
	if st.bodyErr != nil {
		sc.creditLocked(st, int64(len(data)))
	} else if len(data) > 0 {
		st.buf = append(st.buf, data...)
	}
	if end {
		sc.endBodyLocked(st)
	} else if st.bodyWaiting {
		st.cond.Signal()
	}
	return nil
}

// endBodyLocked records that the client sent the end of st's request and
// wakes a read waiting for more.
func (sc *serverConn) endBodyLocked(st *stream) {
	st.remoteClosed = true
	st.eof = true
	sc.maybeCloseLocked(st)
	if st.bodyWaiting {
		st.cond.Signal()
	}
}

// onOther handles the frames the Framer parses: control frames and
// frames of unknown types.
func (sc *serverConn) onOther(fh http2.FrameHeader) error {
	if int(fh.Length) <= sc.br.Size() {
		if err := sc.fill(int(fh.Length), false); err != nil {
			return err
		}
	} else {
		sc.mu.Lock()
		sc.armReadLocked(rdFrame)
		sc.mu.Unlock()
	}
	f, err := sc.fr.ReadFrameForHeader(fh)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return sc.onSettingsLocked(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		sc.appendPingAck(f.Data)
		return sc.controlLocked()
	case *http2.WindowUpdateFrame:
		return sc.onWindowUpdateLocked(f)
	case *http2.RSTStreamFrame:
		id := f.StreamID
		if st := sc.streams[id]; st != nil {
			if !st.localClosed && time.Since(st.ctx.ConnTime()) < prematureLifetime {
				sc.premature++
				if sc.opened >= prematureMinStreams && 2*sc.premature >= sc.opened {
					return connErr{http2.ErrCodeEnhanceYourCalm, "premature_resets"}
				}
			}
			st.localClosed = true // nothing more may be sent on it
			st.remoteClosed = true
			sc.abortLocked(st, errClientReset)
			sc.removeLocked(st)
		} else if id > sc.maxClientID {
			return connErr{http2.ErrCodeProtocol, "rst_on_idle_stream"}
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			sc.srv.countError("priority_self_dependency")
			if st := sc.streams[f.StreamID]; st != nil {
				sc.resetLocked(st, http2.ErrCodeProtocol)
			} else {
				sc.appendRST(f.StreamID, http2.ErrCodeProtocol)
				sc.kickLocked()
			}
		}
	case *http2.GoAwayFrame:
		sc.peerGoAway = true
		if sc.busyLocked() == 0 {
			sc.goAwayLocked(http2.ErrCodeNo)
			sc.closeLocked()
		}
	case *http2.PushPromiseFrame:
		return connErr{http2.ErrCodeProtocol, "push_promise_from_client"}
	}
	return nil
}

func (sc *serverConn) onSettingsLocked(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if !sc.settingsAckd {
			sc.settingsAckd = true
			sc.settingsWait.Stop()
		}
		return nil
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			sc.enc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - sc.peerInitial
			sc.peerInitial = int64(s.Val)
			for _, st := range sc.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return connErr{http2.ErrCodeFlowControl, "settings_window_overflow"}
				}
			}
			if delta > 0 && sc.sendWaiters > 0 {
				sc.sendCond.Broadcast()
			}
		case http2.SettingMaxFrameSize:
			sc.peerMaxFrm = int(s.Val)
		}
		return nil
	})
	if err != nil {
		if ce, ok := err.(http2.ConnectionError); ok {
			return connErr{http2.ErrCode(ce), "settings_invalid"}
		}
		return err
	}
	sc.appendSettingsAck()
	return sc.controlLocked()
}

func (sc *serverConn) onWindowUpdateLocked(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		sc.sendWindow += inc
		if sc.sendWindow > maxWindow {
			return connErr{http2.ErrCodeFlowControl, "conn_window_overflow"}
		}
	} else {
		st := sc.streams[f.StreamID]
		if st == nil {
			if f.StreamID > sc.maxClientID {
				return connErr{http2.ErrCodeProtocol, "window_update_on_idle_stream"}
			}
			return nil
		}
		st.sendWindow += inc
		if st.sendWindow > maxWindow {
			sc.srv.countError("stream_window_overflow")
			sc.resetLocked(st, http2.ErrCodeFlowControl)
			return nil
		}
	}
	if sc.sendWaiters > 0 {
		sc.sendCond.Broadcast()
	}
	return nil
}

// controlLocked counts a control frame a client made us queue.
func (sc *serverConn) controlLocked() error {
	sc.controlQueued++
	sc.kickLocked()
	if sc.controlQueued > maxQueuedControl {
		return connErr{http2.ErrCodeEnhanceYourCalm, "too_many_control_frames"}
	}
	return nil
}

// resetLocked ends st with RST_STREAM code: a stream error.
func (sc *serverConn) resetLocked(st *stream, code http2.ErrCode) {
	if !st.localClosed {
		sc.appendRST(st.id, code)
		sc.kickLocked()
	}
	st.localClosed = true
	st.remoteClosed = true
	sc.abortLocked(st, errStreamReset)
	sc.removeLocked(st)
}

// abortLocked fails the reads of st's request body and wakes whoever
// waits on st.
func (sc *serverConn) abortLocked(st *stream, err error) {
	if st.bodyErr == nil {
		st.bodyErr = err
	}
	if n := int64(len(st.buf) - st.r); n > 0 {
		sc.creditConnLocked(n)
	}
	st.buf, st.r = st.buf[:0], 0
	st.cond.Broadcast()
	if sc.sendWaiters > 0 {
		sc.sendCond.Broadcast()
	}
}

// maybeCloseLocked removes st once both its sides are closed.
func (sc *serverConn) maybeCloseLocked(st *stream) {
	if st.localClosed && st.remoteClosed {
		sc.removeLocked(st)
	}
}

func (sc *serverConn) removeLocked(st *stream) {
	if st.inMap {
		delete(sc.streams, st.id)
		st.inMap = false
	}
}

// creditLocked grants back n bytes of st's request body the handler has
// consumed (or that were discarded), on the stream and the connection.
func (sc *serverConn) creditLocked(st *stream, n int64) {
	sc.creditConnLocked(n)
	if st.remoteClosed || sc.closing {
		return
	}
	st.recvCredit += n
	if st.recvCredit >= int64(st.recvTarget)/4 {
		sc.appendWindowUpdate(st.id, uint32(st.recvCredit))
		st.recvWindow += st.recvCredit
		st.recvCredit = 0
		sc.kickLocked()
	}
}

func (sc *serverConn) creditConnLocked(n int64) {
	if sc.closing {
		return
	}
	sc.recvCredit += n
	if sc.recvCredit >= int64(sc.connWindow)/4 {
		sc.appendWindowUpdate(0, uint32(sc.recvCredit))
		sc.recvWindow += sc.recvCredit
		sc.recvCredit = 0
		sc.kickLocked()
	}
}

// startLocked runs st's handler, or queues st when the connection's
// handlers are all busy.
func (sc *serverConn) startLocked(st *stream) error {
	if sc.running < sc.maxStreams {
		sc.running++
		sc.handlers.Add(1)
		sc.srv.workers.run(st)
		return nil
	}
	sc.queue = append(sc.queue, st)
	if len(sc.queue)-sc.qhead > queueFactor*sc.maxStreams {
		return connErr{http2.ErrCodeEnhanceYourCalm, "too_many_early_resets"}
	}
	return nil
}

// streamDone is called by a handler's goroutine once its response is
// written: the next queued stream starts, and an idle or shut down
// connection gets its deadline or its close.
func (sc *serverConn) streamDone(st *stream) {
	var drop []*stream
	sc.mu.Lock()
	if !st.localClosed {
		// Only when the connection closed under the response.
		st.localClosed = true
		st.remoteClosed = true
	}
	if st.bodyErr == nil {
		st.bodyErr = errResponseDone
	}
	sc.removeLocked(st)
	sc.running--
	for sc.qhead < len(sc.queue) && !sc.closing {
		next := sc.queue[sc.qhead]
		sc.queue[sc.qhead] = nil
		sc.qhead++
		if sc.qhead == len(sc.queue) {
			sc.queue, sc.qhead = sc.queue[:0], 0
		}
		if next.localClosed {
			drop = append(drop, next)
			continue
		}
		sc.running++
		sc.handlers.Add(1)
		sc.srv.workers.run(next)
		break
	}
	if sc.busyLocked() == 0 && !sc.closing {
		if sc.goAwaySent || sc.peerGoAway {
			sc.goAwayLocked(http2.ErrCodeNo)
			sc.closeLocked()
		} else if sc.rdKind == rdNone || sc.rdKind == rdIdle {
			// Idle from now on, however long the reader has waited.
			sc.rdKind = rdNone
			sc.armReadLocked(rdIdle)
		}
	}
	sc.mu.Unlock()
	sc.handlers.Done()
	for _, d := range drop {
		d.release()
	}
}
