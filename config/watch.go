package config

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchFile calls changed whenever the file at path may have changed, a
// burst of events (an editor's write-rename-chmod) becoming one call after
// debounce. It watches the file's directory, so a file replaced by rename
// is followed. It returns when ctx is done.
func WatchFile(ctx context.Context, path string, debounce time.Duration, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	defer w.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	// A symlinked file (as Kubernetes mounts ConfigMaps) changes when its
	// link target does; follow the resolved name too.
	target, _ := filepath.EvalSymlinks(abs)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Name != abs && ev.Name != target && filepath.Base(ev.Name) != "..data" {
				continue
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			return fmt.Errorf("watching %s: %w", path, err)
		case <-timer.C:
			changed()
		}
	}
}
