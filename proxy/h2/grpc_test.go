package h2_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/wasmgate/wasmgate/proxy/internal/prototest"
)

// testService echoes payloads and sets a trailer on every call. It tells
// which upstream answered and whether that upstream saw the proxy's
// client certificate.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (s *testService) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-upstream", s.name, "x-peer", peerName(ctx)))
	if st := in.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: in.GetPayload(), Username: s.name}, nil
}

func (s *testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	n := 0
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			stream.SetTrailer(metadata.Pairs("x-messages", fmt.Sprint(n)))
			return nil
		}
		if err != nil {
			return err
		}
		n++
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

func peerName(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		return ti.State.PeerCertificates[0].Subject.CommonName
	}
	return "anonymous"
}

func grpcUpstream(t *testing.T, name string, creds credentials.TransportCredentials) string {
	t.Helper()
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(gs, &testService{name: name})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

const grpcConfig = `
admin: {address: "off"}
listeners:
- name: tls
  address: "127.0.0.1:0"
  tls:
    certificates: [{cert_file: "{{cert}}", key_file: "{{key}}"}]
- name: plain
  address: "127.0.0.1:0"
  http2: {h2c: true}
clusters:
- name: h2c
  protocol: http2
  endpoints: [{address: "{{h2c}}"}]
- name: h2tls
  protocol: http2
  tls:
    sni: upstream.test
    ca_file: "{{ca}}"
    cert_file: "{{ucert}}"
    key_file: "{{ukey}}"
  endpoints: [{address: "{{h2tls}}"}]
plugins:
- name: identity
  file: identity.wasm
virtual_hosts:
- name: all
  domains: ["*"]
  filters: [{plugin: identity}]
  routes:
  - match:
      prefix: /
      headers: [{name: x-upstream, exact: tls}]
    cluster: h2tls
  - cluster: h2c
`

func TestGRPC(t *testing.T) {
	p := prototest.NewPKI(t)
	dir := t.TempDir()
	ucert, ukey := p.UpstreamClient.Write(t, dir, "upstream-client")
	upConf := &tls.Config{
		Certificates: []tls.Certificate{p.Upstream.TLS},
		ClientCAs:    p.ClientCA.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	srv := prototest.Start(t, grpcConfig, map[string]string{
		"cert": p.CertFile, "key": p.KeyFile, "ca": p.CAFile, "ucert": ucert, "ukey": ukey,
		"h2c":   grpcUpstream(t, "h2c", nil),
		"h2tls": grpcUpstream(t, "h2tls", credentials.NewTLS(upConf)),
	}, &prototest.IdentityPlugins{})

	downstreams := map[string]*grpc.ClientConn{}
	dial := func(name, addr string, creds credentials.TransportCredentials) {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		downstreams[name] = cc
	}
	dial("h2c", srv.Addr("plain").String(), insecure.NewCredentials())
	dial("tls", srv.Addr("tls").String(), credentials.NewTLS(p.ClientTLS()))

	for _, down := range []string{"h2c", "tls"} {
		for _, up := range []string{"h2c", "h2tls"} {
			t.Run(down+" to "+up, func(t *testing.T) {
				client := testgrpc.NewTestServiceClient(downstreams[down])
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if up == "h2tls" {
					ctx = metadata.AppendToOutgoingContext(ctx, "x-upstream", "tls")
				}
				wantPeer := "anonymous"
				if up == "h2tls" {
					wantPeer = "proxy-client"
				}

				// Unary, with trailers.
				var trailer metadata.MD
				resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.GetPayload().GetBody()) != "ping" || resp.GetUsername() != up {
					t.Errorf("response %v", resp)
				}
				if got := trailer.Get("x-upstream"); len(got) != 1 || got[0] != up {
					t.Errorf("trailer x-upstream %v, want %q", got, up)
				}
				if got := trailer.Get("x-peer"); len(got) != 1 || got[0] != wantPeer {
					t.Errorf("upstream saw peer %v, want %q", got, wantPeer)
				}

				// An error status travels in the trailers.
				_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.PermissionDenied), Message: "no way"}}, grpc.Trailer(&trailer))
				if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != "no way" {
					t.Errorf("error %v, want PermissionDenied \"no way\"", err)
				}

				// Bidirectional streaming: each message comes back before
				// the next is sent, so nothing is held whole.
				stream, err := client.FullDuplexCall(ctx)
				if err != nil {
					t.Fatal(err)
				}
				const n = 50
				for i := range n {
					body := []byte(strings.Repeat(fmt.Sprint(i%10), 1+i*100))
					if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
						t.Fatal(err)
					}
					got, err := stream.Recv()
					if err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					if string(got.GetPayload().GetBody()) != string(body) {
						t.Fatalf("message %d: got %d bytes back, want %d", i, len(got.GetPayload().GetBody()), len(body))
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := stream.Recv(); err != io.EOF {
					t.Fatalf("end of stream: %v", err)
				}
				if got := stream.Trailer().Get("x-messages"); len(got) != 1 || got[0] != fmt.Sprint(n) {
					t.Errorf("trailer x-messages %v, want %d", got, n)
				}
			})
		}
	}
}
