package sdk

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// rootContext is one configuration of the plugin in this instance.
type rootContext struct {
	id     uint32
	filter Filter
	tick   func()
	queues map[uint32]func()
	// headersOnly: the filter declared that it needs the request headers
	// callback alone, so a request that continues from it needs nothing
	// more (onFirstRequestHeaders).
	headersOnly bool
}

// The state of the instance. The host calls in one at a time, so none of
// it needs a lock.
var (
	roots   = map[uint32]*rootContext{}
	streams streamTable
	calls   = map[uint32]*pendingCall{}

	// lastRoot is the root context found last: requests nearly always
	// belong to the same configuration as the one before.
	lastRoot *rootContext
	// rootList holds the same root contexts as roots. A module holding
	// several filters, chained on one route, switches root at every
	// callback; a scan of a few pointers finds it without the runtime's
	// map lookup (hashing, probing: several calls and loops in a guest).
	rootList []*rootContext

	// The context of the running callback: its root, and its request
	// when it is a request's.
	curRoot   *rootContext
	curStream *Request

	free []*Request // requests kept for reuse
	// oneShot is the request onFirstRequestHeaders reuses for requests
	// that end in their first callback.
	oneShot *Request
)

// maxFree bounds the requests kept for reuse: as many as an instance
// has open at once under load (a few per connection of a busy proxy), so
// that opening one does not allocate.
const maxFree = 256

func enterRoot(root *rootContext) { curRoot, curStream = root, nil }

func enterStream(r *Request) { curRoot, curStream = r.root, r }

func leave() { curRoot, curStream = nil, nil }

// rootOf returns the root context of id, or nil.
func rootOf(id uint32) *rootContext {
	if r := lastRoot; r != nil && r.id == id {
		return r
	}
	var r *rootContext
	if len(rootList) <= scannedRoots {
		for _, c := range rootList {
			if c.id == id {
				r = c
				break
			}
		}
	} else {
		r = roots[id]
	}
	if r != nil {
		lastRoot = r
	}
	return r
}

// scannedRoots is how many root contexts rootOf scans before it uses the
// map instead.
const scannedRoots = 16

func onContextCreate(id, parent uint32) {
	if parent == 0 {
		if old := roots[id]; old != nil {
			dropRoot(old)
		}
		r := &rootContext{id: id}
		roots[id] = r
		rootList = append(rootList, r)
		return
	}
	root := rootOf(parent)
	if root == nil {
		return
	}
	r := newRequest()
	*r = Request{id: id, root: root}
	r.resp.r, r.conn.r = r, r
	streams.put(r)
}

// newRequest returns a request kept for reuse, or a new one.
func newRequest() *Request {
	if n := len(free); n > 0 {
		r := free[n-1]
		free = free[:n-1]
		return r
	}
	return new(Request)
}

func onVMStart(id, size uint32) bool {
	root := rootOf(id)
	if root == nil || vmStart == nil {
		return true
	}
	enterRoot(root)
	defer leave()
	cfg, err := readBuffer(abi.BufferVMConfiguration, size)
	if err == nil {
		err = vmStart(cfg)
	}
	if err != nil {
		logf(abi.LogLevelError, "vm_config rejected: %v", err)
		return false
	}
	return true
}

func onConfigure(id, size uint32) bool {
	root := rootOf(id)
	if root == nil {
		return false
	}
	enterRoot(root)
	defer leave()
	refreshLogLevel()
	nf, err := filterOf()
	if err != nil {
		logf(abi.LogLevelCritical, "%v", err)
		return false
	}
	cfg, err := readBuffer(abi.BufferPluginConfiguration, size)
	if err != nil {
		logf(abi.LogLevelError, "reading the plugin configuration: %v", err)
		return false
	}
	f, err := nf(cfg)
	if err != nil {
		logf(abi.LogLevelError, "plugin configuration rejected: %v", err)
		return false
	}
	if f == nil {
		f = BaseFilter{}
	}
	root.filter = f
	root.headersOnly = false
	if d, ok := f.(CallbackDeclarer); ok {
		c := d.Callbacks()
		declareCallbacks(c)
		root.headersOnly = c == CallbackRequestHeaders
	}
	return true
}

// declareCallbacks tells the host which callbacks the filter of the
// effective root context needs (wasmgate's foreign function
// wasmgate_callbacks: the set, 4 bytes little-endian). Hosts without it
// call every callback, which is right too.
func declareCallbacks(c Callbacks) {
	b := [4]byte{byte(c), byte(c >> 8), byte(c >> 16), byte(c >> 24)}
	_, _ = CallForeignFunction(callbacksFunction, b[:])
}

const callbacksFunction = "wasmgate_callbacks"

// filterOf returns the function that builds the filter of a root
// context: the one registered for its root_id, else Register's.
func filterOf() (NewFilterFunc, error) {
	if len(byRootID) > 0 {
		id, err := PropertyString("plugin_root_id")
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if f := byRootID[id]; f != nil {
			return f, nil
		}
		if newFilter == nil {
			names := make([]string, 0, len(byRootID))
			for n := range byRootID {
				names = append(names, strconv.Quote(n))
			}
			sort.Strings(names)
			return nil, fmt.Errorf("no filter for root_id %q: this module holds %s", id, strings.Join(names, ", "))
		}
	}
	if newFilter == nil {
		return nil, errors.New("the plugin registered no filter: call sdk.Register from an init function")
	}
	return newFilter, nil
}

func readBuffer(t abi.BufferType, size uint32) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	b, st := hostGetBuffer(t, 0, size)
	if st == abi.StatusNotFound {
		return nil, nil
	}
	return b, check("proxy_get_buffer_bytes", st)
}

// stream returns the request of id with its filter, entering its context.
// The callbacks below leave the context explicitly rather than with a
// defer: a panic kills the instance, so there is nothing to restore.
func stream(id uint32) (*Request, Filter) {
	r := streams.get(id)
	if r == nil || r.root.filter == nil {
		return nil, nil
	}
	enterStream(r)
	return r, r.root.filter
}

func onRequestHeaders(id, _ uint32, eos bool) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = eos, 0
	a := f.OnRequestHeaders(r)
	leave()
	return a
}

// endedContext is the bit of onFirstRequestHeaders's result that says
// the request's context is over: the host calls nothing more for it, not
// even proxy_on_delete.
const endedContext = 1 << 31

// onFirstRequestHeaders is wasmgate's wasmgate_on_request_headers: the
// request's context is created with its first callback, in one call
// rather than two. When the filter needs nothing after the request
// headers (headersOnly) and the request goes on with nothing of the
// filter's pending (an HTTP or gRPC call), the context ends in the same
// call, and the host does not call proxy_on_delete for it: a headers-only
// filter then costs one call into the guest per request instead of
// three. The request is then the reused oneShot, never entered in the
// table; one that is kept takes its place.
func onFirstRequestHeaders(id, parent, n uint32, eos bool) uint32 {
	root := rootOf(parent)
	if root == nil || !root.headersOnly || root.filter == nil {
		onContextCreate(id, parent)
		return uint32(onRequestHeaders(id, n, eos))
	}
	r := oneShot
	if r == nil {
		r = newRequest()
	}
	*r = Request{id: id, root: root, endOfStream: eos}
	r.resp.r, r.conn.r = r, r
	enterStream(r)
	a := root.filter.OnRequestHeaders(r)
	leave()
	if a == Continue && !pending(r) {
		r.data = nil
		oneShot = r
		return uint32(a) | endedContext
	}
	// The request stays: later calls find it in the table, and callbacks
	// the filter left behind still hold it.
	oneShot = nil
	streams.put(r)
	return uint32(a)
}

// pending reports whether an HTTP or gRPC call made for r is still open.
func pending(r *Request) bool {
	if len(calls) > 0 {
		for _, c := range calls {
			if c.stream == r {
				return true
			}
		}
	}
	if len(grpcPending) > 0 {
		for _, c := range grpcPending {
			if c.stream == r {
				return true
			}
		}
	}
	return false
}

func onRequestBody(id, size uint32, eos bool) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = eos, size
	a := f.OnRequestBody(r, eos)
	r.bodySize = 0
	leave()
	return a
}

func onRequestTrailers(id, _ uint32) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = true, 0
	a := f.OnRequestTrailers(r)
	leave()
	return a
}

func onResponseHeaders(id, _ uint32, eos bool) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = eos, 0
	a := f.OnResponseHeaders(&r.resp)
	leave()
	return a
}

func onResponseBody(id, size uint32, eos bool) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = eos, size
	a := f.OnResponseBody(&r.resp, eos)
	r.bodySize = 0
	leave()
	return a
}

func onResponseTrailers(id, _ uint32) Action {
	r, f := stream(id)
	if r == nil {
		return Continue
	}
	r.endOfStream, r.bodySize = true, 0
	a := f.OnResponseTrailers(&r.resp)
	leave()
	return a
}

func onLog(id uint32) {
	r, f := stream(id)
	if r == nil {
		return
	}
	if r.isConn {
		leave() // a connection's: OnConnectionClose has told the filter
		return
	}
	f.OnLog(r)
	leave()
}

func onDelete(id uint32) {
	if r := streams.del(id); r != nil {
		if len(grpcPending) > 0 {
			dropGRPC(r)
		}
		if len(calls) > 0 {
			for k, c := range calls {
				if c.stream == r {
					delete(calls, k)
				}
			}
		}
		*r = Request{}
		if len(free) < maxFree {
			free = append(free, r)
		}
		return
	}
	if r := roots[id]; r != nil {
		dropRoot(r)
	}
	lastRoot = nil
	for k := range metricIDs {
		if k.root == id {
			delete(metricIDs, k)
		}
	}
}

// dropRoot forgets a root context.
func dropRoot(r *rootContext) {
	delete(roots, r.id)
	if i := slices.Index(rootList, r); i >= 0 {
		rootList = slices.Delete(rootList, i, i+1)
	}
}

func onTick(id uint32) {
	root := rootOf(id)
	if root == nil || root.tick == nil {
		return
	}
	enterRoot(root)
	defer leave()
	root.tick()
}

func onQueueReady(id, queue uint32) {
	root := rootOf(id)
	if root == nil {
		return
	}
	fn := root.queues[queue]
	if fn == nil {
		return
	}
	enterRoot(root)
	defer leave()
	fn()
}

// errNoRoot is returned by functions that must run in a root context's
// callback (or a request's, whose root they then use).
var errNoRoot = errors.Join(ErrNoContext, errors.New("call it from Register's function, a tick, a queue or an HTTP call callback, or a request callback"))

// InRootContext runs fn in the root context of the current request's
// configuration: work started there (an HTTPCall, say) belongs to the
// configuration, not to the request, and outlives it. Called outside a
// request's callback, it runs fn in the current root context.
func InRootContext(fn func()) error {
	r, root := curStream, curRoot
	if root == nil {
		return errNoRoot
	}
	if r == nil {
		fn()
		return nil
	}
	if err := check("proxy_set_effective_context", hostSetEffectiveContext(root.id)); err != nil {
		return err
	}
	enterRoot(root)
	defer func() {
		hostSetEffectiveContext(r.id)
		enterStream(r)
	}()
	fn()
	return nil
}
