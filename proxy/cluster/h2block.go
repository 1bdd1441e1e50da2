package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wasmgate/wasmgate/proxy/internal/headerval"
)

// A response's header block is decoded here rather than by the Framer's
// MetaHeadersFrame, which allocated a frame, a closure and a growing
// slice of fields for every response: about 9 of the pair of sidecars'
// 28 allocations a request. The HPACK decoder emits each field to the
// connection's reader, which checks it as the Framer did and keeps it in
// a slice of its own; at the end of the block the fields are copied to
// their stream, into a slice the stream keeps across requests.

// h2Block is the header block being read: a HEADERS frame and the
// CONTINUATION frames that follow it. It is the reader goroutine's.
type h2Block struct {
	id        uint32
	endStream bool
	fields    []hpack.HeaderField
	status    string // :status, "" when missing
	remain    uint32 // what the header list may still take
	regular   bool   // a regular field was seen
	invalid   error  // the first malformed field: a stream error
	selfDep   bool   // the stream depends on itself: a stream error
	truncated bool   // fields beyond h2MaxHeaderList were dropped
}

// errPseudoAfterRegular and the others below make a block malformed
// (RFC 9113, 8.1.1 and 8.3): its stream is reset, the connection lives.
var (
	errPseudoAfterRegular = errors.New("pseudo-header after a regular header")
	errDuplicateStatus    = errors.New("duplicate :status")
	errSelfDependency     = errors.New("HEADERS depends on its own stream")
)

// readBlockFrame reads the payload of a HEADERS or CONTINUATION frame,
// whose header the Framer has read and checked for order, and decodes it.
// At the end of the block it hands the fields to their stream.
func (cc *h2Conn) readBlockFrame(fh http2.FrameHeader) error {
	if cap(cc.frag) < int(fh.Length) {
		cc.frag = make([]byte, fh.Length)
	}
	p := cc.frag[:fh.Length]
	if _, err := io.ReadFull(cc.br, p); err != nil {
		return err
	}
	b := &cc.blk
	end := fh.Flags.Has(http2.FlagHeadersEndHeaders) // the same bit for CONTINUATION
	if fh.Type == http2.FrameHeaders {
		selfDep := false
		if fh.StreamID == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if fh.Flags.Has(http2.FlagHeadersPadded) {
			if len(p) == 0 {
				return http2.ConnectionError(http2.ErrCodeFrameSize)
			}
			pad := int(p[0])
			p = p[1:]
			if pad > len(p) {
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
			p = p[:len(p)-pad]
		}
		if fh.Flags.Has(http2.FlagHeadersPriority) {
			if len(p) < 5 {
				return http2.ConnectionError(http2.ErrCodeFrameSize)
			}
			if binary.BigEndian.Uint32(p)&(1<<31-1) == fh.StreamID {
				// A stream that depends on itself (RFC 9113, 5.3.1).
				selfDep = true
			}
			p = p[5:]
		}
		clear(b.fields)
		*b = h2Block{id: fh.StreamID, endStream: fh.Flags.Has(http2.FlagHeadersEndStream), fields: b.fields[:0], remain: h2MaxHeaderList, selfDep: selfDep}
		cc.dec.SetEmitEnabled(true)
	}
	// A peer far beyond the header list's bound, or going on after a
	// malformed field (whose block is no longer counted), loses the
	// connection rather than have the rest decoded.
	if int64(len(p)) > 2*int64(b.remain) || b.invalid != nil && !end {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := cc.dec.Write(p); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return nil
	}
	if err := cc.dec.Close(); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid == nil && b.selfDep {
		b.invalid = errSelfDependency
	}
	if b.invalid != nil {
		return http2.StreamError{StreamID: b.id, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	return cc.onHeaders(b)
}

// onField receives each field the HPACK decoder emits.
func (cc *h2Conn) onField(f hpack.HeaderField) {
	b := &cc.blk
	pseudo := strings.HasPrefix(f.Name, ":")
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		// The value stays out of the error: it may be a secret.
		b.invalid = fmt.Errorf("invalid value of header %q", f.Name)
	case pseudo:
		switch {
		case b.regular:
			b.invalid = errPseudoAfterRegular
		case f.Name != ":status":
			b.invalid = fmt.Errorf("pseudo-header %q in a response", f.Name)
		case b.status != "":
			b.invalid = errDuplicateStatus
		default:
			b.status = f.Value
		}
	default:
		b.regular = true
		if !headerval.H2Name(f.Name) {
			b.invalid = fmt.Errorf("invalid header name %q", f.Name)
		}
	}
	if b.invalid != nil {
		cc.dec.SetEmitEnabled(false)
		return
	}
	size := f.Size()
	if size > b.remain {
		cc.dec.SetEmitEnabled(false)
		b.truncated = true
		b.remain = 0
		return
	}
	b.remain -= size
	if !pseudo {
		b.fields = append(b.fields, f)
	}
}
