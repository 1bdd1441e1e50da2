package telemetry

import (
	"context"
	"io"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/wasmgate/wasmgate/config"
)

// streamWriter writes one record per line to a stream. It buffers whole
// lines and hands them over in one Write, so a file rotated between two
// writes never splits a record.
type streamWriter struct {
	out    io.Writer
	buf    []byte
	closer io.Closer
}

// streamBuffer is the size past which a batch is written out before it
// ends.
const streamBuffer = 64 << 10

var _ writer = (*streamWriter)(nil)

func newStreamWriter(w io.Writer) *streamWriter {
	return &streamWriter{out: w, buf: make([]byte, 0, streamBuffer)}
}

// newFileWriter writes to a file that lumberjack rotates by size and age,
// gzipping rotated files when asked. MaxAge is rounded up to whole days,
// lumberjack's unit.
func newFileWriter(c *config.FileSink) *streamWriter {
	size := c.MaxSizeMB
	if size == 0 {
		size = 100
	}
	days := 0
	if c.MaxAge > 0 {
		days = int((c.MaxAge.D() + 24*time.Hour - 1) / (24 * time.Hour))
	}
	lj := &lumberjack.Logger{
		Filename: c.Path, MaxSize: size, MaxAge: days, MaxBackups: c.MaxBackups, Compress: c.Compress,
	}
	w := newStreamWriter(lj)
	w.closer = lj
	return w
}

func (w *streamWriter) write(ctx context.Context, _ *Record, line []byte) error {
	if len(w.buf) > 0 && len(w.buf)+len(line) >= streamBuffer {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, line...)
	w.buf = append(w.buf, '\n')
	return nil
}

// appendRecord encodes r straight into the batch, sparing the copy that
// write makes, and writes the batch out once it reaches streamBuffer.
func (w *streamWriter) appendRecord(ctx context.Context, enc encoder, r *Record) error {
	w.buf = append(enc.encode(w.buf, r), '\n')
	if len(w.buf) >= streamBuffer {
		return w.flush(ctx)
	}
	return nil
}

func (w *streamWriter) flush(context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.out.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// reset forgets what a failed flush left.
func (w *streamWriter) reset() { w.buf = w.buf[:0] }

func (w *streamWriter) close() error {
	err := w.flush(context.Background())
	if w.closer != nil {
		if cerr := w.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
