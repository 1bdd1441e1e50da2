package wasm

import (
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/proxy/filter"
)

// TestCallbackResults: the results of a module built by another SDK are
// read as Envoy reads them. Request and response headers: 0 and 2
// (ContinueAndEndStream) go on, 1, 3 (StopAllIterationAndBuffer), 4
// (StopAllIterationAndWatermark) and larger hold the stream; a body
// callback holds it for anything but 0.
func TestCallbackResults(t *testing.T) {
	m := newTestManager(t)
	set := prepare(t, m, testPlugin("actions", "actions"))
	f := factoryOf(t, set, "actions")
	for result, want := range map[int][3]filter.Status{
		0: {filter.Continue, filter.Continue, filter.Continue},
		1: {filter.Pause, filter.Buffer, filter.Pause},
		2: {filter.Continue, filter.Buffer, filter.Continue},
		3: {filter.Pause, filter.Buffer, filter.Pause},
		4: {filter.Pause, filter.Buffer, filter.Pause},
		7: {filter.Pause, filter.Buffer, filter.Pause},
	} {
		// :path is one byte longer than the result the module returns.
		x := newExchange("http://example.com/" + strings.Repeat("a", result))
		s, err := f.NewStream(x)
		if err != nil {
			t.Fatal(err)
		}
		req := s.OnRequestHeaders(x, false)
		body := s.OnRequestBody(x, &filter.Body{B: []byte("part")}, false)
		x.Ctx.Response.SetStatusCode(200)
		resp := s.OnResponseHeaders(x, false)
		if got := [3]filter.Status{req, body, resp}; got != want {
			t.Errorf("result %d: request headers, body, response headers %v, want %v", result, got, want)
		}
		s.Done(x)
	}
}
