package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// ErrTargetDown is wrapped by the error Run returns when the run ended early
// because every request failed for Config.DownAfter, or because no
// connection could be made at the start.
var ErrTargetDown = errors.New("target down")

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed   time.Duration // since the start of measurement; negative during warm-up
	Responses int64         // measured responses so far
	Errors    int64         // measured failed requests so far: no response, or a 5xx status
	RPS       float64       // responses per second over the last interval, warm-up included
	P50, P99  time.Duration // latency percentiles of the measured part so far
}

// requester sends requests for one worker. Its methods other than
// interrupt are called from that worker's goroutine only.
type requester interface {
	// connect sets up the worker's connections before the run starts, so
	// that a target that refuses fails fast and dial time does not land
	// in the first latencies.
	connect(ctx context.Context) error
	// do sends one request to t and reads the whole response, giving up
	// at deadline. Its error wraps a *dialError when no connection could
	// be made.
	do(ctx context.Context, t *target, deadline time.Time) (status int, err error)
	// interrupt makes a do in progress return soon and later ones fail.
	// It is safe to call from any goroutine.
	interrupt()
	// close releases the connections.
	close()
}

// endpoint is one address the run dials, with its TLS configuration (nil
// for cleartext).
type endpoint struct {
	addr string
	tls  *tls.Config
}

// target is one URL, prepared for the run.
type target struct {
	url      *url.URL
	weight   int
	endpoint int           // index in runner.endpoints
	h1       []byte        // the serialized HTTP/1.1 request
	h1Close  []byte        // the same with Connection: close
	req      *http.Request // the template of HTTP/2 and HTTP/3 requests
}

// runner is the state of one run shared, read-only once workers start,
// by its workers.
type runner struct {
	cfg       *Config
	targets   []*target
	endpoints []*endpoint
	dialer    net.Dialer

	start        time.Time // the warm-up begins
	measureStart time.Time // measurement begins
	stopAt       time.Time // no request starts at or after; zero when bounded by count only

	ctx     context.Context // canceled by a hard stop
	cancel  context.CancelFunc
	soft    chan struct{} // closed at stopAt: sleeping workers return
	stopped atomic.Bool   // set by a hard stop
}

// worker is one closed- or open-loop stream of requests.
type worker struct {
	r   *runner
	req requester
	st  *stats

	quota    int64 // measured requests left; negative when unbounded
	interval time.Duration
	next     time.Time // open loop: when the next request is due
	timer    *time.Timer
	backoff  time.Duration
	wrr      []int         // smooth weighted round robin state, by target
	timeout  time.Duration // Config.timeout()
	hard     time.Time     // no request may outlive this; zero when unbounded
}

// Run sends the load cfg describes and returns its report. It returns
// when the run has ended: Duration and Requests are reached, ctx is
// canceled, or the target is down. A run that ended early returns its
// partial report together with an error saying why; only an invalid
// configuration returns a nil report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid bench config: %w", err)
	}
	r, err := newRunner(&cfg)
	if err != nil {
		return nil, err
	}
	return r.run(ctx)
}

func newRunner(cfg *Config) (*runner, error) {
	r := &runner{cfg: cfg, soft: make(chan struct{})}
	r.dialer.Timeout = cfg.timeout()
	eps := map[string]int{}
	for i, t := range cfg.Targets {
		u, err := parseTarget(t.URL, cfg.protocol())
		if err != nil {
			return nil, fmt.Errorf("targets[%d].url: %w", i, err)
		}
		addr := hostPort(u)
		key := u.Scheme + "://" + addr + "/" + u.Hostname()
		idx, ok := eps[key]
		if !ok {
			ep := &endpoint{addr: addr}
			if u.Scheme == "https" {
				ep.tls = r.tlsConfig(u.Hostname())
			}
			idx = len(r.endpoints)
			eps[key] = idx
			r.endpoints = append(r.endpoints, ep)
		}
		tg := &target{url: u, weight: max(t.Weight, 1), endpoint: idx}
		if tg.h1, err = serializeH1(cfg, u, false); err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		if tg.h1Close, err = serializeH1(cfg, u, true); err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		if tg.req, err = templateRequest(cfg, u); err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		r.targets = append(r.targets, tg)
	}
	return r, nil
}

func (r *runner) tlsConfig(host string) *tls.Config {
	var c *tls.Config
	if r.cfg.TLS != nil {
		c = r.cfg.TLS.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	switch r.cfg.protocol() {
	case HTTP2:
		c.NextProtos = []string{"h2"}
	case HTTP3:
		c.NextProtos = []string{"h3"}
	default:
		c.NextProtos = []string{"http/1.1"}
	}
	return c
}

// serializeH1 writes the HTTP/1.1 request for u once, with fasthttp.
func serializeH1(cfg *Config, u *url.URL, closeConn bool) ([]byte, error) {
	var req fasthttp.Request
	req.Header.DisableNormalizing()
	req.SetRequestURI(u.String())
	req.Header.SetMethod(cfg.method())
	req.Header.SetUserAgent("wasmgate-bench")
	for _, h := range cfg.Headers {
		if strings.EqualFold(h.Key, "Host") {
			req.Header.SetHost(h.Value)
			req.UseHostHeader = true
			continue
		}
		req.Header.Add(h.Key, h.Value)
	}
	if len(cfg.Body) > 0 {
		req.SetBodyRaw(cfg.Body)
	}
	req.SetConnectionClose()
	if !closeConn {
		req.Header.ResetConnectionClose()
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := req.Write(w); err != nil {
		return nil, fmt.Errorf("serializing request: %w", err)
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("serializing request: %w", err)
	}
	return buf.Bytes(), nil
}

func templateRequest(cfg *Config, u *url.URL) (*http.Request, error) {
	req, err := http.NewRequest(cfg.method(), u.String(), http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("User-Agent", "wasmgate-bench")
	for _, h := range cfg.Headers {
		if strings.EqualFold(h.Key, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Key, h.Value)
	}
	req.ContentLength = int64(len(cfg.Body))
	return req, nil
}

func (r *runner) newRequester(st *stats, shared any) requester {
	switch r.cfg.protocol() {
	case HTTP2:
		return newH2Client(r, st, shared.(*h2Group))
	case HTTP3:
		return newH3Client(r, st, shared.(*h3Group))
	default:
		return newH1Client(r, st)
	}
}

func (r *runner) run(parent context.Context) (*Report, error) {
	cfg := r.cfg
	r.ctx, r.cancel = context.WithCancel(parent)
	defer r.cancel()

	conns, streams := cfg.connections(), cfg.streams()
	n := conns * streams
	expectSeconds := int((cfg.Duration + cfg.grace()) / time.Second)
	if cfg.Duration == 0 {
		expectSeconds = 600
	}
	workers := make([]*worker, n)
	var groups []groupCloser
	var shared any
	for i := range workers {
		st := newStats(expectSeconds, cfg.Progress != nil)
		if i%streams == 0 {
			shared = r.newGroup(st)
			if g, ok := shared.(groupCloser); ok {
				groups = append(groups, g)
			}
		}
		w := &worker{r: r, st: st, req: r.newRequester(st, shared), quota: -1, wrr: make([]int, len(r.targets))}
		if cfg.Requests > 0 {
			w.quota = cfg.Requests / int64(n)
			if int64(i) < cfg.Requests%int64(n) {
				w.quota++
			}
		}
		if cfg.Rate > 0 {
			w.interval = time.Duration(float64(time.Second) * float64(n) / cfg.Rate)
			w.timer = time.NewTimer(time.Hour)
			w.timer.Stop()
		}
		// Spread where each worker starts in the weighted order.
		for k := 0; k < i%len(r.targets); k++ {
			w.pick()
		}
		workers[i] = w
	}
	defer func() {
		for _, w := range workers {
			w.req.close()
		}
		for _, g := range groups {
			g.close()
		}
	}()

	// Connect first: a target that refuses fails here, at once.
	if err := r.connectAll(workers); err != nil {
		rep := r.report(workers, time.Now(), 0)
		rep.Errors++
		rep.ErrorKinds[classify(err).String()]++
		rep.Aborted = err.Error()
		return rep, fmt.Errorf("%w: cannot connect: %w", ErrTargetDown, err)
	}

	r.start = time.Now()
	r.measureStart = r.start.Add(cfg.Warmup)
	if cfg.Duration > 0 {
		r.stopAt = r.measureStart.Add(cfg.Duration)
	}
	var wg sync.WaitGroup
	for i, w := range workers {
		if w.interval > 0 {
			w.next = r.start.Add(w.interval * time.Duration(i) / time.Duration(n))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop()
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	abortErr := r.monitor(workers, finished)
	<-finished
	end := time.Now()
	elapsed := end.Sub(r.measureStart)
	if elapsed < 0 {
		elapsed = 0
	}
	rep := r.report(workers, end, elapsed)
	if abortErr != nil {
		rep.Aborted = abortErr.Error()
	}
	return rep, abortErr
}

// groupCloser is a connection group shared by the streams of one
// connection (HTTP/2, HTTP/3).
type groupCloser interface{ close() }

func (r *runner) newGroup(st *stats) any {
	switch r.cfg.protocol() {
	case HTTP2:
		return newH2Group(r, st)
	case HTTP3:
		return newH3Group(r, st)
	}
	return nil
}

func (r *runner) connectAll(workers []*worker) error {
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.req.connect(r.ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// monitor watches the run until the workers finish: it reports progress,
// ends the run at its hard deadline, on ctx's cancellation, or when the
// target is down. It returns why it ended the run early, or nil.
func (r *runner) monitor(workers []*worker, finished <-chan struct{}) error {
	cfg := r.cfg
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	interval := cfg.ProgressInterval
	if interval <= 0 {
		interval = time.Second
	}
	var (
		live         = newHistogram()
		nextProgress = r.start.Add(interval)
		lastOK       int64
		lastErr      int64
		okAt         = r.start
		lastResp     int64
		softClosed   bool
	)
	hardStop := func() {
		r.stopped.Store(true)
		if !softClosed {
			close(r.soft)
			softClosed = true
		}
		r.cancel()
		for _, w := range workers {
			w.req.interrupt()
		}
	}
	for {
		select {
		case <-finished:
			if !softClosed {
				close(r.soft)
			}
			return nil
		case <-r.ctx.Done():
			hardStop()
			<-finished
			return fmt.Errorf("run interrupted: %w", context.Cause(r.ctx))
		case now := <-tick.C:
			if !r.stopAt.IsZero() && !softClosed && !now.Before(r.stopAt) {
				close(r.soft)
				softClosed = true
			}
			if !r.stopAt.IsZero() && now.After(r.stopAt.Add(cfg.grace())) {
				hardStop()
				<-finished
				return nil
			}
			var ok, bad int64
			for _, w := range workers {
				ok += w.st.anyOK.Load()
				bad += w.st.anyErr.Load()
			}
			if ok != lastOK {
				lastOK, okAt, lastErr = ok, now, bad
			} else if d := cfg.downAfter(); d > 0 && bad > lastErr && now.Sub(okAt) >= d {
				hardStop()
				<-finished
				return fmt.Errorf("%w: no response for %v, %d requests failed; last error: %w",
					ErrTargetDown, now.Sub(okAt).Round(time.Millisecond), bad-lastErr, r.lastError(workers))
			}
			if cfg.Progress != nil && !now.Before(nextProgress) {
				nextProgress = nextProgress.Add(interval)
				p := Progress{Elapsed: now.Sub(r.measureStart)}
				live.Reset()
				for _, w := range workers {
					p.Responses += w.st.responses.Load()
					p.Errors += w.st.errors.Load() + w.st.status5xx.Load()
					w.st.mu.Lock()
					live.Merge(w.st.hist)
					w.st.mu.Unlock()
				}
				p.RPS = float64(ok-lastResp) / interval.Seconds()
				lastResp = ok
				p.P50 = time.Duration(live.ValueAtQuantile(50)) * time.Microsecond
				p.P99 = time.Duration(live.ValueAtQuantile(99)) * time.Microsecond
				cfg.Progress(p)
			}
		}
	}
}

func (r *runner) lastError(workers []*worker) error {
	for _, w := range workers {
		if e := w.st.lastErr.Load(); e != nil {
			return *e
		}
	}
	return errors.New("unknown")
}

// loop sends requests until the run ends.
func (w *worker) loop() {
	w.timeout = w.r.cfg.timeout()
	if !w.r.stopAt.IsZero() {
		w.hard = w.r.stopAt.Add(w.r.cfg.grace())
	}
	for w.step() {
	}
}

// step sends one request and records its outcome; it reports whether the
// worker goes on. This is the hot path: in steady state it allocates
// nothing for HTTP/1.1.
func (w *worker) step() bool {
	r := w.r
	if w.quota == 0 || r.stopped.Load() {
		return false
	}
	now := time.Now()
	due := now
	if w.interval > 0 {
		due = w.next
		w.next = due.Add(w.interval)
		if wait := due.Sub(now); wait > 0 {
			if !w.sleep(wait) {
				return false
			}
			// The worker was idle when the request fell due: any
			// lateness now is the timer's, not the target's, so the
			// latency counts from the send. When the worker is behind
			// (no sleep), it counts from when the request was due.
			now = time.Now()
			due = now
		}
	}
	if !r.stopAt.IsZero() && !now.Before(r.stopAt) {
		return false
	}
	measured := !due.Before(r.measureStart)
	t := w.pick()
	deadline := now.Add(w.timeout)
	if !w.hard.IsZero() && deadline.After(w.hard) {
		deadline = w.hard
	}
	status, err := w.req.do(r.ctx, t, deadline)
	end := time.Now()
	if err != nil {
		if r.stopped.Load() {
			return false
		}
		w.st.anyErr.Add(1)
		last := err // a copy, so that err itself stays on the stack
		w.st.lastErr.Store(&last)
		if measured {
			w.st.recordError(err, end.Sub(r.measureStart))
			if w.quota > 0 {
				w.quota--
			}
		}
		var de *dialError
		if errors.As(err, &de) {
			w.backoff = min(max(2*w.backoff, 5*time.Millisecond), 250*time.Millisecond)
			return w.sleep(w.backoff)
		}
		return true
	}
	w.backoff = 0
	w.st.anyOK.Add(1)
	if measured {
		w.st.recordResponse(end.Sub(due), end.Sub(r.measureStart), status)
		if w.quota > 0 {
			w.quota--
		}
	}
	return true
}

// sleep waits for d, or until the run ends softly; it reports whether the
// full wait elapsed.
func (w *worker) sleep(d time.Duration) bool {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.timer.C:
		return true
	case <-w.r.soft:
		w.timer.Stop()
		return false
	}
}

// pick returns the next target by smooth weighted round robin.
func (w *worker) pick() *target {
	ts := w.r.targets
	if len(ts) == 1 {
		return ts[0]
	}
	best, total := 0, 0
	for i, t := range ts {
		w.wrr[i] += t.weight
		total += t.weight
		if w.wrr[i] > w.wrr[best] {
			best = i
		}
	}
	w.wrr[best] -= total
	return ts[best]
}

// merged returns the latency histogram of all workers.
func mergeHistograms(workers []*worker) *hdrhistogram.Histogram {
	h := newHistogram()
	for _, w := range workers {
		h.Merge(w.st.hist)
	}
	return h
}
