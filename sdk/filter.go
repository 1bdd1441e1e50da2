package sdk

import "github.com/wasmgate/wasmgate/sdk/abi"

// Action is what a filter's callback tells the host.
type Action uint32

const (
	// Continue passes the headers, body or trailers on to the next filter.
	Continue Action = Action(abi.ActionContinue)
	// Pause holds the stream. From a headers or trailers callback it
	// waits until the filter calls Resume or Respond (typically from an
	// HTTP call's callback). From a body callback before the end of the
	// body it buffers: the host calls again with the next chunk appended,
	// so returning Pause until endOfStream sees the whole body.
	Pause Action = Action(abi.ActionPause)
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Pause:
		return "pause"
	}
	return "unknown"
}

// Filter handles the HTTP requests of one plugin configuration. The host
// calls its methods on one goroutine, one at a time: a Filter needs no
// locks. The methods a filter does not care about come from an embedded
// BaseFilter.
//
// Request callbacks run in order (headers, body chunks, trailers), then
// the response callbacks, then OnLog once the response has been sent or
// the request has failed. The *Request and *Response handed to a callback
// stay valid, and name the same request, until OnLog returns; keep
// per-request state with Request.SetData.
type Filter interface {
	// OnRequestHeaders sees the request line and headers.
	OnRequestHeaders(r *Request) Action
	// OnRequestBody sees a chunk of the request body (r.Body), or all of
	// it buffered so far after the filter returned Pause.
	OnRequestBody(r *Request, endOfStream bool) Action
	OnRequestTrailers(r *Request) Action
	// OnResponseHeaders sees the status and headers of the response.
	OnResponseHeaders(w *Response) Action
	OnResponseBody(w *Response, endOfStream bool) Action
	OnResponseTrailers(w *Response) Action
	// OnLog runs after the response has been sent: the request and
	// response headers and properties can still be read.
	OnLog(r *Request)
}

// BaseFilter implements every Filter method by continuing. Embed it and
// override what the filter needs.
type BaseFilter struct{}

var _ Filter = BaseFilter{}

func (BaseFilter) OnRequestHeaders(*Request) Action      { return Continue }
func (BaseFilter) OnRequestBody(*Request, bool) Action   { return Continue }
func (BaseFilter) OnRequestTrailers(*Request) Action     { return Continue }
func (BaseFilter) OnResponseHeaders(*Response) Action    { return Continue }
func (BaseFilter) OnResponseBody(*Response, bool) Action { return Continue }
func (BaseFilter) OnResponseTrailers(*Response) Action   { return Continue }
func (BaseFilter) OnLog(*Request)                        {}

// NewFilterFunc builds the Filter of one plugin configuration from the
// configuration's bytes (the plugin's "config", JSON when written as a
// mapping in YAML). An error rejects the configuration: the host does not
// start the plugin, or keeps the previous configuration.
type NewFilterFunc func(config []byte) (Filter, error)

var (
	newFilter NewFilterFunc
	byRootID  map[string]NewFilterFunc
	vmStart   func(vmConfig []byte) error
)

// Register installs the plugin's filter. Call it once, from an init
// function of package main: the host never calls main.
//
// The host calls newFilter for each configuration of the plugin (the
// plugin's own and each route's override), each time it is configured.
// newFilter runs in that configuration's root context, where Tick,
// RegisterQueue and HTTPCall may be set up for the configuration.
func Register(f NewFilterFunc) { newFilter = f }

// RegisterRoot installs the filter that configurations with the given
// root_id select, so that one module can hold several filters and a host
// can run them all in one VM (one Go runtime) as several plugins sharing
// a vm_id. Call it from an init function of package main, once per
// filter. A configuration whose root_id (the plugin_root_id property)
// names no filter registered this way gets Register's filter, or is
// rejected when there is none.
func RegisterRoot(rootID string, f NewFilterFunc) {
	if byRootID == nil {
		byRootID = make(map[string]NewFilterFunc)
	}
	byRootID[rootID] = f
}

// OnVMStart installs a function that sees the plugin's vm_config when an
// instance of the module starts, before any configuration. An error stops
// the instance from starting.
func OnVMStart(f func(vmConfig []byte) error) { vmStart = f }

// Callbacks is a set of Filter methods.
type Callbacks uint32

// The Filter methods, as Callbacks.
const (
	CallbackRequestHeaders Callbacks = 1 << iota
	CallbackRequestBody
	CallbackRequestTrailers
	CallbackResponseHeaders
	CallbackResponseBody
	CallbackResponseTrailers
	CallbackLog
)

// CallbackDeclarer is implemented by a Filter that says which of its
// methods do anything: a host that knows (wasmgate) then skips calling
// the guest for the others, each of which would only have continued. A
// call into a guest and back costs the proxy a few hundred nanoseconds,
// and a filter usually needs two or three of its seven callbacks.
// Callbacks is asked once per configuration, after the filter is built,
// and may depend on the configuration; a method it leaves out is never
// called again for that configuration. Other hosts call every method as
// usual.
//
// A filter that declares CallbackRequestHeaders alone costs wasmgate one
// call per request: when OnRequestHeaders returns Continue with no HTTP or
// gRPC call of its own pending, the request's context ends there (its
// Request is reused for the next one), so such a filter must not keep
// the *Request past OnRequestHeaders. One that pauses, answers or calls
// out keeps its context until the request is done, as any filter.
type CallbackDeclarer interface {
	Callbacks() Callbacks
}
