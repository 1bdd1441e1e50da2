//go:build !wasip1

package sdk

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// reset gives each test a fresh in-memory host and instance state.
func reset(t *testing.T) {
	t.Helper()
	mem = newMemHost()
	roots, rootList = map[uint32]*rootContext{}, nil
	streams = streamTable{}
	lastRoot, oneShot = nil, nil
	calls = map[uint32]*pendingCall{}
	metricIDs = map[metricKey]uint32{}
	newFilter, byRootID, vmStart = nil, nil, nil
	minLevel = LevelTrace
	t.Cleanup(func() { newFilter, byRootID, vmStart = nil, nil, nil })
}

// configure starts root context 1 with cfg.
func configure(t *testing.T, cfg string) bool {
	t.Helper()
	onContextCreate(1, 0)
	mem.buffers[abi.BufferPluginConfiguration] = []byte(cfg)
	ok := onConfigure(1, uint32(len(cfg)))
	delete(mem.buffers, abi.BufferPluginConfiguration)
	return ok
}

type recorder struct {
	BaseFilter
	cfg  string
	seen []string
}

func (f *recorder) OnRequestHeaders(r *Request) Action {
	f.seen = append(f.seen, r.Method()+" "+r.Path())
	switch r.Path() {
	case "/deny":
		return r.Respond(403, []byte("no"), Fields{{"x-why", "path"}})
	case "/call":
		err := HTTPCall("auth", &HTTPRequest{Path: "/check", Header: Fields{{"x-user", r.Header().Get("x-user")}}}, time.Second,
			func(resp *HTTPResponse, err error) {
				if err != nil {
					r.Respond(503, nil, nil)
					return
				}
				r.Header().Set("x-auth", resp.Header.Get("x-result"))
				r.Resume()
			})
		if err != nil {
			return r.Respond(500, nil, nil)
		}
		return Pause
	}
	r.Header().Set("x-cfg", f.cfg)
	r.SetData(len(f.seen))
	return Continue
}

func (f *recorder) OnRequestBody(r *Request, end bool) Action {
	if !end {
		return Pause
	}
	b, _ := r.Body()
	r.SetBody([]byte(strings.ToUpper(string(b))))
	return Continue
}

func (f *recorder) OnResponseHeaders(w *Response) Action {
	w.Header().Add("x-status", w.Header().Get(":status"))
	return Continue
}

func (f *recorder) OnLog(r *Request) {
	f.seen = append(f.seen, "log")
}

func register(f *recorder) {
	Register(func(cfg []byte) (Filter, error) {
		if string(cfg) == "bad" {
			return nil, errors.New("bad config")
		}
		f.cfg = string(cfg)
		return f, nil
	})
}

func TestRequestLifecycle(t *testing.T) {
	reset(t)
	f := &recorder{}
	register(f)
	if !configure(t, "c1") {
		t.Fatal("configure failed")
	}
	onContextCreate(2, 1)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "POST"}, {":path", "/a"}}
	if a := onRequestHeaders(2, 2, false); a != Continue {
		t.Fatalf("headers: %v", a)
	}
	if got := mem.maps[abi.MapHTTPRequestHeaders].Get("x-cfg"); got != "c1" {
		t.Errorf("x-cfg = %q", got)
	}
	if streams.get(2).Data() != 1 {
		t.Errorf("data = %v", streams.get(2).Data())
	}
	mem.buffers[abi.BufferHTTPRequestBody] = []byte("ab")
	if a := onRequestBody(2, 2, false); a != Pause {
		t.Fatalf("body chunk: %v", a)
	}
	mem.buffers[abi.BufferHTTPRequestBody] = []byte("abcd")
	if a := onRequestBody(2, 4, true); a != Continue {
		t.Fatalf("body end: %v", a)
	}
	if got := string(mem.buffers[abi.BufferHTTPRequestBody]); got != "ABCD" {
		t.Errorf("body = %q", got)
	}
	mem.maps[abi.MapHTTPResponseHeaders] = Fields{{":status", "204"}}
	onResponseHeaders(2, 1, true)
	if got := mem.maps[abi.MapHTTPResponseHeaders].Get("x-status"); got != "204" {
		t.Errorf("x-status = %q", got)
	}
	onLog(2)
	onDelete(2)
	if want := []string{"POST /a", "log"}; !reflect.DeepEqual(f.seen, want) {
		t.Errorf("seen %v", f.seen)
	}
	if streams.len() != 0 {
		t.Error("stream not deleted")
	}
}

func TestLocalResponse(t *testing.T) {
	reset(t)
	register(&recorder{})
	configure(t, "")
	onContextCreate(2, 1)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/deny"}}
	onRequestHeaders(2, 2, true)
	l := mem.local
	if l == nil || l.status != 403 || string(l.body) != "no" || l.headers.Get("x-why") != "path" {
		t.Fatalf("local response %+v", l)
	}
}

func TestConfigRejected(t *testing.T) {
	reset(t)
	register(&recorder{})
	if configure(t, "bad") {
		t.Fatal("bad config accepted")
	}
	if len(mem.logs) != 1 || !strings.Contains(mem.logs[0], "bad config") {
		t.Errorf("logs %v", mem.logs)
	}
}

// declaring is a filter that says which callbacks it needs.
type declaring struct {
	BaseFilter
	needs Callbacks
}

func (f *declaring) Callbacks() Callbacks { return f.needs }

// TestCallbacksDeclared checks that a filter implementing
// CallbackDeclarer has its set passed to the host's wasmgate_callbacks
// when it is configured, and that a host without that function (the
// others) still configures it.
func TestCallbacksDeclared(t *testing.T) {
	reset(t)
	Register(func([]byte) (Filter, error) {
		return &declaring{needs: CallbackRequestHeaders | CallbackLog}, nil
	})
	if !configure(t, "") {
		t.Fatalf("a host without wasmgate_callbacks refused the filter: %v", mem.logs)
	}
	var got []byte
	mem.foreign = map[string]func([]byte) ([]byte, abi.Status){
		"wasmgate_callbacks": func(b []byte) ([]byte, abi.Status) { got = b; return nil, abi.StatusOK },
	}
	if !configure(t, "") {
		t.Fatal(mem.logs)
	}
	if want := []byte{1 | 1<<6, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("declared %v, want %v", got, want)
	}
	got = nil
	Register(func([]byte) (Filter, error) { return &recorder{}, nil })
	if !configure(t, "") || got != nil {
		t.Errorf("a filter that declares nothing declared %v", got)
	}
}

// TestRegisterRoot: a module with several filters gives each root
// context the filter its root_id names, falls back to Register's, and
// rejects a root_id it does not hold when there is none.
func TestRegisterRoot(t *testing.T) {
	named := func(name string) NewFilterFunc {
		return func(cfg []byte) (Filter, error) { return &recorder{cfg: name + ":" + string(cfg)}, nil }
	}
	for _, tc := range []struct {
		rootID   string
		fallback bool
		want     string // the filter's cfg; "" for rejected
	}{
		{"a", false, "a:x"},
		{"b", false, "b:x"},
		{"c", false, ""},
		{"", false, ""},
		{"c", true, "default:x"},
	} {
		t.Run(tc.rootID, func(t *testing.T) {
			reset(t)
			RegisterRoot("a", named("a"))
			RegisterRoot("b", named("b"))
			if tc.fallback {
				Register(named("default"))
			}
			if tc.rootID != "" {
				mem.props["plugin_root_id"] = []byte(tc.rootID)
			}
			ok := configure(t, "x")
			if tc.want == "" {
				if ok {
					t.Fatalf("root_id %q accepted", tc.rootID)
				}
				if logs := strings.Join(mem.logs, "\n"); !strings.Contains(logs, `holds "a", "b"`) {
					t.Errorf("logs %v", mem.logs)
				}
				return
			}
			if !ok {
				t.Fatalf("root_id %q rejected: %v", tc.rootID, mem.logs)
			}
			if got := roots[1].filter.(*recorder).cfg; got != tc.want {
				t.Errorf("filter %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMetricsPerRoot: two root contexts defining the same name get a
// definition each, so a host can name each after its plugin.
func TestMetricsPerRoot(t *testing.T) {
	reset(t)
	ids := map[uint32]uint32{}
	for _, root := range []uint32{1, 2} {
		onContextCreate(root, 0)
		enterRoot(rootOf(root))
		c, err := NewCounter("hits")
		again, _ := NewCounter("hits")
		leave()
		if err != nil || c != again {
			t.Fatalf("root %d: %v, %v != %v", root, err, c, again)
		}
		ids[root] = c.id
	}
	if ids[1] == ids[2] {
		t.Errorf("both roots share metric id %d", ids[1])
	}
}

func TestNoRegister(t *testing.T) {
	reset(t)
	if configure(t, "") {
		t.Fatal("configured without a filter")
	}
	if !strings.Contains(strings.Join(mem.logs, "\n"), "sdk.Register") {
		t.Errorf("logs %v", mem.logs)
	}
}

func TestHTTPCall(t *testing.T) {
	reset(t)
	register(&recorder{})
	configure(t, "")
	onContextCreate(2, 1)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/call"}, {"x-user", "alice"}}
	if a := onRequestHeaders(2, 3, true); a != Pause {
		t.Fatalf("action %v", a)
	}
	if len(mem.calls) != 1 {
		t.Fatalf("calls %v", mem.calls)
	}
	c := mem.calls[0]
	if c.cluster != "auth" || c.headers.Get(":path") != "/check" || c.headers.Get(":authority") != "auth" ||
		c.headers.Get(":method") != "GET" || c.headers.Get("x-user") != "alice" || c.timeout != 1000 {
		t.Fatalf("call %+v", c)
	}
	mem.maps[abi.MapHTTPCallResponseHeaders] = Fields{{":status", "200"}, {"x-result", "ok"}}
	onHTTPCallResponse(1, 1, 2, 0, 0)
	if mem.effective != 2 {
		t.Errorf("effective context %d", mem.effective)
	}
	if got := mem.maps[abi.MapHTTPRequestHeaders].Get("x-auth"); got != "ok" {
		t.Errorf("x-auth = %q", got)
	}
	if len(mem.resumed) != 1 || mem.resumed[0] != abi.StreamHTTPRequest {
		t.Errorf("resumed %v", mem.resumed)
	}

	// A failed call: no headers.
	onContextCreate(3, 1)
	onRequestHeaders(3, 3, true)
	onHTTPCallResponse(1, 2, 0, 0, 0)
	if mem.local == nil || mem.local.status != 503 {
		t.Errorf("failed call answered %+v", mem.local)
	}

	// The answer to a deleted request is dropped.
	onContextCreate(4, 1)
	onRequestHeaders(4, 3, true)
	onDelete(4)
	mem.local = nil
	onHTTPCallResponse(1, 3, 0, 0, 0)
	if mem.local != nil {
		t.Error("callback ran for a deleted request")
	}
}

func TestHTTPCallOutsideContext(t *testing.T) {
	reset(t)
	err := HTTPCall("c", &HTTPRequest{}, 0, func(*HTTPResponse, error) {})
	if !errors.Is(err, ErrNoContext) {
		t.Fatalf("err = %v", err)
	}
}

func TestProperties(t *testing.T) {
	reset(t)
	mem.props["source\x00address"] = memProperty("10.0.0.1:5")
	mem.props["connection\x00mtls"] = memProperty(true)
	mem.props["response\x00code"] = memProperty(503)
	mem.props["request\x00duration"] = memProperty(int64(1500 * time.Millisecond))
	if s, err := PropertyString("source", "address"); err != nil || s != "10.0.0.1:5" {
		t.Errorf("source.address %q %v", s, err)
	}
	if b, err := PropertyBool("connection", "mtls"); err != nil || !b {
		t.Errorf("mtls %v %v", b, err)
	}
	if n, err := PropertyInt("response", "code"); err != nil || n != 503 {
		t.Errorf("code %v %v", n, err)
	}
	if d, err := PropertyDuration("request", "duration"); err != nil || d != 1500*time.Millisecond {
		t.Errorf("duration %v %v", d, err)
	}
	if _, err := Property("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing property: %v", err)
	}
	if _, err := PropertyBool("source", "address"); !errors.Is(err, ErrParse) {
		t.Errorf("wrong type: %v", err)
	}
	if err := SetFilterState("trace_id", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if got := string(mem.props["trace_id"]); got != "abc" {
		t.Errorf("filter state %q", got)
	}
}

func TestMetrics(t *testing.T) {
	reset(t)
	c := Metrics.Counter("requests")
	c.Inc()
	c.Add(2)
	if v, err := Metrics.Counter("requests").Value(); err != nil || v != 3 {
		t.Errorf("counter %v %v", v, err)
	}
	g, _ := NewGauge("inflight")
	g.Add(5)
	g.Add(-2)
	if v, _ := g.Value(); v != 3 {
		t.Errorf("gauge %v", v)
	}
	g.Set(9)
	if v, _ := g.Value(); v != 9 {
		t.Errorf("gauge set %v", v)
	}
	h := Metrics.Histogram("latency")
	h.Record(5)
	if len(mem.metrics) != 3 {
		t.Errorf("defined %v", mem.metrics)
	}
}

func TestSharedDataAndQueues(t *testing.T) {
	reset(t)
	if _, _, err := SharedData.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if err := SharedData.Set("k", []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	v, cas, err := SharedData.Get("k")
	if err != nil || string(v) != "v1" {
		t.Fatalf("get %q %v", v, err)
	}
	if err := SharedData.Set("k", []byte("v2"), cas+7); !errors.Is(err, ErrCASMismatch) {
		t.Errorf("stale cas: %v", err)
	}
	if err := SharedData.Set("k", []byte("v2"), cas); err != nil {
		t.Errorf("fresh cas: %v", err)
	}

	if _, err := RegisterQueue("q", nil); !errors.Is(err, ErrNoContext) {
		t.Errorf("queue outside a root: %v", err)
	}
	var got []string
	Register(func([]byte) (Filter, error) {
		_, err := RegisterQueue("q", func(q Queue) {
			for {
				b, err := q.Dequeue()
				if err != nil {
					if !errors.Is(err, ErrEmpty) {
						t.Error(err)
					}
					return
				}
				got = append(got, string(b))
			}
		})
		return nil, err
	})
	configure(t, "")
	q, err := ResolveQueue("", "q")
	if err != nil {
		t.Fatal(err)
	}
	q.Enqueue([]byte("a"))
	q.Enqueue([]byte("b"))
	onQueueReady(1, q.id)
	if !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("dequeued %v", got)
	}
}

func TestTick(t *testing.T) {
	reset(t)
	n := 0
	Register(func([]byte) (Filter, error) {
		return nil, Tick(250*time.Millisecond, func() { n++ })
	})
	configure(t, "")
	if mem.tick != 250 {
		t.Errorf("tick period %d", mem.tick)
	}
	onTick(1)
	onTick(1)
	if n != 2 {
		t.Errorf("ticks %d", n)
	}
	if err := Tick(time.Second, nil); !errors.Is(err, ErrNoContext) {
		t.Errorf("tick outside a root: %v", err)
	}
}

func TestVMStart(t *testing.T) {
	reset(t)
	OnVMStart(func(cfg []byte) error {
		if string(cfg) != "vm" {
			return errors.New("want vm")
		}
		return nil
	})
	onContextCreate(1, 0)
	mem.buffers[abi.BufferVMConfiguration] = []byte("vm")
	if !onVMStart(1, 2) {
		t.Error("vm config rejected")
	}
	mem.buffers[abi.BufferVMConfiguration] = []byte("xx")
	if onVMStart(1, 2) {
		t.Error("bad vm config accepted")
	}
}

func TestLogLevel(t *testing.T) {
	reset(t)
	mem.level = LevelWarn
	register(&recorder{})
	configure(t, "")
	LogInfof("hidden %d", 1)
	LogWarnf("shown %d", 2)
	if !reflect.DeepEqual(mem.logs, []string{"warn: shown 2"}) {
		t.Errorf("logs %v", mem.logs)
	}
}

func TestFieldsCodec(t *testing.T) {
	f := Fields{{":method", "GET"}, {"x-a", ""}, {"x-b", "2"}}
	got, err := decodeFields(encodeFields(f))
	if err != nil || !reflect.DeepEqual(got, f) {
		t.Fatalf("round trip %v %v", got, err)
	}
	if got, err := decodeFields(nil); err != nil || len(got) != 0 {
		t.Errorf("empty %v %v", got, err)
	}
	bad := encodeFields(f)
	if _, err := decodeFields(bad[:len(bad)-3]); !errors.Is(err, ErrParse) {
		t.Errorf("truncated: %v", err)
	}
}

func FuzzDecodeFields(f *testing.F) {
	f.Add(encodeFields(Fields{{"a", "b"}}))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := decodeFields(b)
		if err != nil {
			return
		}
		again, err := decodeFields(encodeFields(fs))
		if err != nil || len(again) != len(fs) {
			t.Fatalf("re-decode %v %v", again, err)
		}
	})
}

type detaching struct{ BaseFilter }

func (detaching) OnLog(r *Request) {
	InRootContext(func() {
		HTTPCall("c", &HTTPRequest{}, 0, func(*HTTPResponse, error) { mem.logs = append(mem.logs, "answered") })
	})
}

func TestInRootContext(t *testing.T) {
	reset(t)
	Register(func([]byte) (Filter, error) { return detaching{}, nil })
	configure(t, "")
	onContextCreate(2, 1)
	onLog(2)
	if mem.effective != 2 {
		t.Errorf("effective context after InRootContext: %d", mem.effective)
	}
	onDelete(2)
	mem.maps[abi.MapHTTPCallResponseHeaders] = Fields{{":status", "200"}}
	onHTTPCallResponse(1, 1, 1, 0, 0)
	if len(mem.logs) != 1 || mem.logs[0] != "answered" {
		t.Errorf("a root-owned call was not answered: %v", mem.logs)
	}
}

func TestStreamTable(t *testing.T) {
	var st streamTable
	reqs := map[uint32]*Request{}
	// Ids that share slots, and ids far apart, added and removed in
	// an interleaved order.
	ids := []uint32{1, 1 + streamSlots, 1 + 2*streamSlots, 2, 70, 1 << 31, 5}
	for _, id := range ids {
		r := &Request{id: id}
		reqs[id] = r
		st.put(r)
	}
	if st.len() != len(ids) {
		t.Fatalf("len = %d, want %d", st.len(), len(ids))
	}
	for _, id := range ids {
		if st.get(id) != reqs[id] {
			t.Errorf("get(%d) = %p, want %p", id, st.get(id), reqs[id])
		}
	}
	if st.get(3) != nil || st.del(3) != nil {
		t.Error("found a request never added")
	}
	if st.del(1) != reqs[1] || st.get(1) != nil {
		t.Error("del(1)")
	}
	// The slot of 1 is free: 1+64 is still found in the overflow, and
	// adding it again does not make it appear twice.
	if st.get(1+streamSlots) != reqs[1+streamSlots] {
		t.Error("lost a colliding request")
	}
	again := &Request{id: 1 + streamSlots}
	st.put(again)
	if st.get(1+streamSlots) != again || st.len() != len(ids)-1 {
		t.Errorf("re-adding: get = %p, len = %d", st.get(1+streamSlots), st.len())
	}
	if st.del(1+streamSlots) != again || st.get(1+streamSlots) != nil {
		t.Error("re-added request not removed")
	}
	for _, id := range ids[2:] {
		if st.del(id) != reqs[id] {
			t.Errorf("del(%d)", id)
		}
	}
	if st.len() != 0 {
		t.Errorf("len = %d after removing all", st.len())
	}
}

// netFilter is a network filter: it holds the client's bytes until a
// line ends, upper-cases the upstream's, counts its connections in their
// state, and records how each closed.
type netFilter struct {
	BaseFilter
	closes []Peer
	logs   int
}

func (f *netFilter) OnNewConnection(c *Conn) Action {
	c.SetState(0)
	return Continue
}

func (f *netFilter) OnDownstreamData(c *Conn, end bool) Action {
	b, err := c.Downstream()
	if err != nil {
		return Continue
	}
	if !end && !bytes.HasSuffix(b, []byte("\n")) {
		return Pause
	}
	c.SetState(c.State().(int) + 1)
	if string(b) == "close\n" {
		c.Close()
		return Pause
	}
	return Continue
}

func (f *netFilter) OnUpstreamData(c *Conn, end bool) Action {
	b, _ := c.Upstream()
	c.SetUpstream(bytes.ToUpper(b))
	return Continue
}

func (f *netFilter) OnConnectionClose(c *Conn, peer Peer) { f.closes = append(f.closes, peer) }

func (f *netFilter) OnLog(*Request) { f.logs++ }

// TestNetworkFilter: a Filter that implements NetworkFilter gets a
// connection's callbacks, reads and replaces its bytes, keeps state per
// connection, resumes and closes it, and is told how it closed; OnLog is
// not called for a connection. A Filter that does not implement it
// continues.
func TestNetworkFilter(t *testing.T) {
	reset(t)
	f := &netFilter{}
	Register(func([]byte) (Filter, error) { return f, nil })
	if !configure(t, "") {
		t.Fatal("configure failed")
	}
	onContextCreate(2, 1)
	if a := onNewConnection(2); a != Continue {
		t.Fatalf("new connection: %v", a)
	}
	mem.buffers[abi.BufferDownstreamData] = []byte("par")
	if a := onConnData(2, 3, false, false); a != Pause {
		t.Errorf("a partial line: %v, want pause", a)
	}
	mem.buffers[abi.BufferDownstreamData] = []byte("partial\n")
	if a := onConnData(2, 8, false, false); a != Continue {
		t.Errorf("a whole line: %v", a)
	}
	mem.buffers[abi.BufferUpstreamData] = []byte("answer")
	if a := onConnData(2, 6, true, true); a != Continue || string(mem.buffers[abi.BufferUpstreamData]) != "ANSWER" {
		t.Errorf("upstream data: %v %q", a, mem.buffers[abi.BufferUpstreamData])
	}
	mem.buffers[abi.BufferDownstreamData] = []byte("close\n")
	onConnData(2, 6, false, false)
	if len(mem.closed) != 1 || mem.closed[0] != abi.StreamDownstream {
		t.Errorf("closed streams %v, want the downstream", mem.closed)
	}
	if got := streams.get(2).conn.State(); got != 2 {
		t.Errorf("state %v, want 2 lines", got)
	}
	onDownstreamClose(2, uint32(abi.PeerLocal))
	onLog(2)
	onDelete(2)
	if !reflect.DeepEqual(f.closes, []Peer{PeerLocal}) || f.logs != 0 {
		t.Errorf("closes %v, logs %d", f.closes, f.logs)
	}
	if curRoot != nil || curStream != nil {
		t.Error("a callback left its context entered")
	}

	reset(t)
	Register(func([]byte) (Filter, error) { return &recorder{}, nil })
	configure(t, "")
	onContextCreate(2, 1)
	if a := onNewConnection(2); a != Continue {
		t.Errorf("an HTTP filter on a connection: %v", a)
	}
	mem.buffers[abi.BufferDownstreamData] = []byte("x")
	if a := onConnData(2, 1, false, false); a != Continue {
		t.Errorf("an HTTP filter's bytes: %v", a)
	}
}

// headersOnly is a recorder that declares the request headers callback
// alone.
type headersOnly struct{ *recorder }

func (headersOnly) Callbacks() Callbacks { return CallbackRequestHeaders }

// TestFirstRequestHeaders checks wasmgate_on_request_headers: for a
// filter that needs the request headers alone, a request that goes on
// ends in that call (the result says so; nothing is kept), while one the
// filter holds or answers is kept for its later calls and its delete; a
// filter that needs more keeps every request, as after
// proxy_on_context_create.
func TestFirstRequestHeaders(t *testing.T) {
	reset(t)
	f := &recorder{}
	Register(func([]byte) (Filter, error) { return headersOnly{f}, nil })
	configure(t, "")
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/a"}}
	for id := uint32(2); id < 5; id++ {
		r := onFirstRequestHeaders(id, 1, 2, true)
		if r != uint32(Continue)|endedContext {
			t.Fatalf("request %d: result %#x, want Continue and ended", id, r)
		}
	}
	if streams.len() != 0 {
		t.Errorf("%d requests kept after they ended", streams.len())
	}
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/call"}, {"x-user", "alice"}}
	if r := onFirstRequestHeaders(5, 1, 3, true); r != uint32(Pause) {
		t.Fatalf("held request: result %#x, want Pause", r)
	}
	held := streams.get(5)
	if held == nil {
		t.Fatal("the held request was not kept")
	}
	// Another request that ends must not reuse the held one.
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/b"}}
	if r := onFirstRequestHeaders(6, 1, 2, true); r&endedContext == 0 {
		t.Fatalf("request 6: result %#x, want ended", r)
	}
	if held.ID() != 5 || streams.get(5) != held {
		t.Fatalf("the held request changed: id %d", held.ID())
	}
	mem.maps[abi.MapHTTPCallResponseHeaders] = Fields{{":status", "200"}, {"x-result", "ok"}}
	onHTTPCallResponse(1, 1, 2, 0, 0)
	if mem.effective != 5 {
		t.Errorf("effective context %d, want 5", mem.effective)
	}
	onDelete(5)
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/deny"}}
	if r := onFirstRequestHeaders(7, 1, 2, true); r != uint32(Pause) || streams.get(7) == nil {
		t.Errorf("answered request: result %#x, kept %v", r, streams.get(7) != nil)
	}
	onDelete(7)
	if streams.len() != 0 {
		t.Errorf("%d requests left", streams.len())
	}

	// A filter that declares nothing needs every callback.
	reset(t)
	register(&recorder{})
	configure(t, "")
	mem.maps[abi.MapHTTPRequestHeaders] = Fields{{":method", "GET"}, {":path", "/a"}}
	if r := onFirstRequestHeaders(2, 1, 2, true); r != uint32(Continue) || streams.get(2) == nil {
		t.Errorf("undeclared filter: result %#x, kept %v", r, streams.get(2) != nil)
	}
	// An unknown root: the request is kept as after a create, and its
	// callbacks continue.
	if r := onFirstRequestHeaders(3, 9, 2, true); r != uint32(Continue) {
		t.Errorf("unknown root: result %#x", r)
	}
}
