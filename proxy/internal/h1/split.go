package h1

// Message is one request as a Framer reads it from a stream of bytes.
type Message struct {
	// Head is the request line and header fields, up to and including the
	// empty line that ends them.
	Head []byte
	// Body is the body as it goes upstream: the Content-Length bytes, or
	// the chunks' data joined.
	Body []byte
	// Upgrade is whether the request asked to switch protocols: what
	// follows it is HTTP/1.1 again only if the answer is not 101.
	Upgrade bool
}

// Split reads b as the bytes a client sends on one connection, as a Conn
// would if every request were answered without switching protocols. It
// returns the requests that are complete, and the violation that stopped
// the reading, if any. It is the reference for what a Conn lets through,
// for tests that check what reaches an upstream.
func Split(b []byte) ([]Message, *Error) {
	var msgs []Message
	var cur Message
	var start, dataFrom int
	base := 0 // offset of the bytes being fed within b
	f := &Framer{}
	f.observe = func(ev event, off int) {
		off += base
		switch ev {
		case evStart:
			start = off
			cur = Message{}
		case evHeadEnd:
			cur.Head = b[start:off]
		case evData:
			dataFrom = off
		case evDataEnd:
			cur.Body = append(cur.Body, b[dataFrom:off]...)
		case evEnd:
			cur.Upgrade = f.upgrade && f.connUp
			msgs = append(msgs, cur)
		}
	}
	for base < len(b) {
		n := f.Feed(b[base:])
		if f.err != nil {
			return msgs, f.err
		}
		if holding, _ := f.Holding(); holding {
			// All read: the last request waits for its trailers.
			return msgs, nil
		}
		base += n
		if f.Awaiting() {
			f.Answered(nil)
		}
	}
	return msgs, nil
}
