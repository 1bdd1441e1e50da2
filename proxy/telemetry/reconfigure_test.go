package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/config"
)

// TestReconfigure changes a running pipeline's sinks and kinds. The sink
// "out" is unchanged: it is a pipe that nobody reads during the change,
// so records wait in its queue, and every one of them arrives once the
// pipe is read. The file sink "old" is removed: what it held is written
// before it closes. "new" is added for access records, and a bad change
// (a CA file that does not exist) is refused with its field path while
// the running routes stay.
func TestReconfigure(t *testing.T) {
	dir := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	oldFile, newFile := filepath.Join(dir, "old.jsonl"), filepath.Join(dir, "new.jsonl")
	out := config.TelemetrySink{Name: "out", Type: "stdout", QueueRecords: 8192}
	p, err := New(&config.Telemetry{
		Sinks:  []config.TelemetrySink{out, {Name: "old", Type: "file", File: &config.FileSink{Path: oldFile}}},
		Access: []string{"out", "old"}, Event: []string{"out"},
	}, WithStdout(pw), WithRetireTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Far more than the pipe's buffer: the sink blocks in its write and
	// the rest waits in its queue.
	const before = 3000
	for range before {
		p.Emit(fillSample(p, KindAccess))
	}
	kept := p.tab.Load().sinks[0]
	waitUntil(t, "the pipe to fill", func() bool { return len(kept.queue) > 0 && len(kept.queue) < before })

	bad := &config.Telemetry{
		Sinks: []config.TelemetrySink{out, {Name: "siem", Type: "syslog",
			Syslog: &config.SyslogSink{Network: "tls", Address: "127.0.0.1:6514", TLS: &config.ClientTLS{CAFile: filepath.Join(dir, "missing.pem")}}}},
		Access: []string{"out", "siem"},
	}
	if err := p.Reconfigure(bad); err == nil || !strings.Contains(err.Error(), "telemetry.sinks[1] (siem): tls.ca_file") {
		t.Fatalf("bad change: %v", err)
	}
	if !p.Enabled(KindEvent) || p.tab.Load().routes[KindAccess][1].name != "old" {
		t.Fatal("a refused change altered the routes")
	}

	if err := p.Reconfigure(&config.Telemetry{
		Sinks:  []config.TelemetrySink{out, {Name: "new", Type: "file", File: &config.FileSink{Path: newFile}}},
		Access: []string{"out", "new"}, Flow: []string{"new"},
	}); err != nil {
		t.Fatal(err)
	}
	if p.tab.Load().sinks[0] != kept {
		t.Fatal("the unchanged sink was rebuilt")
	}
	if p.Enabled(KindEvent) || !p.Enabled(KindFlow) {
		t.Error("kinds not rerouted")
	}
	const after = 10
	for range after {
		p.Emit(fillSample(p, KindAccess))
	}
	// Now read the pipe: every record queued before the change arrives.
	lines := make(chan int)
	go func() {
		n := 0
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			n++
		}
		lines <- n
	}()
	if err := p.Shutdown(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if n := <-lines; n != before+after {
		t.Errorf("the kept sink wrote %d records, want %d", n, before+after)
	}
	if d := p.Dropped(); d != 0 {
		t.Errorf("%d records dropped", d)
	}
	if n := countRecords(t, oldFile); n != before {
		t.Errorf("the removed sink wrote %d records, want %d", n, before)
	}
	if n := countRecords(t, newFile); n != after {
		t.Errorf("the added sink wrote %d records, want %d", n, after)
	}
}

func countRecords(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range bytes.Lines(data) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		n++
	}
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
