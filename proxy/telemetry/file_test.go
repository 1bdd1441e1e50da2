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

// TestFileRotation writes more than the size limit to a file sink and
// checks that lumberjack rotated and gzipped the file, and that every
// line of the live file is one JSON record.
func TestFileRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.jsonl")
	p, err := New(&config.Telemetry{
		Sinks: []config.TelemetrySink{{Name: "file", Type: "file", QueueRecords: 1 << 16,
			File: &config.FileSink{Path: path, MaxSizeMB: 1, Compress: true, MaxAge: config.Duration(48 * time.Hour)}}},
		Access: []string{"file"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// About 600 bytes a record: 4000 records pass 1 MiB.
	for range 4000 {
		r := fillSample(p, KindAccess)
		r.Access.UserAgent = append(r.Access.UserAgent, strings.Repeat("x", 300)...)
		p.Emit(r)
	}
	if err := p.Shutdown(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	if d := p.Dropped(); d != 0 {
		t.Fatalf("%d records dropped", d)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		// lumberjack gzips in the background and removes the plain
		// rotated file when the archive is complete.
		gz, _ := filepath.Glob(filepath.Join(dir, "access-*.jsonl.gz"))
		plain, _ := filepath.Glob(filepath.Join(dir, "access-*.jsonl"))
		if len(gz) > 0 && len(plain) == 0 {
			break
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(dir)
			t.Fatalf("no compressed rotated file; the folder has %v", entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["kind"] != "access" {
			t.Fatalf("line %d %q: %v", lines, sc.Text(), err)
		}
		lines++
	}
	if lines == 0 || lines >= 4000 {
		t.Errorf("the live file has %d lines, want some but not all", lines)
	}
}

// TestStdoutSink checks the stdout sink and the JSON of each kind.
func TestStdoutSink(t *testing.T) {
	var out bytes.Buffer
	all := []string{"out"}
	p, err := New(&config.Telemetry{
		Sinks:  []config.TelemetrySink{{Name: "out", Type: "stdout"}},
		Access: all, Decision: all, Flow: all, Event: all,
	}, WithStdout(&out))
	if err != nil {
		t.Fatal(err)
	}
	for k := range numKinds {
		p.Emit(fillSample(p, k))
	}
	if err := p.Shutdown(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != int(numKinds) {
		t.Fatalf("got %d lines: %q", len(lines), out.String())
	}
	for i, l := range lines {
		checkJSONBody(t, Kind(i).String(), l)
	}
}

// TestDisabledKinds: a kind with no sink is released at once.
func TestDisabledKinds(t *testing.T) {
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled(KindAccess) {
		t.Error("a pipeline without sinks says access is enabled")
	}
	p.Emit(fillSample(p, KindAccess))
	if err := p.Shutdown(ctx10s(t)); err != nil {
		t.Fatal(err)
	}
}

func FuzzJSONString(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add([]byte("\"quoted\\\"\n\t\x00\xff\xfe€"))
	f.Fuzz(func(t *testing.T, s []byte) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes as invalid JSON %q: %v", s, b, err)
		}
		if want := string(bytes.ToValidUTF8(s, []byte("\uFFFD"))); got != want && strings.ToValidUTF8(string(s), "\uFFFD") == want {
			// ToValidUTF8 folds a run of bad bytes into one U+FFFD; the
			// encoder writes one per byte, as encoding/json does.
			if strings.ReplaceAll(got, "\uFFFD", "") != strings.ReplaceAll(want, "\uFFFD", "") {
				t.Fatalf("%q decodes to %q, want %q", s, got, want)
			}
		}
	})
}
