// Command oneshot is a filter of the project's SDK that declares the
// request headers callback alone, for the host's tests of
// wasmgate_on_request_headers, the call that creates a request's context
// and, when the filter needs nothing more, ends it. Configured "log", it
// declares the log callback too and counts what it logs. By path:
//
//	/call     asks cluster "auth" (/check, with the request's x-user) and
//	          pauses; the answer's body goes upstream as x-auth
//	/deny     answers 403 itself
//	anything else: x-oneshot: <n> goes upstream, n counting the
//	          requests this instance's configuration has seen
package main

import (
	"strconv"
	"time"

	"github.com/wasmgate/wasmgate/sdk"
)

func init() {
	sdk.Register(func(cfg []byte) (sdk.Filter, error) {
		f := &filter{log: string(cfg) == "log"}
		if f.log {
			c, err := sdk.NewCounter("oneshot.logged")
			if err != nil {
				return nil, err
			}
			f.logged = c
		}
		return f, nil
	})
}

func main() {}

type filter struct {
	sdk.BaseFilter
	log    bool
	seen   int
	logged sdk.Counter
}

func (f *filter) Callbacks() sdk.Callbacks {
	if f.log {
		return sdk.CallbackRequestHeaders | sdk.CallbackLog
	}
	return sdk.CallbackRequestHeaders
}

func (f *filter) OnRequestHeaders(r *sdk.Request) sdk.Action {
	f.seen++
	switch r.Path() {
	case "/call":
		err := sdk.HTTPCall("auth", &sdk.HTTPRequest{Path: "/check", Header: sdk.Fields{{"x-user", r.Header().Get("x-user")}}}, time.Second,
			func(resp *sdk.HTTPResponse, err error) {
				if err != nil {
					r.Respond(503, nil, nil)
					return
				}
				r.Header().Set("x-auth", string(resp.Body))
				r.Resume()
			})
		if err != nil {
			return r.Respond(500, []byte(err.Error()), nil)
		}
		return sdk.Pause
	case "/deny":
		return r.Respond(403, []byte("denied"), nil)
	}
	r.Header().Set("x-oneshot", strconv.Itoa(f.seen))
	return sdk.Continue
}

func (f *filter) OnLog(*sdk.Request) {
	if f.log {
		f.logged.Inc()
	}
}
