// Command hello is the smallest useful wasmgate plugin: it answers
// GET /hello itself and tags every other request on its way upstream.
//
//	wasmgate plugin build sdk/examples/hello
//	wasmgate plugin test sdk/examples/hello/hello.wasm --request 'GET /hello' --config '{"greeting":"hi"}'
package main

import (
	"encoding/json"

	"github.com/wasmgate/wasmgate/sdk"
)

type config struct {
	// Greeting is what /hello answers; "hello" when empty.
	Greeting string `json:"greeting"`
}

type hello struct {
	sdk.BaseFilter
	greeting string
	served   sdk.Counter
}

func init() {
	sdk.Register(func(raw []byte) (sdk.Filter, error) {
		c := config{Greeting: "hello"}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, err
			}
		}
		served, err := sdk.NewCounter("hello.served")
		if err != nil {
			return nil, err
		}
		return &hello{greeting: c.Greeting, served: served}, nil
	})
}

// Callbacks tells a host that knows (wasmgate) to call the filter for the
// request's headers only: it skips the other callbacks, which would only
// continue.
func (h *hello) Callbacks() sdk.Callbacks { return sdk.CallbackRequestHeaders }

func (h *hello) OnRequestHeaders(r *sdk.Request) sdk.Action {
	if r.Path() == "/hello" {
		h.served.Inc()
		sdk.LogInfof("greeting %s", r.Header().Get("user-agent"))
		return r.Respond(200, []byte(h.greeting+"\n"), sdk.Fields{{"content-type", "text/plain"}})
	}
	r.Header().Set("x-hello", h.greeting)
	return sdk.Continue
}

func main() {}
