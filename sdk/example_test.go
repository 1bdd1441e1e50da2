package sdk_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/wasmgate/wasmgate/sdk"
)

// A filter that answers some requests itself and changes the others.
type gate struct {
	sdk.BaseFilter
	token string
}

func (g *gate) OnRequestHeaders(r *sdk.Request) sdk.Action {
	if r.Header().Get("authorization") != "Bearer "+g.token {
		return r.Respond(401, []byte("unauthorized\n"), sdk.Fields{{"www-authenticate", "Bearer"}})
	}
	r.Header().Del("authorization")
	r.Header().Set("x-authenticated", "yes")
	return sdk.Continue
}

func ExampleRegister() {
	sdk.Register(func(cfg []byte) (sdk.Filter, error) {
		if len(cfg) == 0 {
			return nil, errors.New("config: a token is required")
		}
		return &gate{token: string(cfg)}, nil
	})
}

// A request paused while an authorization service decides.
type extAuth struct{ sdk.BaseFilter }

func (extAuth) OnRequestHeaders(r *sdk.Request) sdk.Action {
	req := &sdk.HTTPRequest{Method: "POST", Path: "/check", Header: sdk.Fields{{"x-path", r.Path()}}}
	err := sdk.HTTPCall("authz-service", req, 500*time.Millisecond, func(resp *sdk.HTTPResponse, err error) {
		if err != nil || resp.Status/100 != 2 {
			r.Respond(403, nil, nil)
			return
		}
		r.Resume()
	})
	if err != nil {
		return r.Respond(500, nil, nil)
	}
	return sdk.Pause
}

func ExampleHTTPCall() {
	sdk.Register(func([]byte) (sdk.Filter, error) { return extAuth{}, nil })
}

// A filter that sees the whole request body: Pause until the end buffers.
type upper struct{ sdk.BaseFilter }

func (upper) OnRequestBody(r *sdk.Request, end bool) sdk.Action {
	if !end {
		return sdk.Pause
	}
	b, err := r.Body()
	if err != nil {
		return r.Respond(500, nil, nil)
	}
	r.SetBody(append(b, '\n'))
	return sdk.Continue
}

func ExampleFilter_body() {
	sdk.Register(func([]byte) (sdk.Filter, error) { return upper{}, nil })
}

func ExampleTick() {
	sdk.Register(func([]byte) (sdk.Filter, error) {
		flushed := sdk.Metrics.Counter("batches.flushed")
		err := sdk.Tick(5*time.Second, func() { flushed.Inc() })
		return sdk.BaseFilter{}, err
	})
}

func ExampleFields() {
	h := sdk.Fields{{"content-type", "text/plain"}}
	h.Add("Set-Cookie", "a=1")
	h.Add("set-cookie", "b=2")
	h.Set("Content-Type", "application/json")
	fmt.Println(h.Get("CONTENT-TYPE"))
	fmt.Println(h.Values("set-cookie"))
	h.Del("set-cookie")
	fmt.Println(len(h))
	// Output:
	// application/json
	// [a=1 b=2]
	// 1
}

func ExampleHostError() {
	err := error(&sdk.HostError{Op: "proxy_get_property", Status: 1})
	fmt.Println(err)
	fmt.Println(errors.Is(err, sdk.ErrNotFound))
	// Output:
	// proxy_get_property: not_found
	// true
}

func ExampleAction() {
	fmt.Println(sdk.Continue, sdk.Pause)
	// Output: continue pause
}
