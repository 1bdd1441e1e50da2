// Package push sends the proxy's Prometheus metrics to an OTLP receiver
// at a fixed interval, besides the pull endpoint: the OpenTelemetry
// Prometheus bridge reads the same registry the endpoint serves, so both
// carry the same series.
package push

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promBridge "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc/credentials"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// Pusher pushes metrics until Shutdown.
type Pusher struct{ mp *sdkmetric.MeterProvider }

// Start pushes what g gathers every c.Interval (30s when zero) to the
// configured receiver. hostname names this proxy in the resource.
func Start(c *config.MetricsPush, g prometheus.Gatherer, hostname string) (*Pusher, error) {
	exp, err := newExporter(&c.OTLP)
	if err != nil {
		return nil, fmt.Errorf("telemetry.metrics.otlp: %w", err)
	}
	reader := sdkmetric.NewPeriodicReader(exp,
		sdkmetric.WithInterval(c.Interval.Or(30*time.Second)),
		sdkmetric.WithProducer(promBridge.NewMetricProducer(promBridge.WithGatherer(g))))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(telemetry.Resource("", "", hostname)))
	return &Pusher{mp: mp}, nil
}

// Flush pushes now.
func (p *Pusher) Flush(ctx context.Context) error { return p.mp.ForceFlush(ctx) }

// Shutdown pushes a last time and stops.
func (p *Pusher) Shutdown(ctx context.Context) error { return p.mp.Shutdown(ctx) }

func newExporter(c *config.OTLP) (sdkmetric.Exporter, error) {
	tc, err := telemetry.OTLPTLS(c)
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout.Or(10 * time.Second)
	ctx := context.Background()
	switch c.Protocol {
	case "grpc":
		opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(c.Endpoint), otlpmetricgrpc.WithTimeout(timeout)}
		if tc == nil {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		} else {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlpmetricgrpc.WithHeaders(c.Headers))
		}
		return otlpmetricgrpc.New(ctx, opts...)
	case "http":
		opts := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpointURL(telemetry.OTLPURL(c.Endpoint, "/v1/metrics")), otlpmetrichttp.WithTimeout(timeout),
		}
		if tc == nil {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		} else {
			opts = append(opts, otlpmetrichttp.WithTLSClientConfig(tc))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlpmetrichttp.WithHeaders(c.Headers))
		}
		return otlpmetrichttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("unknown protocol %q", c.Protocol)
}
