package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/buildinfo"
)

// Pipeline routes records to sinks. Build it with New from a validated
// configuration; Reconfigure (or Prepare and Commit) changes its sinks and
// routes while it runs. It is safe for concurrent use.
type Pipeline struct {
	opts   options
	tab    atomic.Pointer[table]
	pool   sync.Pool
	closed atomic.Bool

	// mu is held from Prepare to Commit or Discard, and by Shutdown:
	// changes happen one at a time, each against the table in force.
	mu sync.Mutex
	// retiring are sinks a reconfiguration removed, still draining;
	// retired counts the drops of those that are done. Both under rmu.
	rmu      sync.Mutex
	retiring map[*sink]struct{}
	retired  uint64
	drained  sync.WaitGroup

	stopWarn  chan struct{}
	warnDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// table is one configuration's sinks and the sinks of each kind. It is
// never changed once published: a reconfiguration publishes a new one.
type table struct {
	sinks  []*sink
	routes [numKinds][]*sink
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
	retire       time.Duration
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

// WithRetireTimeout bounds how long a sink that a reconfiguration removed
// or changed may take to write what it holds; the default is 5s.
func WithRetireTimeout(d time.Duration) Option { return func(o *options) { o.retire = d } }

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
		flushEvery: 10 * time.Millisecond, retire: 5 * time.Second,
	}
	for _, f := range opt {
		f(&o)
	}
	if o.hostname == "" {
		o.hostname, _ = os.Hostname()
	}
	p := &Pipeline{opts: o, stopWarn: make(chan struct{}), warnDone: make(chan struct{}), retiring: map[*sink]struct{}{}}
	p.pool.New = func() any { return new(Record) }
	p.tab.Store(&table{})
	c, err := p.Prepare(cfg)
	if err != nil {
		return nil, err
	}
	c.Commit()
	go p.warn()
	return p, nil
}

// Change is a reconfiguration of a pipeline, prepared but not yet in
// force: Commit puts it in force, Discard drops it. Exactly one of them
// must be called, soon: from Prepare until then, other changes and
// Shutdown wait. A nil Change does nothing.
type Change struct {
	p     *Pipeline
	next  *table
	fresh []*sink // built for the change, not started
}

// Prepare builds what cfg, validated, needs beyond the sinks the pipeline
// runs: a configured sink whose settings are those of a running sink of
// the same name is kept as it is, with its queue and connection, whatever
// kinds now go to it; others are built (not started). A sink that cannot
// be built is an error naming its field path, and nothing changes. A nil
// pipeline prepares a nil Change.
func (p *Pipeline) Prepare(cfg *config.Telemetry) (*Change, error) {
	if p == nil {
		return nil, nil
	}
	p.mu.Lock()
	cur := p.tab.Load()
	c := &Change{p: p, next: &table{}}
	if cfg == nil {
		return c, nil
	}
	byName := map[string]*sink{}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		var s *sink
		for _, old := range cur.sinks {
			if old.name == sc.Name && reflect.DeepEqual(old.cfg, *sc) {
				s = old
			}
		}
		if s == nil {
			var err error
			if s, err = p.newSink(sc); err != nil {
				c.Discard()
				return nil, fmt.Errorf("telemetry.sinks[%d] (%s): %w", i, sc.Name, err)
			}
			c.fresh = append(c.fresh, s)
		}
		c.next.sinks = append(c.next.sinks, s)
		byName[sc.Name] = s
	}
	for k := range numKinds {
		for i, name := range cfg.SinksFor(k.String()) {
			s, ok := byName[name]
			if !ok {
				c.Discard()
				return nil, fmt.Errorf("telemetry.%s[%d]: unknown sink %q", k, i, name)
			}
			c.next.routes[k] = append(c.next.routes[k], s)
		}
	}
	return c, nil
}

// Commit starts the change's new sinks and routes records by it from now
// on. The sinks it no longer has stop taking records and write what they
// hold in the background, for at most the retire timeout (see
// WithRetireTimeout); what is left then is dropped and counted. After
// Shutdown, Commit only discards.
func (c *Change) Commit() {
	if c == nil {
		return
	}
	p := c.p
	defer p.mu.Unlock()
	if p.closed.Load() {
		c.discard()
		return
	}
	for _, s := range c.fresh {
		go s.run()
	}
	old := p.tab.Swap(c.next)
	for _, s := range old.sinks {
		if !slices.Contains(c.next.sinks, s) {
			p.retire(s)
		}
	}
}

// Discard drops the change: the sinks it built are closed unused.
func (c *Change) Discard() {
	if c == nil {
		return
	}
	c.discard()
	c.p.mu.Unlock()
}

func (c *Change) discard() {
	for _, s := range c.fresh {
		_ = s.w.close()
	}
	c.fresh = nil
}

// Reconfigure prepares cfg and commits it: see Prepare and Commit.
func (p *Pipeline) Reconfigure(cfg *config.Telemetry) error {
	c, err := p.Prepare(cfg)
	if err != nil {
		return err
	}
	c.Commit()
	return nil
}

// retire drains a sink that is no longer routed to. An Emit that loaded
// the old routes just before the swap may still queue a record for it:
// the sink keeps taking records for a grace of flushEvery before it
// stops, and its drain writes them.
func (p *Pipeline) retire(s *sink) {
	p.rmu.Lock()
	p.retiring[s] = struct{}{}
	p.rmu.Unlock()
	p.drained.Add(1)
	go func() {
		defer p.drained.Done()
		time.Sleep(p.opts.flushEvery)
		close(s.stop)
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.retire)
		defer cancel()
		if err := s.drain(ctx); err != nil {
			p.opts.logger.Warn("closing a removed telemetry sink", zap.String("sink", s.name), zap.Error(err))
		}
		p.rmu.Lock()
		delete(p.retiring, s)
		p.retired += s.droppedTotal()
		p.rmu.Unlock()
	}()
}

func (p *Pipeline) newSink(sc *config.TelemetrySink) (*sink, error) {
	q := sc.QueueRecords
	if q == 0 {
		q = 4096
	}
	s := &sink{name: sc.Name, cfg: *sc, queue: make(chan *Record, q), p: p, stop: make(chan struct{}), done: make(chan struct{})}
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
	s.app, _ = s.w.(recordAppender)
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
func (p *Pipeline) Enabled(k Kind) bool {
	return p != nil && len(p.tab.Load().routes[k]) > 0 && !p.closed.Load()
}

// Emit hands r to every sink of its kind and takes ownership of it. It
// never blocks: a sink whose queue is full drops the record and counts it.
// It does not allocate. After Shutdown, records are released unsent.
func (p *Pipeline) Emit(r *Record) {
	sinks := p.tab.Load().routes[r.Kind]
	if len(sinks) == 0 || p.closed.Load() {
		p.pool.Put(r)
		return
	}
	// A plain store: an atomic one would wait for the record's cache
	// line, last written by a sink on another core.
	r.refs = int32(len(sinks))
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
	if atomic.LoadInt32(&r.refs) == 1 || atomic.AddInt32(&r.refs, -1) == 0 {
		p.pool.Put(r)
	}
}

// Dropped is the number of records every sink dropped so far, the sinks
// a reconfiguration removed included.
func (p *Pipeline) Dropped() uint64 {
	var n uint64
	for _, s := range p.tab.Load().sinks {
		n += s.droppedTotal()
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	for s := range p.retiring {
		n += s.droppedTotal()
	}
	return n + p.retired
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
			for _, s := range p.tab.Load().sinks {
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
// ends; records still queued then are dropped and counted. Sinks that a
// reconfiguration removed finish their drain within ctx too. It returns
// the first error closing a sink. Calling it again returns the same
// result.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed.Store(true)
		p.mu.Unlock()
		close(p.stopWarn)
		<-p.warnDone
		sinks := p.tab.Load().sinks
		for _, s := range sinks {
			close(s.stop)
		}
		errs := make([]error, len(sinks))
		var wg sync.WaitGroup
		for i, s := range sinks {
			wg.Go(func() { errs[i] = s.drain(ctx) })
		}
		wg.Wait()
		retired := make(chan struct{})
		go func() { p.drained.Wait(); close(retired) }()
		select {
		case <-retired:
		case <-ctx.Done():
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
