// Command grpccall makes gRPC calls and streams with the project's SDK
// and answers each request with what it saw, for the host's tests. The
// request pauses until the call ends. Paths, with parameters in the query:
//
//	/unary?cluster=&service=&method=&timeout=ms&svc=
//	    one call; the message is a grpc.health.v1.HealthCheckRequest for
//	    svc. Answers "ok <hex of the response>", "status <code> <message>"
//	    or "refused <error>".
//	/stream?cluster=&service=&method=&n=
//	    a stream sending n messages "m1".."mn", the last with end of
//	    stream, and metadata x-token: abc. Answers its transcript.
//	/cancel?cluster=&service=&method=
//	    opens a stream and sends one message; once the upstream's headers
//	    arrive, cancels it and sends again. Answers "cancelled <error of
//	    the send after>".
//	/background?cluster=&service=&method=
//	    opens a stream in the root context, which outlives the request,
//	    sends one message and answers "opened".
package main

import (
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wasmgate/wasmgate/sdk"
)

func init() {
	sdk.Register(func([]byte) (sdk.Filter, error) { return &filter{}, nil })
}

func main() {}

type filter struct{ sdk.BaseFilter }

func (f *filter) OnRequestHeaders(r *sdk.Request) sdk.Action {
	u, err := url.Parse(r.Path())
	if err != nil {
		return r.Respond(400, []byte(err.Error()), nil)
	}
	q := u.Query()
	cluster := q.Get("cluster")
	req := &sdk.GRPCRequest{Service: q.Get("service"), Method: q.Get("method")}
	switch u.Path {
	case "/unary":
		return unary(r, cluster, req, q)
	case "/stream":
		return stream(r, cluster, req, q)
	case "/cancel":
		return cancel(r, cluster, req)
	case "/background":
		var err error
		sdk.InRootContext(func() {
			var s *sdk.GRPCStream
			s, err = sdk.OpenGRPCStream(cluster, req, sdk.GRPCStreamHandler{})
			if err == nil {
				err = s.Send([]byte("hello"), false)
			}
		})
		if err != nil {
			return r.Respond(200, []byte("refused "+err.Error()), nil)
		}
		return r.Respond(200, []byte("opened"), nil)
	}
	return r.Respond(404, nil, nil)
}

func unary(r *sdk.Request, cluster string, req *sdk.GRPCRequest, q url.Values) sdk.Action {
	ms, _ := strconv.Atoi(q.Get("timeout"))
	msg := healthCheckRequest(q.Get("svc"))
	_, err := sdk.CallGRPC(cluster, req, msg, time.Duration(ms)*time.Millisecond, func(resp []byte, err error) {
		var st *sdk.GRPCStatusError
		switch {
		case errors.As(err, &st):
			r.Respond(200, []byte("status "+strconv.Itoa(int(st.Code))+" "+st.Message), nil)
		case err != nil:
			r.Respond(500, []byte(err.Error()), nil)
		default:
			r.Respond(200, []byte("ok "+hex.EncodeToString(resp)), nil)
		}
	})
	if err != nil {
		return r.Respond(200, []byte("refused "+err.Error()), nil)
	}
	return sdk.Pause
}

// healthCheckRequest encodes grpc.health.v1.HealthCheckRequest{service}.
func healthCheckRequest(service string) []byte {
	if service == "" {
		return nil
	}
	b := []byte{0x0a, byte(len(service))}
	return append(b, service...)
}

func stream(r *sdk.Request, cluster string, req *sdk.GRPCRequest, q url.Values) sdk.Action {
	n, _ := strconv.Atoi(q.Get("n"))
	req.Metadata = sdk.Fields{{"x-token", "abc"}}
	var log []string
	s, err := sdk.OpenGRPCStream(cluster, req, sdk.GRPCStreamHandler{
		InitialMetadata: func(md sdk.Fields) {
			log = append(log, "initial x-hello="+md.Get("x-hello")+" x-token-seen="+md.Get("x-token-seen"))
		},
		Message: func(msg []byte) { log = append(log, "message "+string(msg)) },
		TrailingMetadata: func(md sdk.Fields) {
			log = append(log, "trailing x-count="+md.Get("x-count"))
		},
		Close: func(err error) {
			if err != nil {
				log = append(log, "close "+err.Error())
			} else {
				log = append(log, "close ok")
			}
			r.Respond(200, []byte(strings.Join(log, "\n")), nil)
		},
	})
	if err != nil {
		return r.Respond(200, []byte("refused "+err.Error()), nil)
	}
	for i := 1; i <= n; i++ {
		if err := s.Send([]byte("m"+strconv.Itoa(i)), i == n); err != nil {
			return r.Respond(500, []byte(err.Error()), nil)
		}
	}
	if n == 0 {
		s.CloseSend()
	}
	return sdk.Pause
}

func cancel(r *sdk.Request, cluster string, req *sdk.GRPCRequest) sdk.Action {
	var s *sdk.GRPCStream
	s, err := sdk.OpenGRPCStream(cluster, req, sdk.GRPCStreamHandler{
		// The upstream has the stream once its headers are here.
		InitialMetadata: func(sdk.Fields) {
			if err := s.Cancel(); err != nil {
				r.Respond(500, []byte(err.Error()), nil)
				return
			}
			err := s.Send([]byte("after"), false)
			r.Respond(200, []byte("cancelled "+errString(err)), nil)
		},
		Close: func(error) { sdk.LogErrorf("a cancelled stream was closed") },
	})
	if err != nil {
		return r.Respond(200, []byte("refused "+err.Error()), nil)
	}
	if err := s.Send([]byte("first"), false); err != nil {
		return r.Respond(500, []byte(err.Error()), nil)
	}
	return sdk.Pause
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
