// Package wasmtest runs a proxy-wasm plugin inside the real host
// (package wasm) in-process, against requests a test writes, and returns
// what the proxy would have sent: the response, the request as it went
// upstream, the plugin's logs, metrics and filter state.
//
// A Harness starts the plugin once; Do runs one request through it as
// the proxy does (request headers, body, upstream, response headers,
// body, log). Configure gives a view of the same running plugin with
// another configuration, as a route's override does, so tests of many
// configurations pay for one compilation.
//
//	h, err := wasmtest.Load("authz.wasm", wasmtest.Options{Config: cfg})
//	res, err := h.Do(wasmtest.NewRequest("GET /admin", "authorization", "Bearer ..."))
//	// res.Status, res.Header, res.Body, res.Upstream, res.Logs
//
// Connect runs the plugin as a network (L4) filter instead: a Conn takes
// a connection's bytes in each direction and returns what the filter lets
// through.
package wasmtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// Options configure a Harness. The zero value of each field is valid.
type Options struct {
	// Name is the plugin's name; "" means "plugin".
	Name string
	// Config and VMConfig are the plugin's configuration and VM
	// configuration.
	Config, VMConfig []byte
	// Clusters answer the plugin's HTTP calls, by cluster name. Every
	// cluster named here is allowed.
	Clusters map[string]fasthttp.RequestHandler
	// Upstream answers the requests the plugin lets through; nil answers
	// 200 with the body "upstream".
	Upstream fasthttp.RequestHandler
	// FailurePolicy is the plugin's; "" means fail_closed.
	FailurePolicy string
	// MaxBodyBytes bounds what the plugin may buffer; 0 means the host's
	// default.
	MaxBodyBytes int64
	// CallTimeout bounds each call into the plugin; 0 means 1s, generous
	// for tests under the race detector.
	CallTimeout time.Duration
	// PauseTimeout bounds how long a paused request waits; 0 means 5s.
	PauseTimeout time.Duration
	// LogLevel is the least level of plugin logs kept; the zero value is
	// info. Use zapcore.DebugLevel to see debug logs.
	LogLevel zapcore.Level
	// Node is the proxy's identity; nil means id "wasmtest".
	Node *filter.Node
	// CacheDir keeps compiled code across runs; "" means a directory
	// under os.TempDir.
	CacheDir string
}

// Harness is a plugin running in the host. Its methods may be called
// from several goroutines.
type Harness struct {
	shared *state
	f      filter.Factory
	cfg    config.RawConfig // Configure's; nil for the plugin's own
}

type state struct {
	opts    Options
	m       *wasm.Manager
	set     *wasm.Set
	reg     *prometheus.Registry
	logs    *observer.ObservedLogs
	name    string
	closeMu sync.Once
}

// Load starts the plugin in the module file path.
func Load(path string, opts Options) (*Harness, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return start(config.Plugin{File: abs}, nil, opts)
}

// New starts the plugin in module.
func New(module []byte, opts Options) (*Harness, error) {
	return start(config.Plugin{SHA256: digest(module)}, module, opts)
}

func start(pc config.Plugin, module []byte, opts Options) (*Harness, error) {
	name := opts.Name
	if name == "" {
		name = "plugin"
	}
	core, logs := observer.New(opts.LogLevel)
	reg := prometheus.NewRegistry()
	node := opts.Node
	if node == nil {
		node = &filter.Node{ID: "wasmtest"}
	}
	dir := opts.CacheDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "wasmgate-wasmtest-cache")
	}
	mo := wasm.Options{
		CacheDir:   dir,
		Logger:     zap.New(core),
		Registerer: reg,
		Upstreams:  clusters(opts.Clusters),
		Node:       node,
	}
	if module != nil {
		mo.Blobs = func(string) ([]byte, error) { return module, nil }
	}
	m, err := wasm.NewManager(mo)
	if err != nil {
		return nil, err
	}
	pc.Name = name
	pc.Config = config.RawConfig(opts.Config)
	pc.VMConfig = config.RawConfig(opts.VMConfig)
	pc.PoolSize = 1
	pc.FailurePolicy = opts.FailurePolicy
	if pc.FailurePolicy == "" {
		pc.FailurePolicy = config.FailClosed
	}
	pc.MaxBodyBytes = opts.MaxBodyBytes
	ct := opts.CallTimeout
	if ct == 0 {
		ct = time.Second
	}
	pc.CallTimeout = config.Duration(ct)
	for c := range opts.Clusters {
		pc.AllowedClusters = append(pc.AllowedClusters, c)
	}
	sort.Strings(pc.AllowedClusters)
	set, err := m.Prepare(context.Background(), []config.Plugin{pc})
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Activate(set)
	s := &state{opts: opts, m: m, set: set, reg: reg, logs: logs, name: name}
	f, err := set.Factory(config.FilterRef{Plugin: name}, "route")
	if err != nil {
		m.Close()
		return nil, err
	}
	return &Harness{shared: s, f: f}, nil
}

// Configure returns a Harness running the same plugin with another
// configuration, as a route's override does: a root context of its own
// in the running instances. It shares logs and metrics with h.
func (h *Harness) Configure(cfg []byte) (*Harness, error) {
	f, err := h.shared.set.Factory(config.FilterRef{Plugin: h.shared.name, Config: config.RawConfig(cfg)}, "route")
	if err != nil {
		return nil, err
	}
	return &Harness{shared: h.shared, f: f, cfg: config.RawConfig(cfg)}, nil
}

// Close stops the plugin. Views made by Configure stop with it.
func (h *Harness) Close() error {
	var err error
	h.shared.closeMu.Do(func() { err = h.shared.m.Close() })
	return err
}

// Request is a request for Do. Header holds name, value pairs.
type Request struct {
	Method string // "" means GET
	Path   string // "" means "/"
	Host   string // "" means "example.com"
	Header [][2]string
	Body   []byte
	// Chunks splits Body into that many chunks, each a body callback, as
	// the proxy streams a large body; 0 or 1 sends it whole.
	Chunks int
	// TLS describes the downstream TLS connection; nil is cleartext.
	TLS *filter.TLSInfo
	// Remote is the client's address; "" means 10.0.0.7:40000.
	Remote string
	// Route and Cluster are where the request was routed; "" means
	// "route" and "backend".
	Route, Cluster string
}

// NewRequest returns a request from a request line such as "GET /path"
// and name, value pairs of headers.
func NewRequest(line string, header ...string) *Request {
	r := &Request{}
	method, path, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		method, path = "GET", method
	}
	r.Method, r.Path = method, strings.TrimSpace(path)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header = append(r.Header, [2]string{header[i], header[i+1]})
	}
	return r
}

// Result is what the proxy would have done with a request.
type Result struct {
	Status int
	Header http.Header
	Body   []byte
	// Local is set when the plugin (or the host, on its behalf) answered
	// the request itself; Details says why.
	Local   bool
	Details string
	// Upstream is the request as it reached the upstream; nil when it
	// did not go upstream.
	Upstream *Upstream
	// FilterState holds what the plugin set with proxy_set_property,
	// under "wasm.<path>".
	FilterState map[string]string
	// Logs are the plugin's logs written while the request ran.
	Logs []Log
}

// Upstream is a request as the upstream received it.
type Upstream struct {
	Method, Path, Host string
	Header             http.Header
	Body               []byte
}

// Log is one log entry of the plugin.
type Log struct {
	Level   zapcore.Level
	Message string
}

func (l Log) String() string { return l.Level.String() + ": " + l.Message }

// ErrNotResumed is returned by Do when the plugin paused the request and
// never resumed it.
var ErrNotResumed = errors.New("the plugin paused the request and never resumed it")

// Do runs one request through the plugin as the proxy does.
func (h *Harness) Do(r *Request) (*Result, error) {
	s := h.shared
	logStart := s.logs.Len()
	x := newExchange(r)
	pause := s.opts.PauseTimeout
	if pause == 0 {
		pause = 5 * time.Second
	}
	res := &Result{}
	st, err := h.f.NewStream(x)
	if err != nil {
		if !errors.Is(err, filter.ErrFailOpen) {
			x.SendLocalResponse(500, nil, nil, "filter_failed")
		}
	}
	proceed := func(status filter.Status) (bool, error) {
		switch status {
		case filter.Continue:
			return !x.Local(), nil
		case filter.Pause, filter.Buffer:
			if !x.Wait(pause) {
				return false, ErrNotResumed
			}
			return !x.Local(), nil
		}
		if !x.Local() {
			x.SendLocalResponse(500, nil, nil, "filter_stopped")
		}
		return false, nil
	}
	ok := !x.Local()
	if st != nil {
		defer st.Done(x)
	}
	if ok && st != nil {
		ok, err = proceed(st.OnRequestHeaders(x, len(r.Body) == 0))
		if err != nil {
			return nil, err
		}
		if ok && len(r.Body) > 0 {
			var out []byte
			out, ok = runBody(x, r.Body, r.Chunks, func(b *filter.Body, end bool) filter.Status {
				return st.OnRequestBody(x, b, end)
			})
			x.Ctx.Request.SetBody(out)
		}
	}
	if ok {
		res.Upstream = h.forward(x)
		respBody := append([]byte(nil), x.Ctx.Response.Body()...)
		x.Ctx.Response.ResetBody()
		if st != nil {
			ok, err = proceed(st.OnResponseHeaders(x, len(respBody) == 0))
			if err != nil {
				return nil, err
			}
			if ok && len(respBody) > 0 {
				respBody, ok = runBody(x, respBody, 0, func(b *filter.Body, end bool) filter.Status {
					return st.OnResponseBody(x, b, end)
				})
			}
		}
		if ok {
			x.Ctx.Response.SetBody(respBody)
		}
	}
	if st != nil {
		st.OnLog(x)
	}
	resp := &x.Ctx.Response
	res.Status = resp.StatusCode()
	res.Header = http.Header{}
	for k, v := range resp.Header.All() {
		res.Header.Add(string(k), string(v))
	}
	res.Body = append([]byte(nil), resp.Body()...)
	res.Local = x.Local()
	res.Details = x.Details
	if len(x.FilterState) > 0 {
		res.FilterState = make(map[string]string, len(x.FilterState))
		for k, v := range x.FilterState {
			res.FilterState[k] = string(v)
		}
	}
	for _, e := range s.logs.All()[logStart:] {
		res.Logs = append(res.Logs, Log{e.Level, e.Message})
	}
	return res, nil
}

// runBody passes a body through a body callback as the proxy does: in
// chunks, holding what the filter buffers. It returns the body that goes
// on, and false when the filter answered instead.
func runBody(x *filter.Exchange, body []byte, chunks int, cb func(*filter.Body, bool) filter.Status) ([]byte, bool) {
	if chunks < 1 {
		chunks = 1
	}
	size := (len(body) + chunks - 1) / chunks
	var held, out []byte
	for off := 0; off < len(body); off += size {
		end := min(off+size, len(body))
		held = append(held, body[off:end]...)
		b := &filter.Body{B: held}
		switch cb(b, end == len(body)) {
		case filter.Continue:
			out = append(out, b.B...)
			held = nil
		case filter.Buffer, filter.Pause:
			held = b.B
			if end == len(body) {
				out = append(out, held...)
			}
		default:
			if !x.Local() {
				x.SendLocalResponse(500, nil, nil, "filter_stopped")
			}
			return nil, false
		}
		if x.Local() {
			return nil, false
		}
	}
	return out, true
}

// forward sends the request to the upstream handler and puts its answer
// in the exchange's response.
func (h *Harness) forward(x *filter.Exchange) *Upstream {
	up := h.shared.opts.Upstream
	if up == nil {
		up = func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("upstream") }
	}
	req := &x.Ctx.Request
	u := &Upstream{
		Method: string(req.Header.Method()),
		Path:   string(req.URI().RequestURI()),
		Host:   string(req.Host()),
		Header: http.Header{},
		Body:   append([]byte(nil), req.Body()...),
	}
	for k, v := range req.Header.All() {
		u.Header.Add(string(k), string(v))
	}
	var uctx fasthttp.RequestCtx
	var copyReq fasthttp.Request
	req.CopyTo(&copyReq)
	uctx.Init(&copyReq, nil, nil)
	up(&uctx)
	uctx.Response.CopyTo(&x.Ctx.Response)
	return u
}

func newExchange(r *Request) *filter.Exchange {
	var req fasthttp.Request
	method, path, host := r.Method, r.Path, r.Host
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/"
	}
	if host == "" {
		host = "example.com"
	}
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetHost(host)
	for _, h := range r.Header {
		if strings.EqualFold(h[0], "host") {
			req.Header.SetHost(h[1])
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	if len(r.Body) > 0 {
		req.SetBody(r.Body)
	}
	remote := r.Remote
	if remote == "" {
		remote = "10.0.0.7:40000"
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		ap = netip.MustParseAddrPort("10.0.0.7:40000")
	}
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, net.TCPAddrFromAddrPort(ap), nil)
	x := filter.NewExchange()
	x.Ctx = ctx
	x.Conn = &filter.ConnInfo{ID: 1, Remote: ap, Local: netip.MustParseAddrPort("192.0.2.1:8443"), TLS: r.TLS}
	x.Route, x.Cluster = r.Route, r.Cluster
	if x.Route == "" {
		x.Route = "route"
	}
	if x.Cluster == "" {
		x.Cluster = "backend"
	}
	x.Listener, x.VirtualHost = "main", "vhost"
	x.Protocol = "HTTP/1.1"
	x.RequestID = []byte("wasmtest-request")
	x.Start = time.Now()
	return x
}

// Logs returns every log entry of the plugin so far.
func (h *Harness) Logs() []Log {
	var out []Log
	for _, e := range h.shared.logs.All() {
		out = append(out, Log{e.Level, e.Message})
	}
	return out
}

// Metric returns the value of the metric the plugin defined as name: a
// counter's or gauge's value, a histogram's count of samples.
func (h *Harness) Metric(name string) (float64, bool) {
	return GatheredMetric(h.shared.reg, name)
}

// Metrics returns every metric the plugin defined, as GatheredMetrics.
func (h *Harness) Metrics() (map[string]float64, error) {
	return GatheredMetrics(h.shared.reg)
}

// GatheredMetric returns the value of a guest metric, named as the plugin
// defined it ("base" or "base;key=value;..."), from g.
func GatheredMetric(g prometheus.Gatherer, name string) (float64, bool) {
	all, err := GatheredMetrics(g)
	if err != nil {
		return 0, false
	}
	v, ok := all[metricKey(name)]
	return v, ok
}

// metricKey is the key GatheredMetrics uses for a name as a plugin gives
// it: the exported name, then its "key=value" labels sorted, each after a
// ";".
func metricKey(name string) string {
	base, rest, found := strings.Cut(name, ";")
	if !found {
		return MetricName(name)
	}
	pairs := strings.Split(rest, ";")
	sort.Strings(pairs)
	return MetricName(base) + ";" + strings.Join(pairs, ";")
}

// GatheredMetrics returns every guest metric g has, keyed by the name it
// was defined with as the host exports it (characters Prometheus forbids
// become "_"), followed by its labels sorted, each as ";key=value". A
// counter or gauge gives its value, a histogram its sample count.
func GatheredMetrics(g prometheus.Gatherer) (map[string]float64, error) {
	fams, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "wasm_") || strings.HasPrefix(name, "wasmgate_") {
			continue
		}
		for _, m := range f.GetMetric() {
			key := strings.TrimPrefix(name, "wasm_")
			for _, l := range m.GetLabel() { // sorted by name
				if l.GetName() != "plugin" {
					key += ";" + l.GetName() + "=" + l.GetValue()
				}
			}
			out[key] = value(f.GetType(), m)
		}
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// MetricName is the name under which Metrics reports a metric the plugin
// defined as name.
func MetricName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == ':':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// clusters serves HTTP calls from in-process handlers.
type clusters map[string]fasthttp.RequestHandler

func (c clusters) Call(cluster string, req *fasthttp.Request, resp *fasthttp.Response, _ time.Duration) error {
	h, ok := c[cluster]
	if !ok {
		return fmt.Errorf("%w: %q", filter.ErrUnknownCluster, cluster)
	}
	var ctx fasthttp.RequestCtx
	var r fasthttp.Request
	req.CopyTo(&r)
	ctx.Init(&r, nil, nil)
	h(&ctx)
	ctx.Response.CopyTo(resp)
	return nil
}
