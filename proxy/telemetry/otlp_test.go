package telemetry

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
)

// startOTLP serves a receiver over protocol on a loopback port and
// returns the endpoint to configure.
func startOTLP(t *testing.T, protocol string, rcv *otlpreceiver.Receiver) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if protocol == "grpc" {
		s := rcv.ServeGRPC(l)
		t.Cleanup(s.Stop)
		return l.Addr().String()
	}
	srv := &http.Server{Handler: rcv.HTTPHandler()}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}

// waitLogs waits until the receiver holds n log records.
func waitLogs(t *testing.T, rcv *otlpreceiver.Receiver, n int) []*logspb.LogRecord {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		ch := rcv.Changed()
		var out []*logspb.LogRecord
		for _, rl := range rcv.Logs() {
			for _, sl := range rl.ScopeLogs {
				out = append(out, sl.LogRecords...)
			}
		}
		if len(out) >= n {
			return out
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the receiver has %d log records, want %d", len(out), n)
		}
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = v.IntValue
		}
	}
	return m
}

// TestOTLPLogs sends one record of each kind over OTLP gRPC and HTTP to a
// real OTLP receiver and checks the log records it gets.
func TestOTLPLogs(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			rcv := otlpreceiver.New()
			endpoint := startOTLP(t, protocol, rcv)
			all := []string{"otel"}
			p, err := New(&config.Telemetry{
				Sinks:  []config.TelemetrySink{{Name: "otel", Type: "otlp", OTLP: &config.OTLP{Protocol: protocol, Endpoint: endpoint, Insecure: true}}},
				Access: all, Decision: all, Flow: all, Event: all,
			}, WithHostname("proxy-7"))
			if err != nil {
				t.Fatal(err)
			}
			for k := range numKinds {
				p.Emit(fillSample(p, k))
			}
			if err := p.Shutdown(ctx10s(t)); err != nil {
				t.Fatal(err)
			}
			recs := waitLogs(t, rcv, int(numKinds))
			res := attrs(rcv.Logs()[0].Resource.Attributes)
			if res["service.name"] != "wasmgate" || res["host.name"] != "proxy-7" {
				t.Errorf("resource %v", res)
			}
			byKind := map[string]*logspb.LogRecord{}
			for _, r := range recs {
				byKind[r.EventName] = r
			}
			acc := byKind["wasmgate.access"]
			if acc == nil {
				t.Fatalf("no access record among %v", recs)
			}
			a := attrs(acc.Attributes)
			if a["http.request.method"] != "GET" || a["http.response.status_code"] != int64(503) || a["wasmgate.route"] != "cart" {
				t.Errorf("access attributes %v", a)
			}
			if got := hex.EncodeToString(acc.TraceId); got != "0af7651916cd43dd8448eb211c80319c" {
				t.Errorf("access trace id %q", got)
			}
			if acc.SeverityText != "WARN" || acc.TimeUnixNano != uint64(sampleTime.UnixNano()) {
				t.Errorf("access severity %q time %d", acc.SeverityText, acc.TimeUnixNano)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(acc.Body.GetStringValue()), &body); err != nil || body["request_id"] != "req-1" {
				t.Errorf("access body %q: %v", acc.Body.GetStringValue(), err)
			}
			dec := byKind["wasmgate.decision"]
			if d := attrs(dec.GetAttributes()); d["wasmgate.verdict"] != "deny" || d["wasmgate.rule"] != "deny-all" {
				t.Errorf("decision attributes %v", d)
			}
			if ev := byKind["wasmgate.event"]; ev == nil || ev.SeverityText != "ERROR" {
				t.Errorf("event record %v", ev)
			}
			if byKind["wasmgate.flow"] == nil {
				t.Error("no flow record")
			}
		})
	}
}

// TestOTLPReconnect: records sent while the receiver fails are dropped
// and counted as send_failed; once it recovers, the sink delivers again.
func TestOTLPReconnect(t *testing.T) {
	rcv := otlpreceiver.New()
	var failing atomic.Bool
	failing.Store(true)
	rcv.Fail = func() error {
		if failing.Load() {
			return errors.New("receiver down")
		}
		return nil
	}
	endpoint := startOTLP(t, "http", rcv)
	p, err := New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "otel", Type: "otlp", OTLP: &config.OTLP{Protocol: "http", Endpoint: endpoint, Insecure: true}}},
		Event: []string{"otel"},
	}, WithBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(ctx10s(t))
	s := p.tab.Load().sinks[0]
	p.Emit(fillSample(p, KindEvent))
	deadline := time.Now().Add(10 * time.Second)
	for s.dropped[KindEvent][dropSendFailed].Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the failed export was not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	failing.Store(false)
	for len(rcv.Logs()) == 0 {
		p.Emit(fillSample(p, KindEvent))
		if time.Now().After(deadline) {
			t.Fatal("the sink did not deliver after the receiver recovered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.errors.Load() == 0 {
		t.Error("sink errors not counted")
	}
}
