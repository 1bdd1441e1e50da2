package telemetry

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// writer delivers records to one receiver. Only its sink's goroutine
// calls it, so it needs no locking.
type writer interface {
	// write sends or buffers one record; line is the record as the sink's
	// format encodes it.
	write(ctx context.Context, r *Record, line []byte) error
	// flush sends what write buffered.
	flush(ctx context.Context) error
	// reset drops the connection (if any) after an error; the next write
	// connects again.
	reset()
	// close releases the writer for good.
	close() error
}

// recordAppender is a writer that encodes records into its own buffer
// itself, sparing a copy: the sink calls appendRecord instead of write.
type recordAppender interface {
	appendRecord(ctx context.Context, enc encoder, r *Record) error
}

// encoder writes a record in a format.
type encoder interface {
	encode(b []byte, r *Record) []byte
}

// Drop reasons.
const (
	// dropQueueFull: the sink's queue was full when the record came.
	dropQueueFull = iota
	// dropSendFailed: the record was in a batch the receiver did not
	// take (it may have partly arrived).
	dropSendFailed
	// dropShutdown: the record was still queued when the drain timeout
	// ran out.
	dropShutdown
	numReasons
)

var reasonNames = [numReasons]string{"queue_full", "send_failed", "shutdown"}

// maxBatch bounds the records written between two flushes.
const maxBatch = 512

// sink is one destination: a bounded queue and the goroutine that empties
// it into a writer.
type sink struct {
	name  string
	cfg   config.TelemetrySink
	queue chan *Record
	enc   encoder
	w     writer
	app   recordAppender // w, when it appends records itself
	p     *Pipeline

	sent    [numKinds]atomic.Uint64
	dropped [numKinds][numReasons]atomic.Uint64
	errors  atomic.Uint64
	// warned is the drop total at the last warning.
	warned uint64

	// pending counts the records written since the last good flush, by
	// kind: they are lost if the flush fails.
	pending [numKinds]uint64
	buf     []byte
	stop    chan struct{}
	done    chan struct{}
}

func (s *sink) drop(k Kind, reason int, n uint64) {
	s.dropped[k][reason].Add(n)
}

// droppedTotal is the sum of every drop counter.
func (s *sink) droppedTotal() uint64 {
	var n uint64
	for k := range s.dropped {
		for r := range s.dropped[k] {
			n += s.dropped[k][r].Load()
		}
	}
	return n
}

// run empties the queue until stop is closed. It sleeps on the queue
// while it is empty; once woken, it writes what is queued, flushes, and
// naps for flushEvery before looking again, so that under load requests
// queue records without waking it and it writes them in batches. A failed
// write or flush counts the batch as dropped and waits a backoff.
func (s *sink) run() {
	defer close(s.done)
	var backoff time.Duration
	nap := time.NewTimer(time.Hour)
	nap.Stop()
	for {
		var r *Record
		select {
		case r = <-s.queue:
		case <-s.stop:
			return
		}
		for r != nil {
			if s.batch(context.Background(), r) {
				backoff = 0
				nap.Reset(s.p.opts.flushEvery)
			} else {
				backoff = nextBackoff(backoff, s.p.opts.backoffMin, s.p.opts.backoffMax)
				nap.Reset(backoff)
			}
			select {
			case <-nap.C:
			case <-s.stop:
				nap.Stop()
				return
			}
			r = nil
			select {
			case r = <-s.queue:
			default:
			}
		}
	}
}

func nextBackoff(cur, lo, hi time.Duration) time.Duration {
	if cur == 0 {
		return lo
	}
	return min(cur*2, hi)
}

// flush flushes the writer and counts the pending records as sent, or as
// dropped when it fails.
func (s *sink) flush(ctx context.Context) bool {
	if err := s.w.flush(ctx); err != nil {
		return s.fail()
	}
	for k := range s.pending {
		s.sent[k].Add(s.pending[k])
		s.pending[k] = 0
	}
	return true
}

// batch writes r and whatever else is queued, flushing every maxBatch
// records and at the end. It reports whether the receiver took them.
func (s *sink) batch(ctx context.Context, r *Record) bool {
	ctx, cancel := context.WithTimeout(ctx, s.p.opts.writeTimeout)
	defer cancel()
	for n := 1; ; n++ {
		if !s.put(ctx, r) {
			return s.fail()
		}
		if n%maxBatch == 0 && !s.flush(ctx) {
			return false
		}
		select {
		case r = <-s.queue:
			continue
		default:
		}
		return s.flush(ctx)
	}
}

// put encodes and writes one record and releases it.
func (s *sink) put(ctx context.Context, r *Record) bool {
	var err error
	if s.app != nil {
		err = s.app.appendRecord(ctx, s.enc, r)
	} else {
		s.buf = s.enc.encode(s.buf[:0], r)
		err = s.w.write(ctx, r, s.buf)
	}
	s.pending[r.Kind]++
	s.p.unref(r)
	return err == nil
}

// fail counts the pending records as dropped and drops the connection.
func (s *sink) fail() bool {
	s.errors.Add(1)
	for k := range s.pending {
		if s.pending[k] > 0 {
			s.drop(Kind(k), dropSendFailed, s.pending[k])
			s.pending[k] = 0
		}
	}
	s.w.reset()
	return false
}

// drain writes what is queued until the queue is empty or ctx ends; what
// is left is counted as dropped. Then it closes the writer.
func (s *sink) drain(ctx context.Context) error {
	<-s.done
	for ctx.Err() == nil {
		select {
		case r := <-s.queue:
			if !s.batch(ctx, r) && ctx.Err() == nil {
				// The receiver is away: wait a little and try the rest.
				select {
				case <-time.After(s.p.opts.backoffMin):
				case <-ctx.Done():
				}
			}
			continue
		default:
		}
		break
	}
	for {
		select {
		case r := <-s.queue:
			s.drop(r.Kind, dropShutdown, 1)
			s.p.unref(r)
			continue
		default:
		}
		break
	}
	return s.w.close()
}
