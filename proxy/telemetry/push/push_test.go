package push

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/otlpreceiver"
)

// TestPush pushes a registry's counter over OTLP gRPC and HTTP to a real
// receiver and finds it there with its value.
func TestPush(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			rcv := otlpreceiver.New()
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			endpoint := l.Addr().String()
			if protocol == "grpc" {
				s := rcv.ServeGRPC(l)
				defer s.Stop()
			} else {
				srv := &http.Server{Handler: rcv.HTTPHandler()}
				go func() { _ = srv.Serve(l) }()
				defer srv.Close()
				endpoint = "http://" + endpoint
			}
			reg := prometheus.NewRegistry()
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmgate_test_pushed_total", Help: "test"})
			reg.MustRegister(c)
			c.Add(7)
			p, err := Start(&config.MetricsPush{OTLP: config.OTLP{Protocol: protocol, Endpoint: endpoint, Insecure: true}, Interval: config.Duration(time.Hour)}, reg, "proxy-7")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			var found float64
			for _, rm := range rcv.Metrics() {
				for _, sm := range rm.ScopeMetrics {
					for _, m := range sm.Metrics {
						if m.Name == "wasmgate_test_pushed_total" {
							for _, dp := range m.GetSum().GetDataPoints() {
								found = dp.GetAsDouble()
							}
						}
					}
				}
			}
			if found != 7 {
				t.Errorf("the receiver has wasmgate_test_pushed_total = %v, want 7", found)
			}
		})
	}
}
