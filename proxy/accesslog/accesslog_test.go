package accesslog_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/proxy/accesslog"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

func fill(e *accesslog.Entry, i int) {
	e.Start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e.Duration = 1500 * time.Microsecond
	e.RequestID = append(e.RequestID, "id-"...)
	e.RequestID = append(e.RequestID, byte('0'+i%10))
	e.Method = append(e.Method, "GET"...)
	e.Path = append(e.Path, "/a\"b\\c\n"...)
	e.Status = 200
	e.Flags = filter.FlagUpstreamTimeout | filter.FlagNoRoute
	e.UserAgent = append(e.UserAgent, "ua\x01"...)
}

func TestFileLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	fields := []string{"start_time", "request_id", "method", "path", "status", "response_flags", "duration_ms", "user_agent", "bytes_sent"}
	l, err := accesslog.Open(path, fields, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := 0; i < n; i++ {
		e := l.Acquire()
		fill(e, i)
		l.Log(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON (%v): %s", lines, err, sc.Bytes())
		}
		if len(m) != len(fields) {
			t.Errorf("line %d has fields %v, want %v", lines, m, fields)
		}
		want := map[string]any{
			"start_time": "2026-01-02T03:04:05Z", "method": "GET", "path": "/a\"b\\c\n", "status": float64(200),
			"response_flags": "NR,UT", "duration_ms": 1.5, "user_agent": "ua\x01", "bytes_sent": float64(0),
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("line %d: %s = %#v, want %#v", lines, k, m[k], v)
			}
		}
	}
	if lines != n {
		t.Errorf("%d lines, want %d", lines, n)
	}
}

// TestSlowWriterNeverBlocks logs into a writer that does not write: Log
// returns at once and drops what does not fit in the queue, counting it.
func TestSlowWriterNeverBlocks(t *testing.T) {
	pr, pw := io.Pipe()
	var dropped atomic.Int64
	l, err := accesslog.New(pw, pw, []string{"request_id"}, 8, func() { dropped.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	start := time.Now()
	for i := 0; i < n; i++ {
		e := l.Acquire()
		fill(e, i)
		l.Log(e)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d Log calls into a stuck writer took %v", n, took)
	}
	// The writer takes entries off the queue until its 64 KiB buffer
	// fills and the pipe blocks it (how many before Log's loop ends
	// depends on the scheduler); every line is at least 18 bytes
	// ({"request_id":""} and a newline). The rest is dropped.
	if d, taken := dropped.Load(), int64(64<<10/18+8+1); d < n-taken {
		t.Errorf("dropped %d of %d entries with a queue of 8 and a stuck writer buffering at most %d", d, n, taken)
	}
	// Unstick the writer: what was queued is written.
	var wg sync.WaitGroup
	wg.Add(1)
	var got int
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			got++
		}
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if int64(got)+dropped.Load() != n {
		t.Errorf("written %d + dropped %d != logged %d", got, dropped.Load(), n)
	}
}

// TestLogAfterClose logs from requests that outlive their logger, as
// requests of an old snapshot do after a reload or a drain times out.
func TestLogAfterClose(t *testing.T) {
	l, err := accesslog.Open(filepath.Join(t.TempDir(), "a.log"), []string{"status"}, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				e := l.Acquire()
				e.Status = 200
				l.Log(e)
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	e := l.Acquire()
	l.Log(e)
	if err := l.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

func TestUnknownField(t *testing.T) {
	if _, err := accesslog.New(io.Discard, nil, []string{"status", "no_such_field"}, 0, nil); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}
