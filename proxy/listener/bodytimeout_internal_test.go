package listener

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wasmgate/wasmgate/config"
)

// TestBodyReadTimeoutDefault checks that a listener without
// body_read_timeout bounds a body all the same: the deadline fasthttp
// sets once the header is in covers the bytes it reads before the handler
// runs, and the rest (the corpus's slow-body case times a short one out).
func TestBodyReadTimeoutDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  config.Listener
		cl   int
		want time.Duration
	}{
		{"default, Content-Length", config.Listener{}, 1000, DefaultBodyReadTimeout},
		{"default, chunked", config.Listener{}, -1, DefaultBodyReadTimeout},
		{"set", config.Listener{BodyReadTimeout: config.Duration(5 * time.Second)}, 10, 5 * time.Second},
		{"no body", config.Listener{}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			h.SetContentLength(tc.cl)
			if got := headerReceived(tc.cfg)(&h).ReadTimeout; got != tc.want {
				t.Errorf("body deadline %v, want %v", got, tc.want)
			}
		})
	}
	if DefaultBodyReadTimeout <= 0 || DefaultBodyReadTimeout > 5*time.Minute {
		t.Errorf("DefaultBodyReadTimeout = %v", DefaultBodyReadTimeout)
	}
}
