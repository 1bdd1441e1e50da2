package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/buildinfo"
)

// Pipeline routes records to sinks. Build it with New from a validated
// configuration; it is safe for concurrent use.
type Pipeline struct {
	opts   options
	sinks  []*sink
	routes [numKinds][]*sink
	pool   sync.Pool
	closed atomic.Bool

	stopWarn  chan struct{}
	warnDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type options struct {
	logger       *zap.Logger
	hostname     string
	stdout       io.Writer
	writeTimeout time.Duration
	backoffMin   time.Duration
	backoffMax   time.Duration
	warnEvery    time.Duration
	flushEvery   time.Duration
}

// Option changes a Pipeline's defaults.
type Option func(*options)

// WithLogger logs the rate-limited warnings of sinks that drop records.
// The default logs nothing.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithHostname sets the HOSTNAME of syslog messages; the default is the
// machine's host name.
func WithHostname(h string) Option { return func(o *options) { o.hostname = h } }

// WithStdout replaces the standard output of stdout sinks.
func WithStdout(w io.Writer) Option { return func(o *options) { o.stdout = w } }

// WithWriteTimeout bounds one batch's write and flush; the default is 5s.
func WithWriteTimeout(d time.Duration) Option { return func(o *options) { o.writeTimeout = d } }

// WithBackoff sets the wait after a failed write, doubling from min to
// max; the default is 100ms to 30s.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithFlushEvery sets how long a sink naps after writing a batch before
// it looks at its queue again, the longest a record waits in a busy
// queue; the default is 10ms. A shorter nap writes smaller batches, at
// more CPU per record.
func WithFlushEvery(d time.Duration) Option { return func(o *options) { o.flushEvery = d } }

// WithWarnEvery sets how often at most a sink that drops records says so;
// the default is 10s.
func WithWarnEvery(d time.Duration) Option { return func(o *options) { o.warnEvery = d } }

// New builds the pipeline of a validated telemetry configuration and
// starts its sinks. A nil configuration gives a pipeline with no sinks,
// whose Emit only releases records. Sinks connect lazily: a receiver that
// is away at start is retried with backoff, not an error.
func New(cfg *config.Telemetry, opt ...Option) (*Pipeline, error) {
	o := options{
		logger: zap.NewNop(), stdout: os.Stdout, writeTimeout: 5 * time.Second,
		backoffMin: 100 * time.Millisecond, backoffMax: 30 * time.Second, warnEvery: 10 * time.Second,
		flushEvery: 10 * time.Millisecond,
	}
	for _, f := range opt {
		f(&o)
	}
	if o.hostname == "" {
		o.hostname, _ = os.Hostname()
	}
	p := &Pipeline{opts: o, stopWarn: make(chan struct{}), warnDone: make(chan struct{})}
	p.pool.New = func() any { return new(Record) }
	if cfg == nil {
		close(p.warnDone)
		return p, nil
	}
	byName := map[string]*sink{}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		s, err := p.newSink(sc)
		if err != nil {
			for _, s := range p.sinks {
				_ = s.w.close()
			}
			return nil, fmt.Errorf("telemetry.sinks[%d] (%s): %w", i, sc.Name, err)
		}
		p.sinks = append(p.sinks, s)
		byName[sc.Name] = s
	}
	for k := range numKinds {
		for _, name := range cfg.SinksFor(k.String()) {
			s, ok := byName[name]
			if !ok {
				return nil, fmt.Errorf("telemetry.%s: unknown sink %q", k, name)
			}
			p.routes[k] = append(p.routes[k], s)
		}
	}
	for _, s := range p.sinks {
		go s.run()
	}
	go p.warn()
	return p, nil
}

func (p *Pipeline) newSink(sc *config.TelemetrySink) (*sink, error) {
	q := sc.QueueRecords
	if q == 0 {
		q = 4096
	}
	s := &sink{name: sc.Name, queue: make(chan *Record, q), p: p, stop: make(chan struct{}), done: make(chan struct{})}
	s.enc = &jsonEncoder{}
	if sc.Format == "cef" {
		s.enc = cefEncoder{version: buildinfo.Version()}
	}
	var err error
	switch sc.Type {
	case "file":
		s.w = newFileWriter(sc.File)
	case "stdout":
		s.w = newStreamWriter(p.opts.stdout)
	case "syslog":
		s.w, err = newSyslogWriter(sc.Syslog, p.opts.hostname)
	case "otlp":
		s.w, err = newOTLPWriter(sc.OTLP, p.opts.hostname)
	default:
		err = fmt.Errorf("unknown sink type %q", sc.Type)
	}
	return s, err
}

// Acquire returns an empty record of kind k.
func (p *Pipeline) Acquire(k Kind) *Record {
	r := p.pool.Get().(*Record)
	r.reset(k)
	return r
}

// Release returns a record that is not emitted.
func (p *Pipeline) Release(r *Record) { p.pool.Put(r) }

// Enabled reports whether records of kind k go anywhere, so the caller
// can skip filling one.
func (p *Pipeline) Enabled(k Kind) bool { return p != nil && len(p.routes[k]) > 0 && !p.closed.Load() }

// Emit hands r to every sink of its kind and takes ownership of it. It
// never blocks: a sink whose queue is full drops the record and counts it.
// It does not allocate. After Shutdown, records are released unsent.
func (p *Pipeline) Emit(r *Record) {
	sinks := p.routes[r.Kind]
	if len(sinks) == 0 || p.closed.Load() {
		p.pool.Put(r)
		return
	}
	r.refs.Store(int32(len(sinks)))
	for _, s := range sinks {
		select {
		case s.queue <- r:
		default:
			s.drop(r.Kind, dropQueueFull, 1)
			p.unref(r)
		}
	}
}

func (p *Pipeline) unref(r *Record) {
	// The last holder sees 1 and needs no atomic write: nobody else
	// holds the record any more.
	if r.refs.Load() == 1 || r.refs.Add(-1) == 0 {
		p.pool.Put(r)
	}
}

// Dropped is the number of records every sink dropped so far.
func (p *Pipeline) Dropped() uint64 {
	var n uint64
	for _, s := range p.sinks {
		n += s.droppedTotal()
	}
	return n
}

// warn logs, at most once per sink every warnEvery, how many records a
// sink dropped since it last said so.
func (p *Pipeline) warn() {
	defer close(p.warnDone)
	t := time.NewTicker(p.opts.warnEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stopWarn:
			return
		case <-t.C:
			for _, s := range p.sinks {
				n := s.droppedTotal()
				if n > s.warned {
					p.opts.logger.Warn("telemetry sink is dropping records",
						zap.String("sink", s.name), zap.Uint64("dropped", n-s.warned), zap.Duration("in", p.opts.warnEvery))
					s.warned = n
				}
			}
		}
	}
}

// Shutdown stops taking records and writes what the sinks hold until ctx
// ends; records still queued then are dropped and counted. It returns the
// first error closing a sink. Calling it again returns the same result.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.stopWarn)
		<-p.warnDone
		for _, s := range p.sinks {
			close(s.stop)
		}
		errs := make([]error, len(p.sinks))
		var wg sync.WaitGroup
		for i, s := range p.sinks {
			wg.Go(func() { errs[i] = s.drain(ctx) })
		}
		wg.Wait()
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
