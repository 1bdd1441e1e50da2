package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// upLockFile is the file in up's state folder that a running `up` holds
// locked, and in which it records its pid and addresses.
const upLockFile = "up.pid"

// upInstance is what a running `up` records about itself.
type upInstance struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Proxy   string    `json:"proxy,omitempty"`
	Admin   string    `json:"admin,omitempty"`
	API     string    `json:"api,omitempty"`
	Etcd    string    `json:"etcd,omitempty"`
}

// upLock is the lock a running `up` holds on its state folder. The kernel
// releases it when the process ends, however it ends, so a file left
// behind by a killed process never blocks the next start.
type upLock struct {
	f    *os.File
	path string
	info upInstance
}

// errUpRunning says that another `up` holds the state folder.
type errUpRunning struct {
	dir  string
	info upInstance // zero when the holder had not written it yet
}

func (e *errUpRunning) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "another 'wasmgate up' is running in %s", e.dir)
	if e.info.PID > 0 {
		fmt.Fprintf(&b, " (pid %d, started %s)", e.info.PID, e.info.Started.Local().Format("15:04:05"))
	}
	var addrs []string
	for _, a := range [][2]string{{"proxy", e.info.Proxy}, {"admin", e.info.Admin}, {"control plane", e.info.API}, {"etcd", e.info.Etcd}} {
		if a[1] != "" {
			addrs = append(addrs, a[0]+" "+a[1])
		}
	}
	if len(addrs) > 0 {
		fmt.Fprintf(&b, ":\n  %s", strings.Join(addrs, ", "))
	}
	b.WriteString("\nStop it (Ctrl-C in its terminal")
	if e.info.PID > 0 {
		fmt.Fprintf(&b, ", or kill %d", e.info.PID)
	}
	b.WriteString("), or start another one with its own folder and ports:\n  wasmgate up --dir OTHER --listen 127.0.0.1:0 --admin 127.0.0.1:0 --api 127.0.0.1:0 --etcd 127.0.0.1:0")
	return b.String()
}

// lockUp takes the state folder's lock, or fails at once with
// *errUpRunning naming the instance that holds it.
func lockUp(dir string) (*upLock, error) {
	path := filepath.Join(dir, upLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			e := &errUpRunning{dir: dir}
			if b, rerr := os.ReadFile(path); rerr == nil {
				_ = json.Unmarshal(b, &e.info)
			}
			return nil, e
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	l := &upLock{f: f, path: path, info: upInstance{PID: os.Getpid(), Started: time.Now()}}
	if err := l.write(); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// record adds the instance's addresses to the lock file.
func (l *upLock) record(proxy, admin, api, etcd string) error {
	l.info.Proxy, l.info.Admin, l.info.API, l.info.Etcd = proxy, admin, api, etcd
	return l.write()
}

func (l *upLock) write() error {
	b, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("writing %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("writing %s: %w", l.path, err)
	}
	return nil
}

// release removes the lock file and lets the lock go.
func (l *upLock) release() {
	_ = os.Remove(l.path)
	_ = l.f.Close()
}
