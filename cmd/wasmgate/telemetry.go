package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// proxyTelemetry is the telemetry of a running proxy: the record
// pipeline and the RED metrics (when it starts with a telemetry
// section). A reload changes the pipeline's sinks and kinds and the RED
// metrics' cap; the proxy itself runs the span exporter and the metric
// push, rebuilt when their settings change (the proxy's Apply does all of
// it).
type proxyTelemetry struct {
	pipe    *telemetry.Pipeline
	red     *telemetry.RED
	sampler *telemetry.TrafficSampler
}

// startTelemetry builds the parts c configures (nil configures none).
func startTelemetry(c *config.Telemetry, log *zap.Logger) (*proxyTelemetry, error) {
	pipe, err := telemetry.New(c, telemetry.WithLogger(log.Named("telemetry")))
	if err != nil {
		return nil, err
	}
	t := &proxyTelemetry{pipe: pipe}
	if c != nil {
		t.red = telemetry.NewRED(c.MaxSeries)
	}
	return t, nil
}

// attach registers the telemetry metrics on srv's registry.
func (t *proxyTelemetry) attach(srv *proxy.Server) {
	reg := srv.Metrics().Registry
	reg.MustRegister(t.pipe.Collector(), telemetry.CertificateCollector(func() *config.Config {
		if s := srv.Snapshot(); s != nil {
			return s.Config
		}
		return nil
	}))
	if t.red != nil {
		reg.MustRegister(t.red.Collectors()...)
	}
	t.sampler = telemetry.NewTrafficSampler(reg)
}

// event records one of the proxy's own events.
func (t *proxyTelemetry) event(typ string, sev telemetry.Severity, msg string, attrs ...telemetry.Attr) {
	if t == nil || !t.pipe.Enabled(telemetry.KindEvent) {
		return
	}
	r := t.pipe.Acquire(telemetry.KindEvent)
	r.Time = time.Now()
	r.Event.Type, r.Event.Severity, r.Event.Message = typ, sev, msg
	r.Event.Attrs = append(r.Event.Attrs, attrs...)
	t.pipe.Emit(r)
}

// traffic is the heartbeat's last minute.
func (t *proxyTelemetry) traffic() registry.Traffic {
	if t == nil || t.sampler == nil {
		return registry.Traffic{}
	}
	s := t.sampler.Sample()
	return registry.Traffic{RequestRate: s.RequestRate, Ratio5xx: s.Ratio5xx, TelemetryDropped: s.Dropped}
}

// shutdown flushes what the parts hold within timeout.
func (t *proxyTelemetry) shutdown(timeout time.Duration, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := t.pipe.Shutdown(ctx); err != nil {
		log.Warn("flushing telemetry sinks", zap.Error(err))
	}
	if n := t.pipe.Dropped(); n > 0 {
		log.Warn("telemetry records were dropped", zap.Uint64("dropped", n))
	}
}

// revisionAttr names the configuration version of an event.
func revisionAttr(v string) telemetry.Attr { return telemetry.Attr{Key: "version", Value: v} }

// pluginFailed is the log message of a failed Wasm plugin instance.
const pluginFailed = "wasm plugin instance failed; replacing it"

// eventLogger returns log teed into plugin_failed events: the Wasm host
// says a plugin instance failed only in its log, so the line becomes an
// event record too, its fields the event's attributes.
func (t *proxyTelemetry) eventLogger(log *zap.Logger) *zap.Logger {
	if t == nil || !t.pipe.Enabled(telemetry.KindEvent) {
		return log
	}
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, &eventCore{t: t})
	}))
}

// eventCore turns the log entries of known events into event records.
type eventCore struct {
	t      *proxyTelemetry
	fields []zapcore.Field
}

func (c *eventCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *eventCore) With(fs []zapcore.Field) zapcore.Core {
	return &eventCore{t: c.t, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c *eventCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == pluginFailed {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *eventCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fs...) {
		f.AddTo(enc)
	}
	attrs := make([]telemetry.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, telemetry.Attr{Key: k, Value: fmt.Sprint(v)})
	}
	slices.SortFunc(attrs, func(a, b telemetry.Attr) int { return strings.Compare(a.Key, b.Key) })
	c.t.event("plugin_failed", telemetry.Warning, e.Message, attrs...)
	return nil
}

func (c *eventCore) Sync() error { return nil }
