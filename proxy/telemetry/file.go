package telemetry

import (
	"bufio"
	"context"
	"io"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/wasmgate/wasmgate/config"
)

// streamWriter writes one record per line to a stream through a buffer.
type streamWriter struct {
	out    io.Writer
	bw     *bufio.Writer
	closer io.Closer
}

var _ writer = (*streamWriter)(nil)

func newStreamWriter(w io.Writer) *streamWriter {
	return &streamWriter{out: w, bw: bufio.NewWriterSize(w, 64<<10)}
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

func (w *streamWriter) write(_ context.Context, _ *Record, line []byte) error {
	_, _ = w.bw.Write(line)
	return w.bw.WriteByte('\n')
}

func (w *streamWriter) flush(context.Context) error { return w.bw.Flush() }

// reset forgets what a failed flush left in the buffer.
func (w *streamWriter) reset() { w.bw.Reset(w.out) }

func (w *streamWriter) close() error {
	err := w.bw.Flush()
	if w.closer != nil {
		if cerr := w.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
