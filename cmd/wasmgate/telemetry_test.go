package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// TestPluginFailedEvent: the Wasm host's log line of a failed instance
// becomes a plugin_failed event whose attributes are the line's fields.
func TestPluginFailedEvent(t *testing.T) {
	var out bytes.Buffer
	pipe, err := telemetry.New(&config.Telemetry{Sinks: []config.TelemetrySink{{Name: "out", Type: "stdout"}}, Event: []string{"out"}},
		telemetry.WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	tel := &proxyTelemetry{pipe: pipe}
	log := tel.eventLogger(zap.NewNop()).With(zap.String("plugin", "authz"))
	log.Warn("something else")
	log.Warn(pluginFailed, zap.String("kind", "trap"), zap.Error(errors.New("unreachable")))
	tel.shutdown(5*time.Second, zap.NewNop())
	var rec struct {
		Kind, Type, Severity string
		Attrs                map[string]string
	}
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rec); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	if rec.Kind != "event" || rec.Type != "plugin_failed" || rec.Severity != "warning" ||
		rec.Attrs["plugin"] != "authz" || rec.Attrs["kind"] != "trap" || rec.Attrs["error"] != "unreachable" {
		t.Errorf("event %+v", rec)
	}
}
