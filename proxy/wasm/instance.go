package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm/internal/guard"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

// instance is one instantiation of a plugin's module. It runs one call at
// a time: every call into it, from a request, a timer, a queue or an HTTP
// call answer, holds mu. Requests are pinned to an instance for their
// whole life, as streams of one Envoy worker are pinned to its VM.
type instance struct {
	vm   *vm
	slot int
	mod  api.Module
	mem  api.Memory
	fn   callbacks
	// invocations counts the host's calls of the module's exports (not
	// the allocator's, made from inside them). Guarded by mu.
	invocations uint64

	mu     sync.Mutex
	broken bool        // guarded by mu: the instance failed or was closed
	dead   atomic.Bool // mirrors broken for lock-free readers
	closed chan struct{}
	cc     callCtx

	stack      [8]uint64 // arguments and results of the outermost call
	allocStack [2]uint64 // of the allocator, called from host functions

	// active counts the requests pinned to the instance.
	active atomic.Int32
	// lastUsed is when the last request pinned to it finished (monotonic).
	lastUsed atomic.Int64
	// retired is set while the pool takes the idle instance out.
	retired atomic.Bool

	nextID  uint32
	roots   []uint32 // root context id by attachment index
	rootSet map[uint32]*attachment
	streams map[uint32]*stream

	// The effective context: a stream, or a root context when cur is nil;
	// curP is the plugin it belongs to (nil outside any context).
	cur     *stream
	curRoot uint32
	curID   uint32
	curP    *plugin

	// Buffers visible during the callback that owns them.
	vmConfig     []byte
	pluginConfig []byte
	callResp     *httpCall

	scratch []byte // serialized maps and properties
	prop    propCtx
	// keyBuf and stateKeys make the names of filter state entries
	// (props.go).
	keyBuf    []byte
	stateKeys map[string]string
	kv        []kv
	pairs     []kv
	keys      []byte
	status    [8]byte

	allocErr bool // the allocator failed inside the current call

	// Of the foreign functions (foreign.go).
	aeads      aeadCache
	foreignOut []byte

	ticks    map[uint32]*ticker
	calls    map[uint32]*httpCall
	nextCall uint32
	grpc     grpcState
}

type kv struct{ k, v []byte }

// callbacks are the module's exports, looked up once.
type callbacks struct {
	alloc, contextCreate, vmStart, configure, done, log, delete_ api.Function
	requestHeaders, requestBody, requestTrailers                 api.Function
	responseHeaders, responseBody, responseTrailers              api.Function
	httpCallResponse, tick, queueReady, start, main              api.Function
	// firstRequestHeaders is wasmgate_on_request_headers, the Go SDK's:
	// proxy_on_context_create and proxy_on_request_headers in one call,
	// whose result may end the context (endedContext).
	firstRequestHeaders api.Function
	guardStart          api.Function // the module's start section, moved by package guard
	// The network (L4) filter's.
	newConnection, downstreamData, upstreamData api.Function
	downstreamClose, upstreamClose              api.Function
}

// callCtx is the context of every call into one instance. It carries the
// instance to host functions and implements the call deadline without
// allocating. A call's deadline is a budget of CPU time, counted on the
// thread that runs the call: time the thread spends descheduled, or
// blocked in a host function, does not count (see RATIONALE). How the
// budget is enforced depends on the plugin's stopMode.
//
// With stopInterrupt the guest itself calls checkDeadline (package guard's
// import) every guard.Interval loop iterations. The first check of a call
// reads the wall clock and sets a checkpoint half a budget ahead: before
// it, the call cannot have used half its budget (a thread's CPU time never
// grows faster than the wall clock), and checks read nothing but the wall
// clock. Past it, a check locks the goroutine to its thread, reads the
// thread's CPU clock and from then counts a whole budget of CPU time. A
// call that ends before its checkpoint, nearly every call, costs no system
// call and no clock read at its start or end; a call that ends past it
// has had at least its budget of CPU time, and a call in an endless loop
// is cut off after at most one and a half budgets.
//
// With stopWatch, a timer fires the context, whose Done channel closing
// makes wazero close the module. Each call locks its thread and reads its
// CPU clock; the timer, when the checkpoint passes, reads that thread's
// CPU clock from its own goroutine and either fires or re-arms for the
// budget left. The timer stays armed while calls follow one another: when
// it fires it either finds the running call over budget (and fires the
// context), or re-arms itself, or, between calls, stops. Calls with a
// longer deadline than the request path's (start-up) stop it when they
// end, so that an armed timer never fires after the deadline of the call
// in progress.
type callCtx struct {
	in    *instance
	done  chan struct{}
	fired atomic.Bool
	timer *time.Timer

	// deadline is the running call's checkpoint, in monotonic ns: the
	// wall time before which it cannot have used its budget; 0 between
	// calls.
	deadline atomic.Int64
	budget   atomic.Int64 // CPU ns the running call may use
	cpuStart atomic.Int64 // the thread's CPU clock when counting began
	clock    atomic.Int32 // stopWatch: the CPU clock of the call's thread
	checked  bool         // stopInterrupt: the call has made its first check
	counting bool         // the call holds its thread and cpuStart is set
	lastCPU  int64        // CPU ns counted in the last call; 0 when it counted none
	armed    atomic.Bool  // the timer is set, or its function is running
	timed    bool         // the timer enforces the deadline (stopWatch)
}

// clockBase is the origin of monotonic(), which reads only the monotonic
// clock (time.Now reads the wall clock too).
var clockBase = time.Now()

func monotonic() int64 { return int64(time.Since(clockBase)) }

// begin starts the deadline of a call that may use d of CPU time. It runs
// on the goroutine that makes the call.
func (c *callCtx) begin(d time.Duration) {
	c.budget.Store(int64(d))
	if !c.timed {
		// No clock yet: the first check reads it (checkDeadline).
		c.deadline.Store(math.MaxInt64)
		return
	}
	c.countFromHere()
	c.deadline.Store(monotonic() + int64(d))
	if c.armed.CompareAndSwap(false, true) {
		c.timer.Reset(d)
	}
}

// countFromHere locks the calling goroutine to its thread and starts
// counting the call's CPU time on it.
func (c *callCtx) countFromHere() {
	runtime.LockOSThread()
	c.counting = true
	if c.timed {
		c.clock.Store(threadClock())
	}
	c.cpuStart.Store(threadCPU())
}

// end ends the deadline of the call begun last; long calls disarm the
// timer, whose next firing may be past the next call's deadline.
func (c *callCtx) end(long bool) {
	c.deadline.Store(0)
	c.checked = false
	c.lastCPU = 0
	if c.counting {
		c.lastCPU = threadCPU() - c.cpuStart.Load()
		c.counting = false
		runtime.UnlockOSThread()
	}
	if long && c.timed {
		c.timer.Stop()
		c.armed.Store(false)
	}
}

// expire makes the running call's budget spent, as if it had used it all.
func (c *callCtx) expire() {
	c.budget.Store(0)
	c.deadline.Store(1)
}

// check is the timer's function.
func (c *callCtx) check() {
	for {
		dl := c.deadline.Load()
		if dl == 0 {
			c.armed.Store(false)
			// A call that began since the load may have found the timer
			// armed: arm it for that call unless the call did.
			if c.deadline.Load() == 0 || !c.armed.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		now := monotonic()
		if left := dl - now; left > 0 {
			c.timer.Reset(time.Duration(left))
			return
		}
		// Past the checkpoint: how much CPU has the call's thread used?
		left := c.budget.Load() - (clockCPU(c.clock.Load()) - c.cpuStart.Load())
		// dl was read before the clocks: act only if its call is still
		// the one running, not a later call that began since.
		if c.deadline.Load() != dl {
			continue
		}
		if left <= 0 {
			c.fire()
			return
		}
		if c.deadline.CompareAndSwap(dl, now+left) {
			c.timer.Reset(time.Duration(left))
			return
		}
	}
}

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callCtx) Done() <-chan struct{}       { return c.done }
func (c *callCtx) Value(any) any               { return nil }
func (c *callCtx) Err() error {
	if c.fired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *callCtx) fire() {
	if c.fired.CompareAndSwap(false, true) {
		close(c.done)
	}
}

// checkDeadline is package guard's import: the guest calls it every
// guard.Interval loop iterations, on the goroutine of the call, and traps
// when it returns non-zero.
func checkDeadline(ctx context.Context, stack []uint64) {
	stack[0] = 0
	c, ok := ctx.(*callCtx)
	if !ok {
		return
	}
	if dl := c.deadline.Load(); dl != 0 {
		now := monotonic()
		switch {
		case !c.checked:
			// The first check of the call: until half a budget of wall
			// time has passed, the call cannot have used half its budget.
			c.checked = true
			c.deadline.CompareAndSwap(dl, now+c.budget.Load()/2)
		case now <= dl:
		case !c.counting:
			// Past the checkpoint: count the thread's CPU time from here,
			// a whole budget. What ran before (at most half a budget, and
			// the iterations since the last check) is not counted.
			c.countFromHere()
			c.deadline.CompareAndSwap(dl, now+c.budget.Load())
		default:
			left := c.budget.Load() - (threadCPU() - c.cpuStart.Load())
			if left <= 0 {
				c.fire()
			} else {
				c.deadline.CompareAndSwap(dl, now+left)
			}
		}
	}
	if c.fired.Load() {
		stack[0] = 1
	}
}

var (
	// errDeadline is reported for a call that overran its deadline.
	errDeadline = errors.New("call overran its deadline")
	// errAllocator is reported for a call during which the guest's
	// allocator failed.
	errAllocator = errors.New("guest allocator failed")
)

// newInstance instantiates the module, runs its start function and starts
// a root context per attachment of every plugin of the VM. Callers hold
// v.mu.
func (v *vm) newInstance(slot int) (*instance, error) {
	in := &instance{
		vm:      v,
		slot:    slot,
		closed:  make(chan struct{}),
		nextID:  1,
		rootSet: make(map[uint32]*attachment),
		streams: make(map[uint32]*stream),
		ticks:   make(map[uint32]*ticker),
		calls:   make(map[uint32]*httpCall),
		scratch: make([]byte, 0, 4096),
		kv:      make([]kv, 0, 32),
	}
	in.cc.in, in.cc.done = in, make(chan struct{})
	in.cc.timed = v.stop == stopWatch
	in.cc.timer = time.AfterFunc(time.Hour, in.cc.check)
	in.cc.timer.Stop()

	logw := &guestWriter{log: v.log}
	name := v.name + "#" + strconv.FormatUint(v.seq.Add(1), 10)
	mc := wazero.NewModuleConfig().
		WithName(name).
		WithStartFunctions().
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStdout(logw).
		WithStderr(logw)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cc.begin(startTimeout(v.callTimeout))
	mod, err := v.rt.InstantiateModule(&in.cc, v.compiled, mc)
	in.cc.end(true)
	if err != nil {
		return nil, fmt.Errorf("instantiating module: %w", err)
	}
	in.mod = mod
	in.mem = mod.Memory()
	in.lookup()
	fail := func(err error) (*instance, error) {
		in.discard(err)
		return nil, err
	}
	if in.fn.guardStart != nil {
		if _, err := in.invokeLong(in.fn.guardStart); err != nil {
			return fail(fmt.Errorf("start function: %w", err))
		}
	}
	if in.fn.start != nil {
		if _, err := in.invokeLong(in.fn.start); err != nil {
			return fail(fmt.Errorf("%s: %w", v.startFn, err))
		}
		if in.fn.main != nil {
			if _, err := in.invokeLong(in.fn.main, 0, 0); err != nil {
				return fail(fmt.Errorf("main: %w", err))
			}
		}
	}
	for _, a := range v.atts {
		if err := in.startRoot(a); err != nil {
			return fail(err)
		}
	}
	if slot == 0 {
		v.pages.CompareAndSwap(0, in.mem.Size()/65536)
	}
	in.lastUsed.Store(monotonic())
	return in, nil
}

func (in *instance) lookup() {
	m := in.mod
	f := &in.fn
	f.alloc = m.ExportedFunction(in.vm.allocFn)
	f.contextCreate = m.ExportedFunction("proxy_on_context_create")
	f.vmStart = m.ExportedFunction("proxy_on_vm_start")
	f.configure = m.ExportedFunction("proxy_on_configure")
	f.done = m.ExportedFunction("proxy_on_done")
	f.log = m.ExportedFunction("proxy_on_log")
	f.delete_ = m.ExportedFunction("proxy_on_delete")
	f.requestHeaders = m.ExportedFunction("proxy_on_request_headers")
	f.firstRequestHeaders = m.ExportedFunction("wasmgate_on_request_headers")
	if f.firstRequestHeaders != nil && !sameSignature(f.firstRequestHeaders, 4, 1) {
		f.firstRequestHeaders = nil
	}
	f.requestBody = m.ExportedFunction("proxy_on_request_body")
	f.requestTrailers = m.ExportedFunction("proxy_on_request_trailers")
	f.responseHeaders = m.ExportedFunction("proxy_on_response_headers")
	f.responseBody = m.ExportedFunction("proxy_on_response_body")
	f.responseTrailers = m.ExportedFunction("proxy_on_response_trailers")
	f.httpCallResponse = m.ExportedFunction("proxy_on_http_call_response")
	f.tick = m.ExportedFunction("proxy_on_tick")
	f.queueReady = m.ExportedFunction("proxy_on_queue_ready")
	f.newConnection = m.ExportedFunction("proxy_on_new_connection")
	f.downstreamData = m.ExportedFunction("proxy_on_downstream_data")
	f.upstreamData = m.ExportedFunction("proxy_on_upstream_data")
	f.downstreamClose = m.ExportedFunction("proxy_on_downstream_connection_close")
	f.upstreamClose = m.ExportedFunction("proxy_on_upstream_connection_close")
	if in.vm.startFn != "" {
		f.start = m.ExportedFunction(in.vm.startFn)
	}
	if in.vm.mainFn {
		f.main = m.ExportedFunction("main")
	}
	f.guardStart = m.ExportedFunction(guard.Start)
}

// startRoot creates, starts and configures the root context of an
// attachment; on error the instance does not keep it. Callers hold in.mu.
func (in *instance) startRoot(a *attachment) (err error) {
	id := in.newID()
	for len(in.roots) <= a.index {
		in.roots = append(in.roots, 0)
	}
	in.roots[a.index] = id
	in.rootSet[id] = a
	in.enterRoot(id)
	defer func() {
		in.leave()
		if err != nil {
			in.dropRoot(a) // the error returned says what went wrong
		}
	}()
	if _, err := in.invokeLong(in.fn.contextCreate, uint64(id), 0); err != nil {
		return fmt.Errorf("proxy_on_context_create: %w", err)
	}
	in.vmConfig = in.vm.vmConfig
	ok, err := in.invokeLong(in.fn.vmStart, uint64(id), uint64(len(in.vmConfig)))
	in.vmConfig = nil
	if err != nil {
		return fmt.Errorf("proxy_on_vm_start: %w", err)
	}
	if in.fn.vmStart != nil && uint32(ok) == 0 {
		return errors.New("proxy_on_vm_start rejected the VM configuration")
	}
	in.pluginConfig = a.config
	ok, err = in.invokeLong(in.fn.configure, uint64(id), uint64(len(a.config)))
	in.pluginConfig = nil
	if err != nil {
		return fmt.Errorf("proxy_on_configure: %w", err)
	}
	if in.fn.configure != nil && uint32(ok) == 0 {
		return errors.New("proxy_on_configure rejected the plugin configuration")
	}
	return nil
}

// dropRoot deletes the root context of an attachment, with its timer,
// its HTTP calls and its queue subscriptions (proxy_on_done, then
// proxy_on_delete, as Envoy deletes the root context of a removed
// plugin). It returns the error of a call that failed, which leaves the
// instance broken. Callers hold in.mu.
func (in *instance) dropRoot(a *attachment) (err error) {
	if a.index >= len(in.roots) || in.roots[a.index] == 0 {
		return nil
	}
	id := in.roots[a.index]
	in.roots[a.index] = 0
	in.setTick(id, 0)
	in.cancelCalls(id)
	in.vm.m.shared.dropRoot(in, id)
	if !in.broken {
		in.enterRoot(id)
		_, err = in.invokeLong(in.fn.done, uint64(id))
		if err == nil {
			_, err = in.invokeLong(in.fn.delete_, uint64(id))
		}
		in.leave()
	}
	// What the context still had open ends with it, after its last
	// callbacks (on_done may close its streams itself).
	in.cancelGRPC(id)
	delete(in.rootSet, id)
	return err
}

func (in *instance) newID() uint32 {
	id := in.nextID
	in.nextID++
	if in.nextID == 0 {
		in.nextID = 1
	}
	return id
}

// enterRoot makes a root context the effective one.
func (in *instance) enterRoot(id uint32) {
	in.cur, in.curRoot, in.curID, in.curP = nil, id, id, nil
	if a := in.rootSet[id]; a != nil {
		in.curP = a.p
	}
}

// enterStream makes a stream the effective context.
func (in *instance) enterStream(s *stream) {
	in.cur, in.curRoot, in.curID, in.curP = s, s.root, s.id, s.p
}

func (in *instance) leave() {
	in.cur, in.curRoot, in.curID, in.curP = nil, 0, 0, nil
}

// logger is the log of the effective context's plugin, or of the VM
// outside any context.
func (in *instance) logger() *zap.Logger {
	if in.curP != nil {
		return in.curP.log
	}
	return in.vm.log
}

// pluginName names the effective context's plugin in metrics: the
// plugin's name, or the VM's outside any context.
func (in *instance) pluginName() string {
	if in.curP != nil {
		return in.curP.cfg.Name
	}
	return in.vm.name
}

// sameSignature reports whether fn takes params i32s and returns results
// i32s: an export of a name the host gives a meaning to, but of another
// shape, is not the one it means.
func sameSignature(fn api.Function, params, results int) bool {
	d := fn.Definition()
	if len(d.ParamTypes()) != params || len(d.ResultTypes()) != results {
		return false
	}
	for _, ts := range [][]api.ValueType{d.ParamTypes(), d.ResultTypes()} {
		for _, t := range ts {
			if t != api.ValueTypeI32 {
				return false
			}
		}
	}
	return true
}

// invoke calls fn with args under the instance's call deadline and returns
// its first result. A nil fn (a callback the module does not export)
// returns 0. Callers hold in.mu.
func (in *instance) invoke(fn api.Function, args ...uint64) (uint64, error) {
	return in.invokeWithin(in.vm.callTimeout, false, fn, args...)
}

// invokeLong is invoke with the start-up deadline.
func (in *instance) invokeLong(fn api.Function, args ...uint64) (uint64, error) {
	return in.invokeWithin(startTimeout(in.vm.callTimeout), true, fn, args...)
}

func (in *instance) invokeWithin(d time.Duration, long bool, fn api.Function, args ...uint64) (r uint64, err error) {
	if in.broken {
		return 0, errBroken
	}
	if fn == nil {
		return 0, nil
	}
	n := copy(in.stack[:], args)
	if n < len(args) {
		return 0, errors.New("too many arguments")
	}
	in.invocations++
	in.cc.begin(d)
	defer func() {
		in.cc.end(long)
		if p := recover(); p != nil {
			err = fmt.Errorf("host panic: %v", p)
		}
		if in.cc.fired.Load() {
			err = errDeadline
		}
	}()
	if err = fn.CallWithStack(&in.cc, in.stack[:]); err != nil {
		if in.cc.fired.Load() {
			err = fmt.Errorf("%w: %v", errDeadline, err)
		}
		return 0, err
	}
	if in.allocErr {
		in.allocErr = false
		return 0, errAllocator
	}
	return in.stack[0], nil
}

// alloc reserves size bytes in guest memory through the module's
// allocator. Called from host functions, inside a call.
func (in *instance) alloc(size uint32) (uint32, bool) {
	if in.fn.alloc == nil {
		return 0, false
	}
	in.allocStack[0] = uint64(size)
	if err := in.fn.alloc.CallWithStack(&in.cc, in.allocStack[:]); err != nil {
		in.vm.failedAlloc(in, err)
		return 0, false
	}
	ptr := uint32(in.allocStack[0])
	return ptr, ptr != 0 || size == 0
}

// failedAlloc notes a failure inside the allocator; the outer call sees the
// instance broken once it returns.
func (v *vm) failedAlloc(in *instance, err error) {
	in.logger().Warn("wasm allocator failed", zap.Error(err))
	in.allocErr = true
}

// copyOut copies data into newly allocated guest memory and writes its
// address and length at ptrPtr and sizePtr. data must not alias guest
// memory: allocating may move it.
func (in *instance) copyOut(data []byte, ptrPtr, sizePtr uint32) abi.Status {
	if len(data) == 0 {
		if !in.mem.WriteUint32Le(ptrPtr, 0) || !in.mem.WriteUint32Le(sizePtr, 0) {
			return abi.StatusInvalidMemoryAccess
		}
		return abi.StatusOK
	}
	ptr, ok := in.alloc(uint32(len(data)))
	if !ok {
		return abi.StatusInternalFailure
	}
	if !in.mem.Write(ptr, data) || !in.mem.WriteUint32Le(ptrPtr, ptr) ||
		!in.mem.WriteUint32Le(sizePtr, uint32(len(data))) {
		return abi.StatusInvalidMemoryAccess
	}
	return abi.StatusOK
}

// discard marks the instance broken, closes its module and fails the
// requests paused on it. Callers hold in.mu.
func (in *instance) discard(cause error) {
	if in.broken {
		return
	}
	in.broken = true
	in.dead.Store(true)
	// An armed deadline timer would keep the instance reachable until it
	// fires.
	in.cc.timer.Stop()
	close(in.closed)
	in.vm.m.shared.dropInstance(in)
	for _, s := range in.streams {
		s.instanceLost(cause)
	}
	for _, c := range in.calls {
		c.canceled = true
	}
	if in.mod != nil {
		in.mod.Close(context.Background())
	}
}

// guestWriter sends what a guest writes to stdout and stderr to the log.
type guestWriter struct{ log *zap.Logger }

func (w *guestWriter) Write(b []byte) (int, error) {
	w.log.Info("wasm guest output", zap.ByteString("text", b))
	return len(b), nil
}

// failureKind classifies a failed call for metrics.
func failureKind(err error) string {
	var exit interface{ ExitCode() uint32 }
	switch {
	case errors.Is(err, errDeadline):
		return "timeout"
	case errors.As(err, &exit):
		if exit.ExitCode() == 0 {
			return "exit"
		}
		return "abort"
	case err != nil && containsAny(err.Error(), "host panic"):
		return "host_panic"
	}
	return "trap"
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
	}
	return false
}

var _ context.Context = (*callCtx)(nil)

// exchange returns the exchange of the effective stream, or nil. A
// connection's (a network filter's) has no HTTP request: see
// httpExchange.
func (in *instance) exchange() *filter.Exchange {
	if in.cur == nil {
		return nil
	}
	return in.cur.x
}

// httpExchange returns the exchange of the effective stream when it is an
// HTTP request's, or nil.
func (in *instance) httpExchange() *filter.Exchange {
	if in.cur == nil || in.cur.x.Ctx == nil {
		return nil
	}
	return in.cur.x
}
