// Package accesslog writes one JSON line per request, off the request
// path. A request fills a pooled Entry and hands it to a bounded queue; one
// goroutine formats and writes. When the queue is full the entry is
// dropped and counted, so a slow disk never slows requests.
package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wasmgate/wasmgate/proxy/filter"
)

// Entry is one request's record. Byte fields are copies the entry owns.
// An Entry comes from Logger.Acquire and goes back through Logger.Log; it
// must not be used after Log.
type Entry struct {
	Start         time.Time
	Duration      time.Duration
	RequestID     []byte
	RemoteAddr    []byte
	Method        []byte
	Authority     []byte
	Path          []byte
	Protocol      string
	Status        int
	Flags         filter.Flags
	BytesReceived int64
	BytesSent     int64
	UpstreamHost  string
	UpstreamClust string
	Route         string
	VirtualHost   string
	Listener      string
	UserAgent     []byte
	XForwardedFor []byte
	Details       string

	// values hold the dynamic fields (Logger.Dynamic), set says which
	// have a value.
	values [][]byte
	set    uint64
}

func (e *Entry) reset() {
	values := e.values
	for i := range values {
		values[i] = values[i][:0]
	}
	*e = Entry{
		RequestID: e.RequestID[:0], RemoteAddr: e.RemoteAddr[:0], Method: e.Method[:0],
		Authority: e.Authority[:0], Path: e.Path[:0], UserAgent: e.UserAgent[:0],
		XForwardedFor: e.XForwardedFor[:0], values: values,
	}
}

// SetDynamic sets the value of the i-th dynamic field (Logger.Dynamic).
func (e *Entry) SetDynamic(i int, v []byte) {
	for len(e.values) <= i {
		e.values = append(e.values, nil)
	}
	e.values[i] = append(e.values[i][:0], v...)
	e.set |= 1 << i
}

// Source says where a dynamic field's value comes from.
type Source uint8

const (
	// RequestHeader is a request header, as the client sent it.
	RequestHeader Source = iota + 1
	// ResponseHeader is a response header, as the client received it.
	ResponseHeader
	// FilterState is a value filters set on the exchange.
	FilterState
)

// Dynamic is a field named by its source: "request_header.NAME",
// "response_header.NAME" or "filter_state.KEY".
type Dynamic struct {
	Source Source
	Name   string
}

// MaxDynamic bounds the dynamic fields of one log.
const MaxDynamic = 64

var dynamicPrefixes = []struct {
	prefix string
	source Source
}{{"request_header.", RequestHeader}, {"response_header.", ResponseHeader}, {"filter_state.", FilterState}}

// ParseDynamic reads a dynamic field name; ok is false for any other name.
// Header names are case-insensitive; filter state keys are not.
func ParseDynamic(field string) (d Dynamic, ok bool) {
	for _, p := range dynamicPrefixes {
		if name, found := strings.CutPrefix(field, p.prefix); found && name != "" {
			if p.source != FilterState {
				name = strings.ToLower(name)
			}
			return Dynamic{Source: p.source, Name: name}, true
		}
	}
	return Dynamic{}, false
}

// field writes one field's JSON value.
type field struct {
	name  string
	write func(b []byte, e *Entry) []byte
}

var fieldWriters = map[string]func(b []byte, e *Entry) []byte{
	"start_time": func(b []byte, e *Entry) []byte {
		return appendString(b, e.Start.UTC().AppendFormat(nil, time.RFC3339Nano))
	},
	"request_id":                func(b []byte, e *Entry) []byte { return appendString(b, e.RequestID) },
	"downstream_remote_address": func(b []byte, e *Entry) []byte { return appendString(b, e.RemoteAddr) },
	"method":                    func(b []byte, e *Entry) []byte { return appendString(b, e.Method) },
	"authority":                 func(b []byte, e *Entry) []byte { return appendString(b, e.Authority) },
	"path":                      func(b []byte, e *Entry) []byte { return appendString(b, e.Path) },
	"protocol":                  func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.Protocol)) },
	"status":                    func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, int64(e.Status), 10) },
	"response_flags": func(b []byte, e *Entry) []byte {
		b = append(b, '"')
		b = e.Flags.AppendTo(b)
		return append(b, '"')
	},
	"bytes_received": func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, e.BytesReceived, 10) },
	"bytes_sent":     func(b []byte, e *Entry) []byte { return strconv.AppendInt(b, e.BytesSent, 10) },
	"duration_ms": func(b []byte, e *Entry) []byte {
		return strconv.AppendFloat(b, float64(e.Duration.Microseconds())/1000, 'f', 3, 64)
	},
	"upstream_cluster": func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.UpstreamClust)) },
	"upstream_host":    func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.UpstreamHost)) },
	"route_name":       func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.Route)) },
	"virtual_host":     func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.VirtualHost)) },
	"listener":         func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.Listener)) },
	"user_agent":       func(b []byte, e *Entry) []byte { return appendString(b, e.UserAgent) },
	"x_forwarded_for":  func(b []byte, e *Entry) []byte { return appendString(b, e.XForwardedFor) },
	"details":          func(b []byte, e *Entry) []byte { return appendString(b, []byte(e.Details)) },
}

// Logger is an asynchronous access log.
type Logger struct {
	fields  []field
	dynamic []Dynamic
	queue   chan *Entry
	pool    sync.Pool
	w       *bufio.Writer
	closer  io.Closer
	dropped func()
	// stop is closed by Close. The queue itself is never closed, so a
	// request that outlives its logger can still call Log.
	stop      chan struct{}
	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

// Open starts a logger writing to path ("stdout", "stderr" or a file,
// appended to) with the given fields. dropped is called for every entry
// dropped because the queue was full; it may be nil.
func Open(path string, fields []string, queueLen int, dropped func()) (*Logger, error) {
	var out io.Writer
	var closer io.Closer
	switch path {
	case "stdout":
		out = os.Stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening access log: %w", err)
		}
		out, closer = f, f
	}
	return New(out, closer, fields, queueLen, dropped)
}

// New starts a logger writing to w. closer, if not nil, is closed by Close.
func New(w io.Writer, closer io.Closer, fields []string, queueLen int, dropped func()) (*Logger, error) {
	if queueLen <= 0 {
		queueLen = 4096
	}
	l := &Logger{
		queue:   make(chan *Entry, queueLen),
		w:       bufio.NewWriterSize(w, 64<<10),
		closer:  closer,
		dropped: dropped,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.pool.New = func() any { return new(Entry) }
	for _, name := range fields {
		if d, ok := ParseDynamic(name); ok {
			if len(l.dynamic) == MaxDynamic {
				return nil, fmt.Errorf("more than %d header and filter state fields", MaxDynamic)
			}
			i := len(l.dynamic)
			l.dynamic = append(l.dynamic, d)
			l.fields = append(l.fields, field{name: name, write: func(b []byte, e *Entry) []byte {
				if e.set&(1<<i) == 0 {
					return append(b, "null"...)
				}
				return appendString(b, e.values[i])
			}})
			continue
		}
		fw, ok := fieldWriters[name]
		if !ok {
			return nil, fmt.Errorf("unknown access log field %q", name)
		}
		l.fields = append(l.fields, field{name: name, write: fw})
	}
	go l.run()
	return l, nil
}

// Dynamic returns the header and filter state fields the log writes, in
// order: the i-th is set with Entry.SetDynamic(i, ...). The slice must not
// be changed.
func (l *Logger) Dynamic() []Dynamic { return l.dynamic }

// Acquire returns an empty entry.
func (l *Logger) Acquire() *Entry {
	e := l.pool.Get().(*Entry)
	e.reset()
	return e
}

// Log queues e for writing and takes ownership of it. It never blocks.
// After Close, entries are dropped.
func (l *Logger) Log(e *Entry) {
	select {
	case <-l.stop:
		l.pool.Put(e)
		return
	default:
	}
	select {
	case l.queue <- e:
	default:
		l.pool.Put(e)
		if l.dropped != nil {
			l.dropped()
		}
	}
}

func (l *Logger) run() {
	defer close(l.done)
	var b []byte
	for {
		select {
		case e := <-l.queue:
			b = l.write(b, e)
		case <-l.stop:
			for {
				select {
				case e := <-l.queue:
					b = l.write(b, e)
				default:
					_ = l.w.Flush()
					return
				}
			}
		}
	}
}

func (l *Logger) write(b []byte, e *Entry) []byte {
	b = l.format(b[:0], e)
	l.pool.Put(e)
	_, _ = l.w.Write(b)
	if len(l.queue) == 0 {
		_ = l.w.Flush()
	}
	return b
}

func (l *Logger) format(b []byte, e *Entry) []byte {
	b = append(b, '{')
	for i, f := range l.fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, '"', ':')
		b = f.write(b, e)
	}
	return append(b, '}', '\n')
}

// Close writes what is queued and stops the logger. Entries logged after
// Close are dropped; closing twice is harmless.
func (l *Logger) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		if l.closer != nil {
			l.closeErr = l.closer.Close()
		}
	})
	return l.closeErr
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires.
func appendString(b, s []byte) []byte {
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
