package wasm

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"reflect"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// rawCodec is the gRPC server's codec: protobuf messages (the health
// service's) as protobuf, and the echo service's messages as raw bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, errors.New("rawCodec: unsupported message")
}

func (rawCodec) Unmarshal(b []byte, v any) error {
	switch m := v.(type) {
	case *[]byte:
		*m = append((*m)[:0], b...)
		return nil
	case proto.Message:
		return proto.Unmarshal(b, m)
	}
	return errors.New("rawCodec: unsupported message")
}

func (rawCodec) Name() string { return "proto" }

// grpcUpstream is a real grpc-go server: grpc.health.v1.Health, and
// wasmgate.test.Echo with Chat (echoes each message upper-cased, sends
// header x-hello and x-token-seen, trailer x-count) and Hang (sends its
// headers, waits for its client to go and reports how on ended).
type grpcUpstream struct {
	addr    string
	started chan struct{}
	ended   chan error
}

func startGRPCUpstream(t testing.TB) *grpcUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &grpcUpstream{addr: ln.Addr().String(), started: make(chan struct{}, 16), ended: make(chan error, 16)}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	hs := health.NewServer()
	hs.SetServingStatus("svc-a", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("svc-b", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "wasmgate.test.Echo",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "Chat", Handler: echoChat, ServerStreams: true, ClientStreams: true},
			{StreamName: "Hang", Handler: u.hang, ServerStreams: true, ClientStreams: true},
		},
	}, struct{}{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return u
}

func echoChat(_ any, ss grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	seen := strings.Join(md.Get("x-token"), ",")
	if err := ss.SendHeader(metadata.Pairs("x-hello", "world", "x-token-seen", seen)); err != nil {
		return err
	}
	n := 0
	for {
		var b []byte
		if err := ss.RecvMsg(&b); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		n++
		up := []byte(strings.ToUpper(string(b)))
		if err := ss.SendMsg(&up); err != nil {
			return err
		}
	}
	ss.SetTrailer(metadata.Pairs("x-count", string(rune('0'+n))))
	return nil
}

func (u *grpcUpstream) hang(_ any, ss grpc.ServerStream) error {
	u.started <- struct{}{}
	// A client that resets the stream as soon as it is told it started
	// can do so before the headers go out: SendHeader then fails, and the
	// end must still be told.
	_ = ss.SendHeader(metadata.Pairs("x-hang", "1"))
	<-ss.Context().Done()
	err := ss.Context().Err()
	u.ended <- err
	return status.FromContextError(err).Err()
}

// grpcClusters builds real clusters: "grpc" (HTTP/2, h2c) and "h1"
// (HTTP/1.1) to the server, and "down" (HTTP/2) to a closed port.
func grpcClusters(t testing.TB, addr string) cluster.Set {
	t.Helper()
	ps := cluster.NewPools()
	set := cluster.Set{}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := closed.Addr().String()
	closed.Close()
	for name, c := range map[string]struct{ proto, addr string }{
		"grpc": {config.ProtocolHTTP2, addr},
		"h1":   {"", addr},
		"down": {config.ProtocolHTTP2, downAddr},
	} {
		c, err := cluster.Build(config.Cluster{Name: name, Protocol: c.proto,
			Endpoints: []config.Endpoint{{Address: c.addr}}}, nil, ps)
		if err != nil {
			t.Fatal(err)
		}
		set[name] = c
	}
	return set
}

func startGRPCPlugin(t *testing.T, up filter.Upstreams) (*Manager, filter.Factory) {
	t.Helper()
	m := newTestManager(t, func(o *Options) { o.Upstreams = up })
	set := prepare(t, m, testPlugin("grpc", "grpccall", func(p *config.Plugin) {
		p.PoolSize = 1
		p.CallTimeout = config.Duration(time.Second)
		p.AllowedClusters = []string{"grpc", "h1", "down", "nope"}
	}))
	return m, factoryOf(t, set, "grpc")
}

// ask sends one request through the plugin and returns its local reply.
func ask(t *testing.T, f filter.Factory, target string) string {
	t.Helper()
	x := newExchange("http://example.com" + target)
	run(t, f, x)
	if !x.Local() {
		t.Fatalf("%s: the plugin did not answer", target)
	}
	return string(x.Ctx.Response.Body())
}

// TestGRPCCall drives proxy_grpc_call from a real module to a real
// grpc-go server: answers, statuses as gRPC defines them, a deadline, and
// the statuses proxy_grpc_call returns for clusters it cannot use.
func TestGRPCCall(t *testing.T) {
	u := startGRPCUpstream(t)
	_, f := startGRPCPlugin(t, grpcClusters(t, u.addr))
	const health = "/unary?cluster=grpc&service=grpc.health.v1.Health&method=Check"

	t.Run("answered", func(t *testing.T) {
		for svc, want := range map[string]healthpb.HealthCheckResponse_ServingStatus{
			"svc-a": healthpb.HealthCheckResponse_SERVING,
			"svc-b": healthpb.HealthCheckResponse_NOT_SERVING,
			"":      healthpb.HealthCheckResponse_SERVING,
		} {
			got := ask(t, f, health+"&timeout=5000&svc="+svc)
			b, err := hex.DecodeString(strings.TrimPrefix(got, "ok "))
			if !strings.HasPrefix(got, "ok ") || err != nil {
				t.Fatalf("svc %q: %q", svc, got)
			}
			var resp healthpb.HealthCheckResponse
			if err := proto.Unmarshal(b, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Status != want {
				t.Errorf("svc %q: status %v, want %v", svc, resp.Status, want)
			}
		}
	})
	tests := []struct {
		name, target, want string
	}{
		{"unknown service name", health + "&svc=svc-z", "status 5 unknown service"},
		{"unknown method", "/unary?cluster=grpc&service=grpc.health.v1.Health&method=Nope", "status 12 unknown method Nope for service grpc.health.v1.Health"},
		{"unknown service", "/unary?cluster=grpc&service=no.Such&method=Check", "status 12 unknown service no.Such"},
		{"deadline", "/unary?cluster=grpc&service=wasmgate.test.Echo&method=Hang&timeout=200", "status 4 "},
		{"unreachable", "/unary?cluster=down&service=s&method=m&timeout=5000", "status 14 "},
		{"unknown cluster", "/unary?cluster=nope&service=s&method=m", "refused proxy_grpc_call: parse_failure"},
		{"cluster not allowed", "/unary?cluster=other&service=s&method=m", "refused proxy_grpc_call: parse_failure"},
		{"HTTP/1.1 cluster", "/unary?cluster=h1&service=s&method=m", "refused proxy_grpc_call: bad_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ask(t, f, tt.target); !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want it to start with %q", got, tt.want)
			}
		})
	}
	// The server saw the call end: its deadline passed (grpc-timeout),
	// or the host reset the stream at it.
	select {
	case err := <-u.ended:
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.Errorf("Hang ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the call end")
	}
}

// TestGRPCStream drives proxy_grpc_stream and proxy_grpc_send from a real
// module: initial metadata, every message in order, trailing metadata and
// the close, each in its callback.
func TestGRPCStream(t *testing.T) {
	u := startGRPCUpstream(t)
	_, f := startGRPCPlugin(t, grpcClusters(t, u.addr))
	got := ask(t, f, "/stream?cluster=grpc&service=wasmgate.test.Echo&method=Chat&n=3")
	want := strings.Join([]string{
		"initial x-hello=world x-token-seen=abc",
		"message M1", "message M2", "message M3",
		"trailing x-count=3",
		"close ok",
	}, "\n")
	if got != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
	}
	// No message, the sending side closed with proxy_grpc_close.
	got = ask(t, f, "/stream?cluster=grpc&service=wasmgate.test.Echo&method=Chat&n=0")
	want = "initial x-hello=world x-token-seen=abc\ntrailing x-count=0\nclose ok"
	if got != want {
		t.Errorf("closed at once:\n%s\nwant:\n%s", got, want)
	}
	got = ask(t, f, "/stream?cluster=grpc&service=wasmgate.test.Echo&method=Nope&n=1")
	if !strings.HasSuffix(got, "close grpc status 12: unknown method Nope for service wasmgate.test.Echo") {
		t.Errorf("unknown method: %q", got)
	}
}

// TestGRPCCancel checks proxy_grpc_cancel: the server sees its stream
// cancelled, the token is gone (a send after answers NOT_FOUND) and no
// callback follows.
func TestGRPCCancel(t *testing.T) {
	u := startGRPCUpstream(t)
	_, f := startGRPCPlugin(t, grpcClusters(t, u.addr))
	got := ask(t, f, "/cancel?cluster=grpc&service=wasmgate.test.Echo&method=Hang")
	if got != "cancelled proxy_grpc_send: not_found" {
		t.Errorf("got %q", got)
	}
	select {
	case err := <-u.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Hang ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the stream cancelled")
	}
}

// TestGRPCStreamEndsWithItsInstance checks that a stream opened in a root
// context, which outlives its request, ends when its instance is replaced
// after a failure, and when its plugin closes.
func TestGRPCStreamEndsWithItsInstance(t *testing.T) {
	u := startGRPCUpstream(t)
	m, f := startGRPCPlugin(t, grpcClusters(t, u.addr))
	open := func() {
		t.Helper()
		if got := ask(t, f, "/background?cluster=grpc&service=wasmgate.test.Echo&method=Hang"); got != "opened" {
			t.Fatalf("got %q", got)
		}
		select {
		case <-u.started:
		case <-time.After(5 * time.Second):
			t.Fatal("the stream never reached the server")
		}
	}
	ended := func(what string) {
		t.Helper()
		select {
		case <-u.ended:
		case <-time.After(5 * time.Second):
			// Say where every goroutine waits: the step of the stream's
			// end that stalled.
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 2)
			t.Log(b.String())
			t.Fatalf("the stream outlived its %s", what)
		}
	}

	open()
	x := newExchange("http://example.com/")
	st, err := f.NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	in := st.(*stream).in
	in.mu.Lock()
	in.vm.failed(in, errors.New("instance failed"))
	in.mu.Unlock()
	st.Done(x)
	ended("instance")

	open()
	closing := time.Now()
	m.Close()
	// If the stream outlives the plugin, say whether Close was slow (an
	// instance being built holds the VM) or ended without ending it.
	t.Logf("Close took %v", time.Since(closing).Round(time.Millisecond))
	ended("plugin")
}

// TestGRPCStreamEndsWithItsRoot checks that a stream a root context
// opened ends when a reload removes that root's plugin while its VM lives
// on for another plugin: as in Envoy, deleting the context resets what it
// still has open.
func TestGRPCStreamEndsWithItsRoot(t *testing.T) {
	u := startGRPCUpstream(t)
	m := newTestManager(t, func(o *Options) { o.Upstreams = grpcClusters(t, u.addr) })
	plugin := func(name string) config.Plugin {
		return sharing(name, "grpccall", "shared", "", name, func(p *config.Plugin) {
			p.PoolSize = 1
			p.AllowedClusters = []string{"grpc"}
		})
	}
	set := prepare(t, m, plugin("one"), plugin("two"))
	if got := ask(t, factoryOf(t, set, "one"), "/background?cluster=grpc&service=wasmgate.test.Echo&method=Hang"); got != "opened" {
		t.Fatalf("got %q", got)
	}
	select {
	case <-u.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream never reached the server")
	}
	next := prepare(t, m, plugin("two"))
	if next.plugins["two"].vm != set.plugins["two"].vm {
		t.Fatal("the reload did not keep the shared VM")
	}
	select {
	case <-u.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived its root context")
	}
}

// TestGRPCLimit checks the bound on the calls and streams an instance
// has open: past it proxy_grpc_stream answers INTERNAL_FAILURE.
func TestGRPCLimit(t *testing.T) {
	u := startGRPCUpstream(t)
	old := maxGRPCCalls
	maxGRPCCalls = 2
	t.Cleanup(func() { maxGRPCCalls = old })
	_, f := startGRPCPlugin(t, grpcClusters(t, u.addr))
	const bg = "/background?cluster=grpc&service=wasmgate.test.Echo&method=Hang"
	for i := 0; i < 2; i++ {
		if got := ask(t, f, bg); got != "opened" {
			t.Fatalf("stream %d: %q", i, got)
		}
	}
	if got := ask(t, f, bg); got != "refused proxy_grpc_stream: internal_failure" {
		t.Errorf("past the limit: %q", got)
	}
}

// grpcServiceProto serializes an envoy.config.core.v3.GrpcService with
// envoy_grpc {cluster_name, authority} and initial_metadata.
func grpcServiceProto(cluster, authority string, md ...[2]string) []byte {
	var eg []byte
	eg = protowire.AppendTag(eg, 1, protowire.BytesType)
	eg = protowire.AppendString(eg, cluster)
	if authority != "" {
		eg = protowire.AppendTag(eg, 2, protowire.BytesType)
		eg = protowire.AppendString(eg, authority)
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, eg)
	b = protowire.AppendTag(b, 3, protowire.BytesType) // timeout, ignored
	b = protowire.AppendBytes(b, []byte{0x08, 0x05})
	for _, kv := range md {
		var h []byte
		h = protowire.AppendTag(h, 1, protowire.BytesType)
		h = protowire.AppendString(h, kv[0])
		h = protowire.AppendTag(h, 2, protowire.BytesType)
		h = protowire.AppendString(h, kv[1])
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, h)
	}
	return b
}

// TestGRPCService checks how proxy_grpc_call reads its service argument:
// a serialized GrpcService naming a cluster, or else a cluster's name.
func TestGRPCService(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want grpcTarget
		ok   bool
	}{
		{"cluster name", []byte("grpc"), grpcTarget{cluster: "grpc"}, true},
		{"name that parses as protobuf", []byte("h1"), grpcTarget{cluster: "h1"}, true},
		{"GrpcService", grpcServiceProto("grpc", "auth.local", [2]string{"x-key", "v"}),
			grpcTarget{cluster: "grpc", authority: "auth.local", metadata: [][2]string{{"x-key", "v"}}}, true},
		{"empty", nil, grpcTarget{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseGRPCService(tt.in)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzGRPCService feeds arbitrary service arguments to the parser: it
// never fails on a non-empty argument, and names a cluster.
func FuzzGRPCService(f *testing.F) {
	f.Add([]byte("grpc"))
	f.Add(grpcServiceProto("c", "a", [2]string{"k", "v"}))
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseGRPCService(b)
		if ok != (len(b) > 0) || (ok && got.cluster == "") {
			t.Fatalf("parseGRPCService(%x) = %+v, %v", b, got, ok)
		}
	})
}

func TestGRPCTimeoutHeader(t *testing.T) {
	for d, want := range map[time.Duration]string{
		200 * time.Millisecond:        "200m",
		99999999 * time.Millisecond:   "99999999m",
		100000000 * time.Millisecond:  "100000S",
		4294967295 * time.Millisecond: "4294968S",
	} {
		if got := grpcTimeout(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

// TestGRPCThroughHost checks that the upstreams the proxy hands the host
// with Prepare carry gRPC calls: before the first, the cluster is
// unknown.
func TestGRPCThroughHost(t *testing.T) {
	u := startGRPCUpstream(t)
	h, err := NewHost(Options{CacheDir: testCacheDir, StartWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	plugins := []config.Plugin{testPlugin("grpc", "grpccall", func(p *config.Plugin) {
		p.PoolSize = 1
		p.AllowedClusters = []string{"grpc"}
	})}
	const check = "/unary?cluster=grpc&service=grpc.health.v1.Health&method=Check&svc=svc-a"
	for _, tt := range []struct {
		up   filter.Upstreams
		want string
	}{
		{nil, "refused proxy_grpc_call: parse_failure"},
		{grpcClusters(t, u.addr), "ok 0801"},
	} {
		ps, err := h.Prepare(context.Background(), plugins, tt.up)
		if err != nil {
			t.Fatal(err)
		}
		set := ps.(*Set)
		set.Activate()
		if got := ask(t, factoryOf(t, set, "grpc"), check); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// TestGRPCConcurrent hammers calls and streams from concurrent requests
// on a pool of instances: every request hears exactly its own answers.
func TestGRPCConcurrent(t *testing.T) {
	u := startGRPCUpstream(t)
	m := newTestManager(t, func(o *Options) { o.Upstreams = grpcClusters(t, u.addr) })
	set := prepare(t, m, testPlugin("grpc", "grpccall", func(p *config.Plugin) {
		p.PoolSize = 2
		p.CallTimeout = config.Duration(time.Second)
		p.AllowedClusters = []string{"grpc"}
	}))
	f := factoryOf(t, set, "grpc")
	const transcript = "initial x-hello=world x-token-seen=abc\nmessage M1\nmessage M2\ntrailing x-count=2\nclose ok"
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				x := newExchange("http://example.com/stream?cluster=grpc&service=wasmgate.test.Echo&method=Chat&n=2")
				want := transcript
				if (g+i)%2 == 0 {
					x = newExchange("http://example.com/unary?cluster=grpc&service=grpc.health.v1.Health&method=Check&svc=svc-b&timeout=5000")
					want = "ok 0802"
				}
				if err := answer(f, x); err != nil {
					t.Error(err)
					return
				}
				if got := string(x.Ctx.Response.Body()); got != want {
					t.Errorf("got %q, want %q", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// answer sends a request the plugin answers itself; it is run's core,
// safe to call from any goroutine.
func answer(f filter.Factory, x *filter.Exchange) error {
	s, err := f.NewStream(x)
	if err != nil {
		return err
	}
	defer s.Done(x)
	if s.OnRequestHeaders(x, true) == filter.Pause && !x.Wait(10*time.Second) {
		return errors.New("paused request was never resumed")
	}
	s.OnLog(x)
	if !x.Local() {
		return errors.New("the plugin did not answer")
	}
	return nil
}

// BenchmarkGRPCUnary measures a request that a plugin answers after one
// unary gRPC call (grpc.health.v1.Health/Check to a local grpc-go server
// over h2c): the request's wait for the call, the call, and its callback.
func BenchmarkGRPCUnary(b *testing.B) {
	u := startGRPCUpstream(b)
	m := newTestManager(b, func(o *Options) { o.Upstreams = grpcClusters(b, u.addr) })
	set := prepare(b, m, testPlugin("grpc", "grpccall", func(p *config.Plugin) {
		p.PoolSize = 1
		p.AllowedClusters = []string{"grpc"}
	}))
	f := factoryOf(b, set, "grpc")
	b.ReportAllocs()
	for b.Loop() {
		x := newExchange("http://example.com/unary?cluster=grpc&service=grpc.health.v1.Health&method=Check&svc=svc-a&timeout=5000")
		if err := answer(f, x); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGRPCTokens checks the statuses of proxy_grpc_send, _cancel and
// _close for each kind of token, as Envoy answers them, on a call made
// through the host functions themselves.
func TestGRPCTokens(t *testing.T) {
	u := startGRPCUpstream(t)
	m, _ := startGRPCPlugin(t, grpcClusters(t, u.addr))
	set := prepare(t, m, testPlugin("raw", "minimal", func(p *config.Plugin) {
		p.PoolSize = 1
		p.AllowedClusters = []string{"grpc"}
	}))
	x := newExchange("http://example.com/")
	st, err := factoryOf(t, set, "raw").NewStream(x)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*stream)
	defer s.Done(x)
	in := s.in
	hostCall := func(fn func(*instance, []uint64) abi.Status, args ...uint64) abi.Status {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.enterStream(s)
		defer in.leave()
		return fn(in, args)
	}
	const base = 0x8000
	write := func(off uint32, b []byte) {
		in.mu.Lock()
		defer in.mu.Unlock()
		if !in.mem.Write(base+off, b) {
			t.Fatal("writing guest memory")
		}
	}
	write(0, []byte("grpc"))
	write(16, []byte("wasmgate.test.Echo"))
	write(48, []byte("Hang"))
	token := func() uint32 {
		in.mu.Lock()
		defer in.mu.Unlock()
		v, _ := in.mem.ReadUint32Le(base + 64)
		return v
	}
	if st := hostCall(hostGRPCCall, base, 4, base+16, 18, base+48, 4, 0, 0, 0, 0, 0, base+64); st != abi.StatusOK {
		t.Fatalf("proxy_grpc_call: %v", st)
	}
	call := token()
	if st := hostCall(hostGRPCStream, base, 4, base+16, 18, base+48, 4, 0, 0, base+64); st != abi.StatusOK {
		t.Fatalf("proxy_grpc_stream: %v", st)
	}
	strm := token()
	if call&3 != 1 || strm&3 != 2 {
		t.Fatalf("tokens %d, %d", call, strm)
	}
	for range 2 {
		select {
		case <-u.started:
		case <-time.After(5 * time.Second):
			t.Fatal("the call and the stream never reached the server")
		}
	}
	tests := []struct {
		name string
		fn   func(*instance, []uint64) abi.Status
		args []uint64
		want abi.Status
	}{
		{"send on a call", hostGRPCSend, []uint64{uint64(call), base, 1, 0}, abi.StatusBadArgument},
		{"send on an HTTP call's token", hostGRPCSend, []uint64{4, base, 1, 0}, abi.StatusBadArgument},
		{"send on an unknown stream", hostGRPCSend, []uint64{uint64(strm) + 400, base, 1, 0}, abi.StatusNotFound},
		{"send with end", hostGRPCSend, []uint64{uint64(strm), base, 1, 1}, abi.StatusOK},
		{"send after the end", hostGRPCSend, []uint64{uint64(strm), base, 1, 0}, abi.StatusBadArgument},
		{"cancel an HTTP call's token", hostGRPCCancel, []uint64{8}, abi.StatusBadArgument},
		{"cancel an unknown call", hostGRPCCancel, []uint64{uint64(call) + 400}, abi.StatusNotFound},
		{"close the call", hostGRPCClose, []uint64{uint64(call)}, abi.StatusOK},
		{"close it again", hostGRPCClose, []uint64{uint64(call)}, abi.StatusNotFound},
		{"cancel the stream", hostGRPCCancel, []uint64{uint64(strm)}, abi.StatusOK},
		{"cancel it again", hostGRPCCancel, []uint64{uint64(strm)}, abi.StatusNotFound},
	}
	for _, tt := range tests {
		if got := hostCall(tt.fn, tt.args...); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	for range 2 {
		select {
		case err := <-u.ended:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("the server saw %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server never saw the call and the stream end")
		}
	}
}
