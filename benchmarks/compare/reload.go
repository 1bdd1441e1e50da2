package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// rewriter replaces a proxy's configuration file, every interval, by each
// of its variants in turn, atomically (write a temporary file in the same
// directory, then rename it over the configuration), as a deployment tool
// would.
type rewriter struct {
	path     string   // the configuration file the proxy watches
	variants [][]byte // contents written in turn
	interval time.Duration

	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	writes int
	err    error
}

// start begins rewriting; call finish to end it.
func (w *rewriter) start() {
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(w.interval)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			if err := w.write(w.variants[i%len(w.variants)]); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
				return
			}
			w.mu.Lock()
			w.writes++
			w.mu.Unlock()
		}
	}()
}

func (w *rewriter) write(content []byte) error {
	tmp := filepath.Join(filepath.Dir(w.path), "."+filepath.Base(w.path)+".tmp")
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, w.path)
}

// finish stops rewriting and returns how many files were written.
func (w *rewriter) finish() (int, error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.writes, fmt.Errorf("rewriting %s: %w", w.path, w.err)
	}
	return w.writes, nil
}

// reloadMarker is what wasmgate logs for every configuration it applies.
var reloadMarker = []byte("configuration reloaded")

// countReloads returns how many configurations the proxy logged as applied
// so far.
func countReloads(logPath string) int {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, reloadMarker)
}

// rewriteDuring runs fn while rewriting the file; see rewriter.
func rewriteDuring(ctx context.Context, w *rewriter, fn func(context.Context) error) (int, error) {
	w.start()
	err := fn(ctx)
	n, werr := w.finish()
	if err == nil {
		err = werr
	}
	return n, err
}
